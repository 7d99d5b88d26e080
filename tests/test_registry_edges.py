"""The registry's edges through a real server: class counts out of range, a
checkpoint that does not fit or holds NaN, what ListModels lists, weights whose
hash does not match, no server path in any message, and unloading that frees."""
from __future__ import annotations

import hashlib
import weakref

import grpc
import numpy as np
import pytest
import torch
import torchvision

from netscope.client import NetscopeError
from netscope.server.models.registry import MAX_NUM_CLASSES


def failure(call) -> NetscopeError:
    with pytest.raises(NetscopeError) as info:
        call()
    return info.value


@pytest.mark.parametrize("n", [-1, MAX_NUM_CLASSES + 1, 2**31 - 1])
def test_num_classes_out_of_range_is_invalid_argument(client, n):
    err = failure(lambda: client.load_model("nc", "squeezenet1_1", num_classes=n))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT, err
    assert err.field_violations[0][0] == "num_classes" and err.metadata["max"] == str(MAX_NUM_CLASSES)
    assert f"1..{MAX_NUM_CLASSES}" in err.message and str(n) in err.message


def test_mis_sized_checkpoint_names_the_keys_and_shapes(client, store):
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), store / "edges-r18-10.pt")
    err = failure(lambda: client.load_model("ms", "edges-r18-10", arch="resnet18", num_classes=5))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "CHECKPOINT_MISMATCH"
    assert "2 of the wrong shape" in err.message
    assert "'fc.weight' (10, 512) where the model has (5, 512)" in err.message
    assert "'fc.bias' (10) where the model has (5)" in err.message


def test_checkpoint_of_another_architecture_lists_missing_and_unexpected(client, store):
    torch.save(torchvision.models.squeezenet1_1(num_classes=10).state_dict(), store / "edges-sq.pt")
    err = failure(lambda: client.load_model("ms", "edges-sq", arch="resnet18", num_classes=10))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing: 'conv1.weight' (64, 3, 7, 7)" in err.message and " unexpected: 'features.0.weight'" in err.message
    assert "more" in err.message  # the first few of each, with counts


def test_nan_weights_are_refused_at_load(client, store):
    state = torchvision.models.resnet18(num_classes=3).state_dict()
    state["fc.weight"][0, 0] = float("nan")
    torch.save({"format": "netscope-checkpoint", "format_version": 1, "arch": "resnet18", "num_classes": 3,
                "class_names": ["a", "b", "c"], "preprocessing": {"resize": 72, "crop": [64, 64], "mean": [0.5] * 3,
                                                                  "std": [0.25] * 3, "interpolation": "bilinear",
                                                                  "channels": 3},
                "model_state_dict": state}, store / "edges-nan.pt")
    err = failure(lambda: client.load_model("nan", "edges-nan"))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.reason == "NON_FINITE_MODEL"
    assert "'fc.weight'" in err.message and err.metadata["parameter"] == "fc.weight"
    assert "nan" not in [m.model for m in client.list_models()]


def test_checkpoint_format_is_checked_by_the_training_module(client, store):
    """The registry reads checkpoints through training/checkpoint.py (the one format): a netscope
    checkpoint of another version, or missing a key, is refused saying what is wrong."""
    model = torchvision.models.resnet18(num_classes=2)
    base = {"format": "netscope-checkpoint", "format_version": 1, "arch": "resnet18", "num_classes": 2,
            "class_names": ["a", "b"], "preprocessing": {"resize": 72, "crop": [64, 64], "mean": [0.5] * 3,
                                                          "std": [0.25] * 3, "interpolation": "bilinear",
                                                          "channels": 3},
            "model_state_dict": model.state_dict()}
    for name, change, words in [("edges-v9", {"format_version": 9}, "format version 9"),
                                ("edges-names", {"class_names": ["a"]}, "1 class names for 2 classes")]:
        torch.save({**base, **change}, store / f"{name}.pt")
        err = failure(lambda: client.load_model("fmt", name))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "CHECKPOINT_INVALID", err
        assert words in err.message and str(store.resolve()) not in err.message, err.message


def test_listing_keeps_only_loadable_files_inside_the_store(client, store, tmp_path):
    outside = tmp_path / "outside.pt"
    torch.save(torchvision.models.squeezenet1_1(num_classes=2).state_dict(), outside)
    (store / "edges-link-out.pt").symlink_to(outside)
    torch.save(torchvision.models.squeezenet1_1(num_classes=2).state_dict(), store / "edges-real.pt")
    (store / "edges-link-in.pt").symlink_to(store / "edges-real.pt")
    (store / "edges-notes.pt").write_text("not a checkpoint")
    (store / "edges-dir.pt").mkdir()
    listed = client.checkpoints()
    assert "edges-real.pt" in listed and "edges-link-in.pt" in listed
    assert not {"edges-link-out.pt", "edges-notes.pt", "edges-dir.pt"} & set(listed)
    err = failure(lambda: client.load_model("lo", "edges-link-out", arch="squeezenet1_1", num_classes=2))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "outside the model store" in err.message


