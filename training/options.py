"""The options of `netscope train`, with no heavy imports: the `netscope` command builds
its parser from these without loading torch."""
from __future__ import annotations

import argparse

OUR_ARCHITECTURES = ["simple_cnn"]
AUGMENTATIONS = ("auto", "none", "flip", "shift", "crop", "color", "rrc")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "multistep", "exponential", "cosine", "plateau", "onecycle")
INITS = ("default", "kaiming", "xavier", "torch")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 2e-3}
DEFAULT_WD = {"sgd": 5e-4, "adam": 0.0, "adamw": 0.05}
DEFAULT_EPOCHS = 10

# Each data source's working recipe: what `netscope train --data SOURCE` does when a
# flag is not given (docs/TRAINING.md, "Each source's defaults", has the accuracy and
# time each reaches). A flag given always wins. The model keys (MODEL_KEYS) are a
# recipe for simple_cnn: they apply only when the architecture is simple_cnn, not
# --pretrained, and lr/weight_decay only with the recipe's optimizer (adamw);
# --arch-arg KEY=VALUE replaces the recipe's value of KEY and keeps the others.
SOURCE_DEFAULTS = {
    "digits": {"epochs": 12, "lr": 8e-3, "arch_arg": {"widths": [16, 32, 64]}},
    "mixed_digits": {"samples": 8000, "epochs": 8, "lr": 6e-3, "weight_decay": 0.01, "init": "torch",
                     "arch_arg": {"widths": [16, 32, 64], "convs": 2}},
    "shapes": {"image_size": 32, "samples": 4000, "epochs": 10, "lr": 6e-3, "weight_decay": 0.01, "init": "torch",
               "arch_arg": {"widths": [16, 32, 64], "convs": 2}},
    "imagefolder": {"image_size": 64, "epochs": 15, "lr": 3e-3, "weight_decay": 0.01, "init": "torch",
                    "arch_arg": {"widths": [32, 64, 128], "convs": 2}},
    # mnist, fashionmnist and cifar10 keep the generic defaults: not measured here (no copy offline)
}
MODEL_KEYS = ("image_size", "lr", "weight_decay", "init", "arch_arg")
RECIPE_ARCH, RECIPE_OPTIMIZER = "simple_cnn", "adamw"


def source_defaults(kind: str, *, arch: str | None = None, optimizer: str = RECIPE_OPTIMIZER,
                    pretrained: bool = False) -> dict:
    """The defaults `netscope train` takes for data source `kind` ("digits", "shapes",
    "imagefolder", ...) with this architecture and optimizer: {option dest: value}.
    Keys: image_size, samples, epochs, lr, weight_decay, init, arch_arg (a dict)."""
    recipe = dict(SOURCE_DEFAULTS.get(kind, {}))
    if (arch or RECIPE_ARCH) != RECIPE_ARCH or pretrained:
        recipe = {k: v for k, v in recipe.items() if k not in MODEL_KEYS}
    elif optimizer != RECIPE_OPTIMIZER:
        recipe.pop("lr", None)
        recipe.pop("weight_decay", None)
    recipe.setdefault("epochs", DEFAULT_EPOCHS)
    return recipe


def _kv(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    import ast

    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `netscope train` (shared by the CLI subcommand and `python -m`)."""
    g = p.add_argument_group("data")
    g.add_argument("--data", help="imagefolder:PATH, cifar10:ROOT, mnist:ROOT, fashionmnist:ROOT, digits, "
                                  "mixed_digits or shapes (default when resuming: the checkpoint's)")
    g.add_argument("--download", action="store_true", help="let cifar10/mnist/fashionmnist and --pretrained download")
    g.add_argument("--image-size", type=int, help="side of the square input (default: the data's own; shapes 32, "
                                                              "folders 64)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: the data's own; "
                                                                "3 for torchvision architectures)")
    g.add_argument("--augment", default="auto", choices=AUGMENTATIONS,
                   help="augmentation preset: flip, shift (random crop with padding), crop (shift + flip), "
                        "color (crop + colour jitter), rrc (RandomResizedCrop + flip + jitter); auto: per dataset")
    g.add_argument("--samples", type=int, help="shapes, mixed_digits: generated training images (val/test get an "
                                               "eighth each); default shapes 4000, mixed_digits 8000")
    g.add_argument("--limit", type=int, help="use at most this many images of each split (quick tries)")
    g.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")

    g = p.add_argument_group("model")
    g.add_argument("--arch", help=f"{', '.join(OUR_ARCHITECTURES)} or any torchvision classifier "
                                  "(default simple_cnn, or the checkpoint's when resuming)")
    g.add_argument("--arch-arg", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                   help="architecture keyword argument, e.g. widths=[16,32,64] (repeatable)")
    g.add_argument("--pretrained", nargs="?", const="DEFAULT", metavar="WEIGHTS",
                   help="fine-tune from torchvision weights (DEFAULT or an enum name); the head is replaced")
    g.add_argument("--freeze", choices=("none", "backbone"), default="none",
                   help="backbone: train only the new head (needs --pretrained)")
    g.add_argument("--backbone-lr", type=float, default=1.0, metavar="FACTOR",
                   help="with --pretrained: backbone learning rate = FACTOR x --lr (e.g. 0.1)")
    g.add_argument("--init", choices=INITS,
                   help="weight initialisation of conv/linear layers (with --pretrained: of the new head): default keeps "
                        "the architecture's own (kaiming for simple_cnn), torch is PyTorch's layer defaults; "
                        "unset: the data source's recipe, else default")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="default: the data source's recipe (docs/TRAINING.md), else 10")
    g.add_argument("--batch-size", type=int, default=64, help="per process")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    g.add_argument("--lr", type=float, help="peak learning rate (default: the data source's recipe with simple_cnn "
                                            "and adamw, else sgd 0.05, adam 1e-3, adamw 2e-3)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action="store_true")
    g.add_argument("--weight-decay", type=float, help="default: the data source's recipe, else sgd 5e-4, adam 0, "
                                                      "adamw 0.05")
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--scheduler", choices=SCHEDULERS, default="onecycle")
    g.add_argument("--step-size", type=int, default=10, help="step: epochs between decays")
    g.add_argument("--milestones", type=lambda s: [int(x) for x in s.split(",") if x], default=None,
                   help="multistep: comma-separated epochs (default: 50%%,75%% of --epochs)")
    g.add_argument("--gamma", type=float, default=0.1, help="step/multistep/exponential decay factor")
    g.add_argument("--patience", type=int, default=2, help="plateau: epochs without val-loss improvement")
    g.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                   help="mixed precision (float16 autocast + grad scaling) on CUDA; auto: on for CUDA")

    g = p.add_argument_group("run")
    g.add_argument("--out", help="checkpoint to write (default models/<data>-<arch>.pt; with --resume: that file)")
    g.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint")
    g.add_argument("--stop-after", type=int, metavar="EPOCHS",
                   help="stop (with a resumable checkpoint) after this many epochs of the --epochs planned; "
                        "continue later with --resume, e.g. on a machine with time limits")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--logdir", help="TensorBoard folder (default runs/<out name>)")
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch instead)")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: the physical cores this process may "
                                               "use, less the machine's load average, at least 1: on a busy machine "
                                               "1 is fastest)")
    g.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms (slower on GPU)")
    return p
