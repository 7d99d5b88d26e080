"""`netscope features | kernels | stats | summary` against the session server."""
from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def png_files(tmp_path_factory, pngs):
    root = tmp_path_factory.mktemp("inspect-photos")
    paths = [root / "astronaut.png", root / "coffee.png"]
    for path, data in zip(paths, pngs):
        path.write_bytes(data)
    return [str(p) for p in paths]


def test_features_writes_grids_and_arrays(run_cli, client, insp, png_files, tmp_path):
    code, out, err = run_cli("features", "--model", insp, *png_files, "--layer", "layer1", "--layer", "fc",
                             "--top", "3", "--out", str(tmp_path), "--npy", "--colormap", "viridis")
    assert code == 0, err
    assert "astronaut.png" in out and "layer1" in out and "highest mean" in out
    # layer1's 16 px maps are drawn as 32 px tiles for a person (cli/inspection.py MIN_TILE)
    want = client.feature_maps(insp, png_files, ["layer1", "fc"], top_channels=3, grid=True, colormap="viridis",
                               tile_size=32)
    for name, maps in zip(["astronaut", "coffee"], want):
        assert (tmp_path / f"{name}.layer1.png").read_bytes() == maps["layer1"].grid_png
        assert not (tmp_path / f"{name}.fc.png").exists()  # (F,) outputs have no grid
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.fc.npy"), maps["fc"].activation)
    code, out, err = run_cli("features", "--json", "--model", insp, png_files[0], "--layer", "layer2",
                             "--channels", "4", "1", "--no-grid", "--out", str(tmp_path / "j"))
    assert code == 0, err
    report = json.loads(out)
    layer = report[0]["layers"][0]
    assert report[0]["image"] == png_files[0] and layer["channels"] == [4, 1] and layer["shape"] == [128, 8, 8]
    assert layer["png"] is None and layer["npy"] is None
    expected = client.feature_maps(insp, png_files[0], "layer2", channels=[4, 1], tensors=False)[0]["layer2"]
    np.testing.assert_array_equal(np.float32(layer["channel_mean"]), expected.channel_mean)


def test_kernels_writes_the_grid(run_cli, client, insp, tmp_path):
    folder = tmp_path / "kern"  # --out is a folder, created if missing
    code, out, err = run_cli("kernels", "--model", insp, "--layer", "conv1", "--out", str(folder), "--npy")
    assert code == 0, err
    assert "conv1: rgb, 64 of 64 tiles" in out
    want = client.kernels(insp, "conv1", tile_size=32)
    assert (folder / f"{insp}.conv1.kernels.png").read_bytes() == want.grid_png
    np.testing.assert_array_equal(np.load(folder / f"{insp}.conv1.kernels.npy"), want.weight)
    code, out, _ = run_cli("kernels", "--json", "--model", insp, "--layer", "layer1.0.conv2", "--mode", "per_channel",
                           "--max-tiles", "8", "--out", str(folder))
    png = folder / f"{insp}.layer1.0.conv2.kernels.png"
    assert json.loads(out) == {"layer": "layer1.0.conv2", "mode": "per_channel", "tiles": 8, "total_tiles": 4096,
                               "weight_shape": None, "png": str(png), "npy": None}
    assert png.is_file()


def test_stats_table_and_json(run_cli, client, insp, png_files):
    code, out, err = run_cli("stats", "--model", insp, "--layer", "conv1", "--layer", "fc")
    assert code == 0, err
    assert "conv1 (Conv2d)" in out and "fc (Linear)" in out and "grad" not in out
    code, out, err = run_cli("stats", "--model", insp, *png_files, "--layer", "conv1", "--layer", "fc",
                             "--target", "class2", "--bins", "5")
    assert code == 0, err
    assert "grad l2" in out and "ratio" in out and "logit of target class2" in out  # what was differentiated
    code, out, err = run_cli("stats", "--json", "--model", insp, *png_files, "--layer", "fc", "--labels", "1", "2")
    report = json.loads(out)
    want = client.layer_stats(insp, "fc", images=png_files, labels=[1, 2])
    assert report["loss"] == pytest.approx(want.loss)
    got_w = report["layers"][0]["parameters"][0]
    assert got_w["grad"]["l2_norm"] == pytest.approx(want.layers[0].parameters[0].grad.l2_norm)
    assert got_w["value"]["hist_counts"] == want.layers[0].parameters[0].value.hist_counts.tolist()


def test_summary_like_torchinfo(run_cli, client, insp):
    code, out, err = run_cli("summary", insp)
    assert code == 0, err
    info = client.model_info(insp)
    assert f"Total params: {info.num_parameters:,}" in out
    assert "Non-trainable params: 0" in out and "Forward/backward pass size (MB)" in out
    assert "├─conv1 (Conv2d): 1" in out and "[1, 64, 32, 32]" in out
    code, out, _ = run_cli("summary", insp, "--json", "--input-size", "3", "32", "32", "--depth", "1")
    report = json.loads(out)
    assert report["input_size"] == [3, 32, 32] and {r["depth"] for r in report["layers"]} == {1}
    layer1 = next(r for r in report["layers"] if r["name"] == "layer1")
    assert layer1["params"] == sum(l.num_parameters for l in info.layers if l.name.startswith("layer1."))
    assert layer1["output_shape"] == [1, 64, 8, 8]
    assert report["total_params"] == info.num_parameters and report["mult_adds"] > 0


def test_errors_are_one_line(run_cli, insp, png_files):
    code, _, err = run_cli("kernels", "--model", insp, "--layer", "fc")
    assert code == 1 and err.startswith("netscope kernels: INVALID_ARGUMENT:") and "Traceback" not in err
    code, _, err = run_cli("features", "--model", insp, png_files[0], "--layer", "layer9")
    assert code == 1 and err.startswith("netscope features: NOT_FOUND:")