def test_no_message_shows_a_server_path(client, store, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    (store / "edges-garbage.pt").write_bytes(b"PK\x03\x04 not really a zip")
    calls = [
        lambda: client.load_model("p", "edges-does-not-exist"),
        lambda: client.load_model("p", "edges-garbage", arch="resnet18"),
        lambda: client.load_model("p", "resnet18", weights="DEFAULT"),
        lambda: client.load_model("p", "../x.pt"),
        lambda: client.load_model("p", "é" * 300),  # over the file system's 255-byte name limit (found by the fuzzer)
    ]
    for call in calls:
        err = failure(call)
        assert str(store.resolve()) not in err.message and str(tmp_path) not in err.message, err.message
        assert err.code != grpc.StatusCode.INTERNAL


def _fake_published_weights(monkeypatch, tmp_path, data: bytes, name_hash: str):
    """resnet18's DEFAULT weights as a file named with `name_hash`, the way
    torch.hub names a download ("<name>-<sha256 prefix>.pth"): torchvision's
    published URL is pointed at it (third-party metadata, not our code)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    enum = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setattr(enum.value, "url", f"https://download.pytorch.org/models/resnet18-{name_hash}.pth")
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / f"resnet18-{name_hash}.pth").write_bytes(data)


def test_cached_weights_matching_their_hash_load(client, monkeypatch, tmp_path):
    import io

    buf = io.BytesIO()
    torch.save(torchvision.models.resnet18().state_dict(), buf)
    data = buf.getvalue()
    _fake_published_weights(monkeypatch, tmp_path, data, hashlib.sha256(data).hexdigest()[:8])
    info = client.load_model("hashed", "resnet18", weights="DEFAULT")
    client.unload_model("hashed")
    assert info.pretrained


def test_corrupted_cached_weights_are_refused(client, monkeypatch, tmp_path):
    import io

    buf = io.BytesIO()
    torch.save(torchvision.models.resnet18().state_dict(), buf)
    data = bytearray(buf.getvalue())
    digest = hashlib.sha256(data).hexdigest()[:8]
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still a loadable zip, not the published file
    _fake_published_weights(monkeypatch, tmp_path, bytes(data), digest)
    err = failure(lambda: client.load_model("bad", "resnet18", weights="DEFAULT"))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.reason == "WEIGHTS_HASH_MISMATCH"
    assert f"resnet18-{digest}.pth" in err.message and "sha256" in err.message
    assert str(tmp_path) not in err.message


@pytest.mark.parametrize("max_batch_size", [1, 4])
def test_unload_frees_the_module_at_once(client, server, max_batch_size):
    client.load_model("free", "squeezenet1_1", max_batch_size=max_batch_size)
    module = weakref.ref(server.registry.get("free").module)
    image = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    client.predict("free", image)
    client.explain("free", image, method="grad_cam")
    client.explain("free", image, method="integrated_gradients", steps=2)
    list(client.explain_many([image, image], model="free"))
    client.model_info("free")
    client.unload_model("free")
    assert module() is None  # no gc.collect here: UnloadModel has already freed it


def test_model_info_input_size_is_bounded_by_the_model_input(client):
    """GetModelInfo at another input size runs the model on it: 3x4096x4096 on
    mobilenet_v3_small took over 3 GiB (the fuzzer's watchdog killed the
    server). A size over 16x the model input's pixels is refused up front."""
    err = failure(lambda: client.model_info("mnv3", input_size=(3, 4096, 4096)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "INPUT_SIZE_TOO_LARGE", err
    assert err.field_violations[0][0] == "input_size" and err.metadata["limit"] == str(16 * 224 * 224)
    assert "896x896" in err.message
    assert client.model_info("mnv3", input_size=(3, 896, 896)).input_size == [3, 896, 896]


@pytest.mark.parametrize("source", ["\x00", "a\x00b.pt"])
def test_a_source_with_a_nul_byte_is_invalid_argument(client, source):
    """Found by the long fuzz run: a NUL in LoadModel's source reached the
    file system calls, whose ValueError answered INTERNAL."""
    err = failure(lambda: client.load_model("nul", source))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "CHECKPOINT_NAME", err
    assert err.field_violations[0][0] == "source"
