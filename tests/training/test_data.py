import csv
import json

import cv2
import numpy as np
import pytest
import torch

from netscope.training.data import (
    SHAPE_CLASSES, DataError, ShapesDataset, build_datasets, eval_transform, export_shapes, parse_spec,
    stratified_split)


def test_shapes_are_deterministic_and_boxed():
    a, b = ShapesDataset(12, seed=3), ShapesDataset(12, seed=3)
    other = ShapesDataset(12, seed=4)
    assert np.array_equal(a.render(5)[0], b.render(5)[0])
    assert not np.array_equal(a.render(5)[0], other.render(5)[0])
    assert [a.label(i) for i in range(6)] == list(range(6))
    for i in range(12):
        img, label, (x0, y0, x1, y1) = a.render(i)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        assert 10 <= x1 - x0 <= 50 and 10 <= y1 - y0 <= 50
        assert a.box(i) == (x0, y0, x1, y1)
    x, y = a[0]
    assert x.shape == (3, 64, 64) and y == 0


def test_export_shapes_writes_pngs_and_boxes(tmp_path):
    out = export_shapes(tmp_path / "shapes", 8, seed=1)
    ds = ShapesDataset(8, seed=1, split="test")
    rows = list(csv.DictReader(open(out / "boxes.csv")))
    meta = json.loads((out / "boxes.json").read_text())
    assert len(rows) == len(meta["images"]) == 8 and meta["classes"] == list(SHAPE_CLASSES)
    for i, r in enumerate(rows):
        img = cv2.cvtColor(cv2.imread(str(out / r["file"])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(img, ds.render(i)[0])  # lossless: what the boxes describe
        assert tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1")) == ds.box(i)
        assert r["class"] == SHAPE_CLASSES[int(r["label"])] and r["file"].startswith(r["class"] + "/")


def test_split_is_seeded_stratified_811():
    targets = [i % 4 for i in range(400)]
    tr, va, te = stratified_split(targets, seed=0)
    assert (len(tr), len(va), len(te)) == (320, 40, 40)
    assert set(tr).isdisjoint(va) and set(tr).isdisjoint(te) and set(va).isdisjoint(te)
    assert sorted(np.bincount([targets[i] for i in va]).tolist()) == [10, 10, 10, 10]
    assert stratified_split(targets, seed=0) == (tr, va, te)
    assert stratified_split(targets, seed=1) != (tr, va, te)


def test_digits_grey_and_rgb():
    ds = build_datasets("digits", limit=50)
    x, y = ds.train[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert ds.class_names == [str(i) for i in range(10)] and ds.preprocessing["channels"] == 1
    assert len(ds.info["split"]["train"]) + len(ds.info["split"]["val"]) + len(ds.info["split"]["test"]) == 1797
    rgb = build_datasets("digits", channels=3, image_size=24, limit=10)
    assert rgb.train[0][0].shape == (3, 24, 24) and len(rgb.preprocessing["mean"]) == 3


def test_eval_pipeline_matches_the_servers_preprocessing():
    """What the model saw in training is what the server feeds it: same pixels in, same tensor out."""
    from netscope.server.imaging import Preprocessing, preprocess

    for spec, kw in (("shapes", {"samples": 12}), ("digits", {})):
        ds = build_datasets(spec, limit=4, **kw)
        raw, _ = ds.test.base[0]  # uint8 CHW, before normalisation
        rgb = raw.permute(1, 2, 0).numpy()
        rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb
        server = preprocess(np.ascontiguousarray(rgb), Preprocessing.from_dict(ds.preprocessing))
        torch.testing.assert_close(server, ds.test[0][0], atol=1e-5, rtol=0)


def _png(path, colour=(10, 200, 30)):
    img = np.zeros((20, 24, 3), np.uint8)
    img[:] = colour
    cv2.imwrite(str(path), img)


def test_imagefolder_split_recorded_and_corrupt_skipped(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            _png(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.warns(UserWarning, match="corrupt"):
        ds = build_datasets(f"imagefolder:{tmp_path}", image_size=16)
    assert ds.class_names == ["cat", "dog"] and ds.info["skipped"] == 1
    assert ds.info["sizes"] == {"train": 16, "val": 2, "test": 2}
    split = ds.info["split"]
    assert "dog/broken.jpg" not in split["files"]
    x, y = ds.train[0]
    assert x.shape == (3, 16, 16)
    again = build_datasets(f"imagefolder:{tmp_path}", image_size=16, split=split, seed=99)
    assert again.info["split"]["test"] == split["test"]  # a recorded split is reused, not redrawn


def test_imagefolder_bad_input(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_datasets(f"imagefolder:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="no class folders"):
        build_datasets(f"imagefolder:{tmp_path}")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i in range(3):
        _png(tmp_path / "a" / f"{i}.png")
    with pytest.raises(DataError, match="no readable images.*b"):
        build_datasets(f"imagefolder:{tmp_path}")


def test_specs_and_offline_torchvision_sources(tmp_path):
    assert parse_spec("cifar10:/x") == ("cifar10", "/x") and parse_spec("digits") == ("digits", None)
    for bad, msg in (("imagenet:/x", "unknown data source"), ("mnist", "needs a folder"), ("digits:/x", "no path")):
        with pytest.raises(DataError, match=msg):
            parse_spec(bad)
    with pytest.raises(DataError, match="--download"):
        build_datasets(f"cifar10:{tmp_path}")


def _idx(path, arr):
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.tobytes())


def test_mnist_through_torchvisions_loader(tmp_path):
    """A tiny MNIST in the real file format, read by torchvision's own loader."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _idx(raw / "train-images-idx3-ubyte", rng.integers(0, 255, (100, 28, 28)))
    _idx(raw / "train-labels-idx1-ubyte", np.arange(100) % 10)
    _idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 255, (20, 28, 28)))
    _idx(raw / "t10k-labels-idx1-ubyte", np.arange(20) % 10)
    ds = build_datasets(f"mnist:{tmp_path}")
    assert ds.info["sizes"] == {"train": 90, "val": 10, "test": 20}
    assert ds.train[0][0].shape == (1, 28, 28) and ds.num_classes == 10
