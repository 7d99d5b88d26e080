"""The checkpoint format: what the server's registry relies on."""
import numpy as np
import pytest
import torch

from netscope.training.checkpoint import (
    FORMAT, FORMAT_VERSION, CheckpointError, is_netscope_checkpoint, load_checkpoint, save_checkpoint)
from netscope.training.models import build_model

PRE = {"resize": 64, "crop": [64, 64], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
       "interpolation": "bilinear", "channels": 3}


def _save(path, **over):
    model = build_model("simple_cnn", 3, input_size=32, widths=[4, 8])
    kw = dict(arch="simple_cnn", num_classes=3, class_names=["a", "b", "c"], preprocessing=PRE,
              model_state_dict=model.state_dict(), arch_kwargs={"input_size": 32, "widths": [4, 8]})
    kw.update(over)
    return model, save_checkpoint(path, **kw)


def test_round_trip_is_weights_only_and_rebuilds_the_model(tmp_path):
    opt_model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(opt_model.parameters(), lr=0.1, momentum=0.9)
    opt_model(torch.ones(1, 2)).sum().backward()
    opt.step()
    model, path = _save(tmp_path / "sub" / "m.pt", optimizer_state_dict=opt.state_dict(), epoch=3,
                        metrics={"test_acc": np.float64(0.97), "cm": np.eye(2, dtype=np.int64)},
                        extra={"path": tmp_path})
    raw = torch.load(path, weights_only=True)  # plain values only: the safe loader reads it
    assert raw["format"] == FORMAT and raw["format_version"] == FORMAT_VERSION
    ck = load_checkpoint(path)
    assert is_netscope_checkpoint(ck)
    assert ck["epoch"] == 3 and ck["class_names"] == ["a", "b", "c"]
    assert ck["metrics"]["test_acc"] == pytest.approx(0.97) and ck["metrics"]["cm"] == [[1, 0], [0, 1]]
    assert ck["extra"]["path"] == str(tmp_path)
    again = build_model(ck["arch"], ck["num_classes"], **ck.get("arch_kwargs", {}))
    again.load_state_dict(ck["model_state_dict"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_preprocessing_is_what_the_server_reads(tmp_path):
    from netscope.server.imaging import Preprocessing

    _, path = _save(tmp_path / "m.pt")
    pre = Preprocessing.from_dict(load_checkpoint(path)["preprocessing"])
    assert pre.input_size == (3, 64, 64) and pre.resize == 64 and pre.mean == (0.5, 0.5, 0.5)


def test_module_prefix_of_ddp_is_stripped(tmp_path):
    model = build_model("simple_cnn", 3, input_size=32, widths=[4, 8])
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    _, path = _save(tmp_path / "m.pt", model_state_dict=state)
    assert not any(k.startswith("module.") for k in load_checkpoint(path)["model_state_dict"])


def test_bad_files_give_clear_errors(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), plain)
    with pytest.raises(CheckpointError, match="plain state_dict"):
        load_checkpoint(plain)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    _, path = _save(tmp_path / "v.pt")
    ck = torch.load(path, weights_only=True)
    ck["format_version"] = 99
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(path)
    assert not is_netscope_checkpoint({"weight": torch.zeros(1)})


def test_refuses_inconsistent_content(tmp_path):
    with pytest.raises(CheckpointError, match="class names"):
        _save(tmp_path / "m.pt", class_names=["a"])
    with pytest.raises(CheckpointError, match="missing"):
        _save(tmp_path / "m.pt", preprocessing={"resize": 1})
    with pytest.raises(TypeError, match="not a plain value"):
        _save(tmp_path / "m.pt", extra={"f": object()})


def test_randomised_copy_keeps_everything_but_the_weights(tmp_path):
    from netscope.training.checkpoint import randomised_copy

    model = build_model("simple_cnn", 3, input_size=32, widths=[4, 8], convs=2)
    src = save_checkpoint(tmp_path / "a.pt", arch="simple_cnn", num_classes=3, class_names=["a", "b", "c"],
                          preprocessing=PRE, model_state_dict=model.state_dict(),
                          arch_kwargs={"input_size": 32, "widths": [4, 8], "convs": 2}, epoch=5)
    copy = load_checkpoint(randomised_copy(src, tmp_path / "b.pt", seed=1))
    again = load_checkpoint(randomised_copy(src, tmp_path / "c.pt", seed=1))
    original = load_checkpoint(src)
    for key in ("arch", "arch_kwargs", "num_classes", "class_names", "preprocessing"):
        assert copy[key] == original[key]
    weights = [k for k, v in original["model_state_dict"].items() if v.dim() >= 2]  # conv and linear
    assert copy["model_state_dict"].keys() == original["model_state_dict"].keys() and len(weights) == 5
    assert all(not torch.equal(copy["model_state_dict"][k], original["model_state_dict"][k]) for k in weights)
    assert all(torch.equal(copy["model_state_dict"][k], again["model_state_dict"][k]) for k in weights)  # seeded
    assert copy["epoch"] == 0 and copy["optimizer_state_dict"] is None
