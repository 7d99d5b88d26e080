"""The model-option flags shared by `netscope serve` and `netscope load`."""
from __future__ import annotations


# How a model is served (server/models/model_options.py): one flag per option, shared by `serve` and `load`;
# the dests are the options' flat names (the TOML [[models]] keys, Client.load_model's keywords).
MODEL_OPTION_FLAGS = (
    ("--device", dict(help="auto, cpu, cuda or cuda:N (default: the server's, auto)")),
    ("--dtype", dict(help="float32, float16 or bfloat16 (default: the server's, float32)")),
    ("--max-batch-size", dict(type=int, metavar="N", help="dynamic batching: concurrent requests share device "
                                                          "batches of up to N images (default 1: off)")),
    ("--max-delay-ms", dict(type=float, metavar="MS", help="how long a batch may wait to fill (default 0)")),
    ("--max-queue", dict(type=int, metavar="N", help="requests queued for a batch before RESOURCE_EXHAUSTED "
                                                     "(default 256)")),
    ("--channels-last", dict(action="store_true", help="channels-last memory format")),
    ("--compile", dict(metavar="MODE", help="torch.compile Predict's forward at load: default, reduce-overhead "
                                            "(CUDA graphs), max-autotune, max-autotune-no-cudagraphs")),
    ("--compile-batch-sizes", dict(type=int, nargs="+", metavar="N",
                                   help="batch sizes to compile (default 1 and --max-batch-size); others pad up or "
                                        "run eager")),
    ("--device-decode", dict(action="store_true", help="decode JPEGs on the model's device (nvJPEG on CUDA) and "
                                                       "preprocess there")),
    ("--no-pin-memory", dict(dest="pin_memory", action="store_false",
                             help="no pinned host batches / non-blocking copies (CUDA models)")),
    ("--backend", dict(choices=("torch", "onnxruntime"),
                       help="what runs Predict: torch (default) or onnxruntime (exported to ONNX at load and "
                            "checked against the torch module; needs netscope[onnx]); explanations stay on torch")),
)
MODEL_OPTION_NAMES = tuple(kw.get("dest", flag[2:].replace("-", "_")) for flag, kw in MODEL_OPTION_FLAGS)
# Server-wide on `serve` (ServerConfig.device/dtype, the default of every model), per model on `load`.
SERVER_WIDE_OPTIONS = ("device", "dtype")


def add_model_options(parser) -> None:
    """The model-option flags (MODEL_OPTION_FLAGS) on a parser or group; each
    defaults to None, meaning "not given": the server's default applies."""
    for flag, kwargs in MODEL_OPTION_FLAGS:
        parser.add_argument(flag, default=None, **kwargs)


def model_options(args) -> dict:
    """{flat option name: value} of the model-option flags given on the command line."""
    return {name: getattr(args, name) for name in MODEL_OPTION_NAMES if getattr(args, name, None) is not None}
