"""Every path `netscope train` writes is checked before any work (issue 17): a usage error
(exit 2) naming the path and why, no data loaded, no TensorBoard run left behind."""
import os
import subprocess
import sys

import pytest

from netscope.training import paths
from netscope.training.train import parser, run

from .conftest import TINY


def _train(argv, capsys):
    code = run(parser().parse_args([*TINY, "--epochs", "1", *argv]))
    out, err = capsys.readouterr()
    return code, out, err


def _refused(argv, capsys, *words):
    code, out, err = _train(argv, capsys)
    assert code == 2, (out, err)
    assert "Traceback" not in err and "training simple_cnn" not in out  # refused before the data or model
    for w in words:
        assert w in err, err
    return err


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path, so a default runs/ folder would show up there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_out_under_a_file_is_refused_before_training(in_tmp, capsys):
    (in_tmp / "afile").write_text("not a folder")
    err = _refused(["--out", "afile/x.pt"], capsys, "--out afile/x.pt", "afile is a file, not a folder")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["afile"]  # no runs/x TensorBoard folder


def test_out_that_is_a_folder_is_refused(in_tmp, capsys):
    (in_tmp / "models").mkdir()
    _refused(["--out", "models"], capsys, "--out models: is a folder", "models/model.pt")
    assert not (in_tmp / "runs").exists()


def test_out_in_a_read_only_place_is_refused(in_tmp, capsys):
    # /sys is read-only even for root (os.access would say yes to root): the probe file tells.
    _refused(["--out", "/sys/netscope-test.pt"], capsys, "--out /sys/netscope-test.pt", "cannot create files in /sys")
    assert not (in_tmp / "runs").exists()


def test_out_with_a_name_too_long_is_refused(in_tmp, capsys):
    name = "n" * 250 + ".pt"  # fits alone, not with the writer's temporary ".NAME.XXXXXXXX.tmp"
    _refused(["--out", name, "--no-tensorboard"], capsys, "--out", "longer with the temporary name")
    _refused(["--out", "m" * 300 + "/x.pt"], capsys, "--out", "cannot be used (File name too long)")
    assert list(in_tmp.iterdir()) == []


def test_logdir_that_is_a_file_is_refused(in_tmp, capsys):
    (in_tmp / "tb").write_text("")
    _refused(["--out", "m.pt", "--logdir", "tb"], capsys, "--logdir tb: is a file, not a folder", "--no-tensorboard")
    assert not (in_tmp / "m.pt").exists()


def test_default_logdir_is_checked_too(in_tmp, capsys):
    (in_tmp / "runs").write_text("")
    _refused(["--out", "m.pt"], capsys, "TensorBoard folder", "runs is a file, not a folder", "--no-tensorboard")
    # with --no-tensorboard nothing is written there, so nothing is checked
    code, out, err = _train(["--out", "m.pt", "--no-tensorboard"], capsys)
    assert code == 0 and (in_tmp / "m.pt").is_file(), err


def test_download_root_is_checked_before_downloading(in_tmp, capsys):
    (in_tmp / "data").write_text("")
    _refused(["--data", "cifar10:data/cifar", "--download", "--out", "m.pt"], capsys,
             "--data cifar10:data/cifar --download", "data is a file, not a folder")


def test_resume_checks_its_out_before_resuming(in_tmp, capsys):
    code = run(parser().parse_args([*TINY, "--epochs", "2", "--stop-after", "1", "--out", "m.pt",
                                    "--no-tensorboard"]))
    assert code == 0, capsys.readouterr().err
    (in_tmp / "next").mkdir()
    code = run(parser().parse_args(["--resume", "m.pt", "--out", "next", "--threads", "1"]))
    out, err = capsys.readouterr()
    assert code == 2 and "--out next: is a folder" in err and "resuming" not in out


def test_cli_prints_one_line_and_exits_2(tmp_path):
    (tmp_path / "afile").write_text("")
    r = subprocess.run([sys.executable, "-m", "netscope.cli", "train", "--data", "digits", "--out", "afile/x.pt"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "--out afile/x.pt: " in r.stderr and "afile is a file, not a folder" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_writable_path_passes_and_nothing_is_created(tmp_path):
    assert paths.file_problem(tmp_path / "a" / "b" / "m.pt") is None
    assert paths.folder_problem(tmp_path / "runs" / "x") is None
    assert paths.file_problem(tmp_path / "m.pt") is None
    assert list(tmp_path.iterdir()) == []  # the probe file is gone, no folder was made
    (tmp_path / "m.pt").write_text("old")
    assert paths.file_problem(tmp_path / "m.pt") is None  # replacing a file is fine


def test_odd_paths_get_a_reason_not_an_exception(tmp_path):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    assert "not a regular file" in paths.file_problem(tmp_path / "loop")
    assert "is not a folder" in paths.file_problem(tmp_path / "loop" / "x.pt")
    assert "is not a folder" in paths.folder_problem(tmp_path / "loop")
    assert "names a folder" in paths.file_problem("/")
    assert "cannot be used" in paths.file_problem(tmp_path / ("n" * 300 + ".pt"))
