"""netscope train end to end on tiny data: checkpoints, resume, Ctrl-C, torchrun, bad input."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch

from netscope.training.checkpoint import load_checkpoint, save_checkpoint
from netscope.training.models import build_model
from netscope.training.train import main, parser, run

from .conftest import TINY

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _train(tmp, name, *extra):
    out = tmp / f"{name}.pt"
    code = main([*TINY, "--out", str(out), "--logdir", str(tmp / "runs" / name), *extra])
    return code, out


def _same_weights(a, b):
    sa, sb = load_checkpoint(a)["model_state_dict"], load_checkpoint(b)["model_state_dict"]
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run: what every resumed run must reach exactly."""
    tmp = tmp_path_factory.mktemp("ref")
    code, out = _train(tmp, "ref", "--epochs", "3")
    assert code == 0
    return tmp, out


def test_checkpoint_metrics_and_tensorboard(reference, capsys):
    tmp, out = reference
    ck = load_checkpoint(out)
    m = ck["metrics"]
    assert ck["arch"] == "simple_cnn" and ck["epoch"] == 3 and ck["num_classes"] == 10
    assert ck["arch_kwargs"] == {"in_channels": 1, "input_size": 16, "widths": [8, 16]}
    assert ck["preprocessing"]["crop"] == [16, 16] and ck["preprocessing"]["channels"] == 1
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert 0.0 <= m["test_acc"] <= 1.0 and set(m["per_class"]) == set(ck["class_names"])
    cm = m["confusion_matrix"]
    assert len(cm) == 10 and sum(map(sum, cm)) == 160
    assert m["test_acc"] == pytest.approx(sum(cm[i][i] for i in range(10)) / 160)
    assert ck["extra"]["data"]["split"]["test"]  # the split is recorded
    model = build_model(ck["arch"], ck["num_classes"], **ck["arch_kwargs"])
    model.load_state_dict(ck["model_state_dict"])
    events = list((tmp / "runs" / "ref").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 1000


def test_resume_reaches_the_same_weights(reference, tmp_path):
    _, ref = reference
    code, out = _train(tmp_path, "part", "--epochs", "3", "--stop-after", "1")
    assert code == 0 and load_checkpoint(out)["epoch"] == 1
    # everything else (data, limit, batch size, optimiser, schedule) continues as recorded
    assert main(["--resume", str(out), "--threads", "1", "--no-progress", "--logdir", str(tmp_path / "runs2")]) == 0
    ck = load_checkpoint(out)
    assert ck["epoch"] == 3 and [h["epoch"] for h in ck["metrics"]["history"]] == [1, 2, 3]
    assert _same_weights(out, ref)


SLOWER = ["--limit", "1000", "--batch-size", "8", "--epochs", "3", "--no-tensorboard"]  # 125 batches an epoch


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    """SIGINT in the middle of epoch 2: the saved checkpoint (weights, optimiser, schedule, RNG,
    position in the epoch) resumes to exactly the weights of an uninterrupted run."""
    ref = tmp_path / "ref.pt"
    assert main([*TINY, *SLOWER, "--out", str(ref)]) == 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for delay in (0.3, 0.1, 0.6):
        out = tmp_path / f"int{delay}.pt"
        proc = subprocess.Popen([sys.executable, "-m", "netscope.training.train", *TINY, *SLOWER, "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        for line in proc.stdout:
            if line.startswith("epoch 1/3"):
                time.sleep(delay)
                proc.send_signal(signal.SIGINT)
                break
        stdout, stderr = proc.communicate(timeout=120)
        assert "Traceback" not in stderr
        assert proc.returncode == 130, stderr
        assert "--resume" in stdout
        if "interrupted in epoch 2" in stdout:
            break
    else:
        pytest.fail("SIGINT never landed inside an epoch")
    ck = load_checkpoint(out)
    assert ck["epoch"] == 1 and 0 < ck["extra"]["resume"]["batch"] < 125
    # --no-tensorboard is the command line's, never inherited: without it the resumed run logs to ./runs
    assert main(["--resume", str(out), "--threads", "1", "--no-progress", "--no-tensorboard"]) == 0
    assert _same_weights(out, ref)


@pytest.mark.parametrize("opts", [
    ["--optimizer", "sgd", "--nesterov", "--scheduler", "step", "--step-size", "1"],
    ["--optimizer", "sgd", "--scheduler", "multistep", "--milestones", "1"],
    ["--optimizer", "adam", "--scheduler", "exponential", "--gamma", "0.5"],
    ["--optimizer", "adamw", "--scheduler", "cosine", "--init", "xavier"],
    ["--optimizer", "adamw", "--scheduler", "plateau", "--patience", "0", "--init", "kaiming"],
    ["--scheduler", "none", "--augment", "color", "--label-smoothing", "0.1"],
    ["--init", "torch", "--arch-arg", "convs=2", "--scheduler", "cosine"],  # resume rebuilds two convs per block
])
def test_optimisers_and_schedulers_round_trip(tmp_path, opts):
    code, out = _train(tmp_path, "o", "--epochs", "2", "--limit", "64", "--no-tensorboard", *opts)
    assert code == 0
    ck = load_checkpoint(out)  # weights_only: every scheduler's state is plain
    assert ck["optimizer_state_dict"]["param_groups"]
    assert main(["--resume", str(out), "--epochs", "3", "--threads", "1", "--no-progress",
                 "--no-tensorboard", "--limit", "64", *opts]) == 0


@pytest.mark.parametrize("epochs", ["1", "2"])
def test_one_cycle_of_a_few_steps_trains(tmp_path, epochs):
    """2 batches an epoch: cycles of 2 and 4 steps (torch's OneCycleLR divides by zero on those)."""
    code, out = _train(tmp_path, "c", "--epochs", epochs, "--limit", "64", "--no-tensorboard", "--scheduler", "onecycle")
    assert code == 0 and load_checkpoint(out)["epoch"] == int(epochs)


def _err(argv, capsys):
    code = run(parser().parse_args(argv))
    return code, capsys.readouterr().err


def test_bad_input_is_one_clear_message(tmp_path, capsys):
    base = ["--threads", "1", "--no-progress", "--no-tensorboard", "--out", str(tmp_path / "x.pt")]
    cases = [
        (["--data", f"imagefolder:{tmp_path / 'missing'}"], "does not exist"),
        (["--data", f"imagefolder:{tmp_path}"], "no class folders"),
        (["--data", "digits", "--arch", "resnet19"], "unknown architecture"),
        (["--data", "digits", "--freeze", "backbone"], "needs --pretrained"),
        (["--data", "cifar10:" + str(tmp_path)], "--download"),
        (["--data", "digits", "--arch", "alexnet", "--image-size", "16"], "cannot take"),
        (["--data", "nope"], "unknown data source"),
        (["--resume", str(tmp_path / "none.pt")], "no checkpoint"),
    ]
    for argv, msg in cases:
        code, err = _err([*argv, *base], capsys)
        assert code == 2, argv
        assert msg in err and "Traceback" not in err, err


def test_resume_refuses_another_architecture(reference, tmp_path, capsys):
    _, ref = reference
    code, err = _err(["--resume", str(ref), "--arch", "resnet18", "--epochs", "4", "--threads", "1"], capsys)
    assert code == 2 and "holds a simple_cnn model, not resnet18" in err
    code, err = _err(["--resume", str(ref), "--threads", "1"], capsys)
    assert code == 2 and "already has 3 epochs" in err
    code, err = _err(["--resume", str(ref), "--epochs", "5", "--threads", "1"], capsys)
    assert code == 2 and "planned for 3 epochs" in err


def test_cli_exit_code_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "netscope.training.train", "--data", f"imagefolder:{tmp_path}/x"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_torchrun_two_processes_gloo(tmp_path):
    """DistributedDataParallel on CPU with gloo: both ranks train, only rank 0 writes."""
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "netscope.training.train", *TINY, "--epochs", "2", "--out", str(out),
                        "--logdir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300,
                       env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes" in r.stdout
    assert r.stdout.count("test accuracy") == 1  # rank 0 alone reports
    ck = load_checkpoint(out)
    assert ck["epoch"] == 2 and not any(k.startswith("module.") for k in ck["model_state_dict"])
    # every rank saw its half: the confusion matrix still counts each test image once
    assert sum(map(sum, ck["metrics"]["confusion_matrix"])) == 160
    assert len(list((tmp_path / "runs").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.pt", "runs"]
