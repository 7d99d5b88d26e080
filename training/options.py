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
    g.add_argument("--data", help="imagefolder:PATH, cifar10:ROOT, mnist:ROOT, fashionmnist:ROOT, digits or shapes "
                                  "(default when resuming: the checkpoint's)")
    g.add_argument("--download", action="store_true", help="let cifar10/mnist/fashionmnist and --pretrained download")
    g.add_argument("--image-size", type=int, help="side of the square input (default: the data's own; 224 folders)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: the data's own; "
                                                                "3 for torchvision architectures)")
    g.add_argument("--augment", default="auto", choices=AUGMENTATIONS,
                   help="augmentation preset: flip, shift (random crop with padding), crop (shift + flip), "
                        "color (crop + colour jitter), rrc (RandomResizedCrop + flip + jitter); auto: per dataset")
    g.add_argument("--samples", type=int, help="shapes: generated training images (val/test get an eighth each); "
                                               "default 6000")
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
    g.add_argument("--init", choices=INITS, default="default",
                   help="weight initialisation of conv/linear layers (with --pretrained: of the new head): default keeps "
                        "the architecture's own (kaiming for simple_cnn), torch is PyTorch's layer defaults")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=64, help="per process")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    g.add_argument("--lr", type=float, help="peak learning rate (default: sgd 0.05, adam 1e-3, adamw 2e-3)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action="store_true")
    g.add_argument("--weight-decay", type=float, help="default: sgd 5e-4, adam 0, adamw 0.05")
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
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; 1 is fastest on a "
                                               "busy machine)")
    g.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms (slower on GPU)")
    return p
