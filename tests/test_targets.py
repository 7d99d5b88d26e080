"""Per-image targets (issue 13 §4) through the session's real server: one
Explain with a target per image gives each image the map a single-target
request gives it, number for number, in a unary Explain, in a merged
ExplainStream batch and under dynamic batching; and labels are never
resolved silently to one of several classes."""
from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import torch

from netscope.client import NetscopeError
from netscope.server.errors import InvalidArgument
from netscope.server.explain.targets import Targets, class_index
from netscope.v1 import inspector_pb2 as pb

from .test_batching import concurrently

NAMES = ("chelsea", "astronaut", "coffee", "rocket")
TARGETS = [3, "goldfish", 917, None]  # an index, a label (ImageNet class 1), an index, the top-1


def assert_same_maps(got, want):
    assert [(c.target, c.label) for c in got] == [(c.target, c.label) for c in want]
    for g, w in zip(got, want):
        scale = float(np.abs(w.heatmap).max()) or 1.0
        np.testing.assert_allclose(g.heatmap, w.heatmap, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(g.heatmap_upsampled, w.heatmap_upsampled, rtol=1e-4, atol=1e-5 * scale)
        assert g.score == pytest.approx(w.score, rel=1e-4, abs=1e-5)
        assert g.probability == pytest.approx(w.probability, rel=1e-4, abs=1e-7)


@pytest.fixture(scope="module")
def alone(client, photos):
    """Each photo explained in its own request for its own target (mnv3, grad_cam)."""
    return [client.explain("mnv3", photos[n], target=t)[0] for n, t in zip(NAMES, TARGETS)]


def test_one_request_explains_each_image_for_its_own_target(client, photos, alone):
    got = client.explain("mnv3", [photos[n] for n in NAMES], target=TARGETS)
    assert [c[0].target for c in got][:3] == [3, 1, 917] and got[1][0].label == "goldfish"
    for g, w in zip(got, alone):
        assert len(g) == 1
        assert_same_maps(g, w)


def test_a_top1_entry_is_that_images_top1(client, photos):
    top1 = [client.explain("mnv3", photos[n])[0][0].target for n in NAMES]  # `target` unset: the top-1
    got = client.explain("mnv3", [photos[n] for n in NAMES], target=[None] * len(NAMES))
    assert [c[0].target for c in got] == top1


def test_stream_items_with_their_own_targets_share_a_batch(client, photos, alone):
    items = [(n, photos[n], t) for n, t in zip(NAMES, TARGETS) if t is not None]
    items.append((NAMES[-1], photos[NAMES[-1]], None))  # no own target: the stream's (top-1)
    got = {r.id: r for r in client.explain_many(items, model="mnv3")}
    assert not [r.error for r in got.values() if r.error], [r.error for r in got.values()]
    assert max(r.timing.device_batch_size for r in got.values()) > 1  # merged into one device batch
    for n, want in zip(NAMES, alone):
        assert_same_maps(got[n].classes, want)


def test_stream_batch_keeps_each_items_target_and_error(client, photos, alone):
    items = [("a", photos["chelsea"], 3), ("bad", photos["astronaut"], 5000), ("c", photos["coffee"], 917)]
    got = {r.id: r for r in client.explain_many(items, model="mnv3")}
    assert got["bad"].error.code == grpc.StatusCode.INVALID_ARGUMENT and "5000" in got["bad"].error.message
    assert_same_maps(got["a"].classes, alone[0])
    assert_same_maps(got["c"].classes, alone[2])


@pytest.fixture(scope="module")
def batched(client):
    client.load_model("mnv3t", "mobilenet_v3_small", max_batch_size=8, max_delay_ms=400)
    yield "mnv3t"
    client.unload_model("mnv3t")


def test_dynamic_batch_keeps_each_requests_targets(client, batched, photos, alone):
    # Two images per call, each with its own target: the batch concatenates the calls' targets.
    calls = [[0, 1], [2, 3], [1, 2]]
    results, errors = concurrently(len(calls), lambda i: client.explain_timed(
        batched, [photos[NAMES[j]] for j in calls[i]], target=[TARGETS[j] for j in calls[i]]))
    assert not errors, errors
    assert max(t.device_batch_size for _, t in results) > 2  # the calls shared a device batch
    for (classes, _), idx in zip(results, calls):
        assert len(classes) == 2
        for got, j in zip(classes, idx):
            assert_same_maps(got, alone[j])


def test_target_and_targets_together_or_miscounted_are_invalid(client, photos):
    images = [photos["chelsea"], photos["coffee"]]
    with pytest.raises(NetscopeError) as err:
        client.explain("mnv3", images, target=[3, 4, 5])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "3 targets for 2 images" in err.value.message
    assert err.value.field_violations[0][0] == "targets"
    assert (err.value.metadata["targets"], err.value.metadata["images"]) == ("3", "2")

    req = pb.ExplainRequest(model="mnv3", target=pb.Target(index=1), targets=[pb.Target(index=2), pb.Target(index=3)])
    req.images.add().CopyFrom(pb.Image(encoded=_jpeg(photos["chelsea"])))
    req.images.add().CopyFrom(pb.Image(encoded=_jpeg(photos["coffee"])))
    with pytest.raises(NetscopeError) as err:
        client.call("Explain", req)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "not both" in err.value.message

    with pytest.raises(NetscopeError) as err:  # a per-image target is one class
        req = pb.ExplainRequest(model="mnv3", targets=[pb.Target(top_k=3)])
        req.images.add().CopyFrom(pb.Image(encoded=_jpeg(photos["chelsea"])))
        client.call("Explain", req)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.field_violations[0][0] == "targets[0].top_k"


def test_a_bad_label_names_its_image(client, photos):
    with pytest.raises(NetscopeError) as err:
        client.explain("mnv3", [photos["chelsea"], photos["coffee"]], target=[1, "goldfsh"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "goldfish" in err.value.message
    assert err.value.field_violations[0][0] == "targets[1].label"


def _jpeg(rgb):
    from .conftest import encode

    return encode(rgb)


# ---------------------------------------------------------------- ambiguous labels


CLASSES = ["Tiger Cat", "tiger cat", "crane", "lynx", "crane"]


def test_a_label_matching_several_classes_is_refused_listing_them():
    with pytest.raises(InvalidArgument) as err:
        class_index("TIGER CAT", CLASSES)
    assert "ambiguous" in str(err.value) and "0 'Tiger Cat'" in str(err.value)
    assert "1 'tiger cat'" in str(err.value)
    assert err.value.reason == "LABEL_AMBIGUOUS" and err.value.metadata["candidates"] == "0:Tiger Cat,1:tiger cat"
    with pytest.raises(InvalidArgument) as err:  # the same name twice (ImageNet's 'crane'): an index says which
        class_index("crane", CLASSES)
    assert err.value.metadata["candidates"] == "2:crane,4:crane"


def test_an_exact_match_wins_and_case_insensitive_still_works():
    assert class_index("tiger cat", CLASSES) == 1
    assert class_index("Tiger Cat", CLASSES) == 0
    assert class_index("LYNX", CLASSES) == 3
    t = Targets(["Tiger Cat", "LYNX", None, 1], 4, CLASSES)
    logits = torch.tensor([[0.0, 0, 0, 0, 9]] * 4)
    assert t.pick(logits)[:, 0].tolist() == [0, 3, 4, 1]


@pytest.fixture(scope="module")
def cats(client, store):
    """A checkpoint whose classes differ only by case."""
    from netscope.training.checkpoint import save_checkpoint
    from netscope.training.models import build_model

    torch.manual_seed(0)
    model = build_model("simple_cnn", 3, input_size=32)
    save_checkpoint(store / "tiger-cats.pt", arch="simple_cnn", num_classes=3, class_names=["Tiger Cat", "tiger cat", "lynx"],
                    model_state_dict=model.state_dict(), arch_kwargs={"input_size": 32},
                    preprocessing=dict(resize=0, crop=32, mean=[0.5] * 3, std=[0.25] * 3, interpolation="bilinear",
                                       channels=3))
    client.load_model("cats", "tiger-cats")
    yield "cats"
    client.unload_model("cats")


def test_ambiguous_label_through_the_server(client, cats, photos, run_cli, tmp_path):
    image = photos["chelsea"]
    with pytest.raises(NetscopeError) as err:
        client.explain(cats, image, target="TIGER CAT")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "ambiguous" in err.value.message
    assert err.value.metadata["candidates"] == "0:Tiger Cat,1:tiger cat"
    assert err.value.field_violations[0][0] == "target.label"
    assert client.explain(cats, image, target="tiger cat")[0][0].target == 1  # exact
    assert client.explain(cats, image, target="LYNX")[0][0].target == 2  # one case-insensitive match
    with pytest.raises(NetscopeError) as err:  # layer statistics match labels the same way
        client.layer_stats(cats, images=image, target="tiger CAT")
    assert "ambiguous" in err.value.message


# ---------------------------------------------------------------- netscope explain --target-from-folder


def test_explain_job_takes_each_images_class_from_its_folder(run_cli, client, store, tmp_path):
    from .jobs.helpers import save_tiny_checkpoint, shapes_folder

    save_tiny_checkpoint(store, "tiny-targets")
    client.load_model("tinyt", "tiny-targets")
    try:
        folder, ids = shapes_folder(tmp_path / "in", 24)  # IN/CLASS/image.png, as ImageFolder reads them
        (folder / "not-a-class").mkdir()
        (folder / "not-a-class" / "x.png").write_bytes((folder / ids[0]).read_bytes())
        out = tmp_path / "out"
        code, stdout, err = run_cli("explain", "--model", "tinyt", str(folder), "--out", str(out),
                                    "--target-from-folder", "--json")
        assert code == 3, err  # the image in a folder that names no class fails alone
        rows = {r["id"]: r for r in json.loads((out / "index.json").read_text())}
        bad = rows.pop("not-a-class/x.png")
        assert bad["status"] == "3:INVALID_ARGUMENT" and "not-a-class" in bad["error"]
        assert sorted(rows) == sorted(ids)
        classes = {r["id"].split("/")[0] for r in rows.values()}
        assert len(classes) > 1  # several classes in one job, each image for its own
        for item_id, row in rows.items():
            assert row["status"] == "ok" and row["label"] == item_id.split("/")[0], row
        item_id = ids[0]
        want = client.explain("tinyt", folder / item_id, target=item_id.split("/")[0])[0][0]
        assert float(rows[item_id]["score"]) == pytest.approx(want.score, rel=1e-5, abs=1e-6)

        (tmp_path / "loose.png").write_bytes((folder / ids[0]).read_bytes())  # in no class folder: a usage error
        code, _, err = run_cli("explain", "--model", "tinyt", str(tmp_path / "loose.png"), "--out",
                               str(tmp_path / "out2"), "--target-from-folder")
        assert code == 2 and "class folder" in err
    finally:
        client.unload_model("tinyt")
