"""Model lifecycle, model info, health and reflection through a real server."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from netscope.client import Client, NetscopeError
from netscope.server.models.registry import build_architecture

from .test_predict import expect


@pytest.fixture(autouse=True)
def still_serving(client):
    yield
    assert client.health() == "SERVING"


def test_list_models_shows_session_models_and_architectures(client):
    ids = {m.model: m for m in client.list_models()}
    assert {"r18", "mnv3"} <= set(ids)
    assert ids["r18"].arch == "resnet18" and ids["r18"].num_classes == 1000 and not ids["r18"].pretrained
    assert "resnet50" in client.architectures()


def test_model_info_layer_table_matches_hand_hooks(client):
    info = client.model_info("r18")
    assert info.arch == "resnet18" and info.input_size == [3, 224, 224] and info.device == "cpu"
    assert info.dtype == "float32" and len(info.class_names) == 1000 and info.class_names[0] == "tench"
    assert "untrained" in info.note
    assert info.preprocessing["crop"] == [224, 224] and info.preprocessing["resize"] == 256

    model = build_architecture("resnet18", 1000).eval()
    shapes = {}

    def record(name):
        def hook(module, inputs, output):
            shapes.setdefault(name, list(output.shape))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model(torch.zeros(1, 3, 224, 224))
    for h in handles:
        h.remove()
    assert info.num_parameters == sum(p.numel() for p in model.parameters())
    assert info.flops == fc.get_total_flops() and info.mult_adds == info.flops // 2
    by_name = {l.name: l for l in info.layers}
    assert set(by_name) == set(shapes)
    for name, shape in shapes.items():
        assert by_name[name].output_shape == shape, name
    assert by_name["layer4"].cam_target and not by_name["fc"].cam_target
    assert by_name["conv1"].conv and by_name["conv1"].num_parameters == 3 * 64 * 7 * 7
    assert by_name["layer1.0.conv1"].mult_adds == 64 * 64 * 9 * 56 * 56
    assert by_name["layer1.0.conv1"].input_shape == [1, 64, 56, 56]


def test_model_info_for_another_input_size(client):
    info = client.model_info("r18", [3, 64, 64])
    assert info.input_size == [3, 64, 64]
    assert info.layer("layer4").output_shape == [1, 512, 2, 2]
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.model_info("r18", [1, 64, 64]), "C=3")


def test_load_predict_unload(client, photos):
    info = client.load_model("sq", "squeezenet1_1")
    assert info.arch == "squeezenet1_1" and info.weights == "none"
    assert any(m.model == "sq" for m in client.list_models())
    assert len(client.predict("sq", photos["chelsea"])[0].top_k) == 5
    expect(grpc.StatusCode.ALREADY_EXISTS, lambda: client.load_model("sq", "resnet18"), "sq")
    client.unload_model("sq")
    assert not any(m.model == "sq" for m in client.list_models())
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.predict("sq", photos["chelsea"]))
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.unload_model("sq"))


def test_load_bfloat16_model_gives_float32_probabilities(client, photos):
    client.load_model("sq16", "squeezenet1_1", dtype="bfloat16")
    try:
        assert client.model_info("sq16").dtype == "bfloat16"
        pred = client.predict("sq16", photos["chelsea"], probabilities=True)[0]
        assert pred.probabilities.dtype == np.float32 and pred.probabilities.sum() == pytest.approx(1, abs=1e-4)
    finally:
        client.unload_model("sq16")


def test_plain_state_dict_checkpoint(client, store, photos):
    model = torchvision.models.squeezenet1_1(num_classes=10).eval()
    torch.save(model.state_dict(), store / "sq10.pth")
    assert "sq10.pth" in client.checkpoints()
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.load_model("p", "sq10"), "arch")
    info = client.load_model("p", "sq10", arch="squeezenet1_1", num_classes=10)
    try:
        assert len(info.class_names) == 10
        x = torch.randn(1, 3, 224, 224)
        with torch.inference_mode():
            ref = model(x)[0]
        got = client.predict("p", x.numpy(), k=10)[0]
        torch.testing.assert_close(torch.tensor([s.logit for s in got.top_k]), ref[[s.index for s in got.top_k]],
                                   rtol=1e-5, atol=1e-5)
    finally:
        client.unload_model("p")


def test_netscope_checkpoint_brings_labels_and_preprocessing(client, store):
    model = torchvision.models.resnet18(num_classes=3).eval()
    torch.save({"format": "netscope-checkpoint", "format_version": 1, "arch": "resnet18", "num_classes": 3,
                "class_names": ["circle", "square", "star"],
                "preprocessing": {"resize": 72, "crop": [64, 64], "mean": [0.5] * 3, "std": [0.25] * 3,
                                  "interpolation": "bilinear", "channels": 3},
                "model_state_dict": model.state_dict()}, store / "shapes-r18.pt")
    info = client.load_model("c", "shapes-r18")
    try:
        assert info.class_names == ["circle", "square", "star"] and info.input_size == [3, 64, 64]
        assert info.preprocessing["resize"] == 72
        pred = client.predict("c", torch.zeros(3, 64, 64).numpy(), k=3)[0]
        assert {s.label for s in pred.top_k} == {"circle", "square", "star"}
    finally:
        client.unload_model("c")


def test_checkpoint_of_wrong_architecture(client, store):
    torch.save(torchvision.models.squeezenet1_1(num_classes=10).state_dict(), store / "wrong.pt")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.load_model("w", "wrong", arch="resnet18", num_classes=10),
           "does not fit")


def test_unsafe_checkpoint_is_refused(client, store):
    import pickle

    (store / "evil.pt").write_bytes(pickle.dumps(object()))
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.load_model("e", "evil"), "safely")


@pytest.mark.parametrize("name", ["../secrets.pt", "/etc/passwd", "a/../../b.pt", "~/x.pt"])
def test_checkpoint_names_cannot_escape_the_store(client, name):
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.load_model("x", name), "inside the model store")


def test_symlink_out_of_the_store_is_refused(client, store, tmp_path):
    outside = tmp_path / "outside.pt"
    torch.save({"w": torch.zeros(1)}, outside)
    (store / "link.pt").symlink_to(outside)
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.load_model("x", "link"), "outside")


def test_unknown_source(client):
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.load_model("x", "resnet181"), "resnet18")


def test_unknown_weights_enum(client):
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.load_model("x", "resnet18", weights="IMAGENET9K"), "IMAGENET1K_V1")


def test_default_weights_offline_are_failed_precondition(client, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    err = expect(grpc.StatusCode.FAILED_PRECONDITION, lambda: client.load_model("x", "resnet18", weights="DEFAULT"),
                 "not available offline")
    # the file's name, never the server's paths
    assert "resnet18-f37072fd.pth" in err.message and str(tmp_path) not in err.message


def test_default_weights_load_from_the_local_cache(client, monkeypatch, tmp_path, photos):
    """The real weights path, offline: a file where torch.hub caches it. The
    server checks a cached file against the sha256 prefix in its name, so the
    test points torchvision's published URL at its own file's hash."""
    import hashlib
    import io

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    model = torchvision.models.resnet18().eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()[:8]
    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.value, "url",
                        f"https://download.pytorch.org/models/resnet18-{digest}.pth")
    (tmp_path / "hub" / "checkpoints" / f"resnet18-{digest}.pth").write_bytes(buf.getvalue())
    info = client.load_model("cached", "resnet18", weights="DEFAULT")
    try:
        assert info.pretrained and info.weights == "IMAGENET1K_V1" and info.note == ""
        x = torch.randn(1, 3, 224, 224)
        with torch.inference_mode():
            ref = model(x)[0]
        got = client.predict("cached", x.numpy(), k=1)[0].top1
        assert got.index == int(ref.argmax()) and got.logit == pytest.approx(float(ref.max()), rel=1e-5)
    finally:
        client.unload_model("cached")


@pytest.mark.parametrize("kwargs, code, word", [
    ({"device": "tpu"}, grpc.StatusCode.INVALID_ARGUMENT, "device"),
    ({"dtype": "float8"}, grpc.StatusCode.INVALID_ARGUMENT, "dtype"),
    ({"device": "cuda:7"}, grpc.StatusCode.FAILED_PRECONDITION, "cuda"),
])
def test_bad_device_or_dtype(client, kwargs, code, word):
    if kwargs.get("device", "").startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that many GPUs")
    expect(code, lambda: client.load_model("x", "squeezenet1_1", **kwargs), word)


def test_bad_model_id(client):
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.load_model("a b/c", "resnet18"), "model id")


def test_health_per_service_and_reflection(client, server):
    assert client.health("") == "SERVING"
    assert client.health("netscope.v1.Inspector") == "SERVING"
    with pytest.raises(NetscopeError) as err:
        client.health("no.such.Service")
    assert err.value.code == grpc.StatusCode.NOT_FOUND

    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"netscope.v1.Inspector", "grpc.health.v1.Health"} <= names

