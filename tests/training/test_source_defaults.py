"""Each data source's defaults are its working recipe; a flag given wins; the thread count
follows the machine (issue 17, items 2 and 4)."""
import pytest

from netscope.training import threads
from netscope.training.checkpoint import load_checkpoint
from netscope.training.options import DEFAULT_EPOCHS, SOURCE_DEFAULTS
from netscope.training.train import apply_source_defaults, main, parser


def resolved(*argv):
    args = parser().parse_args(list(argv))
    args.arch = args.arch or "simple_cnn"
    apply_source_defaults(args)
    return args


@pytest.mark.parametrize("source,expect", [
    ("shapes", {"image_size": 32, "samples": 4000, "epochs": 10, "lr": 6e-3, "weight_decay": 0.01, "init": "torch",
                "arch_arg": {"widths": [16, 32, 64], "convs": 2}}),
    ("digits", {"image_size": None, "epochs": 12, "lr": 8e-3, "weight_decay": None, "init": "default",
                "arch_arg": {"widths": [16, 32, 64]}}),
    ("mixed_digits", {"samples": 8000, "epochs": 8, "lr": 6e-3, "init": "torch",
                      "arch_arg": {"widths": [16, 32, 64], "convs": 2}}),
    ("imagefolder:/x", {"image_size": 64, "epochs": 15, "init": "torch", "arch_arg": {"widths": [32, 64, 128],
                                                                                      "convs": 2}}),
    ("mnist:/x", {"image_size": None, "epochs": DEFAULT_EPOCHS, "lr": None, "init": "default", "arch_arg": {}}),
])
def test_each_source_resolves_to_its_recipe(source, expect):
    args = resolved("--data", source)
    got = {k: dict(args.arch_arg) if k == "arch_arg" else getattr(args, k) for k in expect}
    assert got == expect


def test_a_flag_given_wins_and_arch_args_merge_per_key():
    args = resolved("--data", "shapes", "--epochs", "3", "--lr", "1e-3", "--init", "kaiming", "--image-size", "48",
                    "--arch-arg", "convs=1")
    assert (args.epochs, args.lr, args.init, args.image_size) == (3, 1e-3, "kaiming", 48)
    assert dict(args.arch_arg) == {"widths": [16, 32, 64], "convs": 1}


def test_simple_cnn_recipe_is_not_forced_on_other_models_or_optimizers():
    other = resolved("--data", "shapes", "--arch", "resnet18")
    assert (other.arch_arg, other.init, other.lr, other.image_size) == ([], "default", None, None)
    assert other.samples == 4000 and other.epochs == 10  # the data's part of the recipe stays
    sgd = resolved("--data", "shapes", "--optimizer", "sgd")
    assert (sgd.lr, sgd.weight_decay) == (None, None)  # sgd's own defaults, not adamw's 6e-3
    assert dict(sgd.arch_arg)["convs"] == 2


def test_every_recipe_names_real_options():
    dests = vars(parser().parse_args([]))
    for source, recipe in SOURCE_DEFAULTS.items():
        assert set(recipe) <= set(dests), source


def test_threads_default_follows_cores_and_load(monkeypatch):
    cores = threads.physical_cores()
    assert 1 <= cores <= len(threads.usable_cpus())
    assert threads.default_threads(load=0.0) == cores
    assert threads.default_threads(load=1000.0) == 1
    monkeypatch.setattr(threads, "physical_cores", lambda cpus=None: 4)
    monkeypatch.setattr(threads, "usable_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    assert [threads.default_threads(load=x) for x in (0.0, 0.9, 1.2, 2.6, 9.0)] == [4, 4, 3, 2, 1]
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.0, 0.0, 0.0))
    assert resolved("--data", "digits").threads == 3
    assert resolved("--data", "digits", "--threads", "4").threads == 4


def test_default_command_beats_chance(tmp_path):
    """`netscope train --data digits` with its defaults, on a smaller budget, learns."""
    out = tmp_path / "d.pt"
    assert main(["--data", "digits", "--limit", "400", "--epochs", "4", "--no-progress", "--no-tensorboard",
                 "--out", str(out)]) == 0
    ck = load_checkpoint(out)
    assert ck["arch_kwargs"]["widths"] == [16, 32, 64] and ck["extra"]["args"]["lr"] == 8e-3
    assert ck["metrics"]["test_acc"] >= 0.35  # chance is 0.1; 0.57 measured


def test_shapes_defaults_are_the_measured_recipe():
    """docs/TRAINING.md's 94% shapes run (recipes.SHAPES) is what `--data shapes` alone does."""
    from netscope.training.recipes import SHAPES

    keys = ("image_size", "samples", "arch", "epochs", "batch_size", "optimizer", "lr", "weight_decay",
            "scheduler", "init", "augment", "seed")
    plain, recipe = resolved("--data", "shapes"), resolved(*SHAPES)
    assert {k: getattr(plain, k) for k in keys} == {k: getattr(recipe, k) for k in keys}
    assert dict(plain.arch_arg) == dict(recipe.arch_arg)
