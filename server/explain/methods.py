"""The registry of explanation methods and the schema of their options.

Each method declares itself once, next to its implementation, with
`register_method` (as torchvision's `register_model`): its family, what it
needs, whether it draws noise, may batch, its cost and the options it uses.
Each option is declared once with `register_option` (here for the options
several methods share, beside its method for an option of its own): type,
default, minimum, the server ceiling that bounds it, choices, description.

Everything else reads them: dispatch and validation (server/explain/),
batching (server/runtime/explain_batching.py: `draws_noise`), the wire
(server/rpc/convert.py: the typed ExplainOptions fields and the generic
`parameters` map), discovery, the CLI and the docs.

Discovery: importing this module imports the implementations
(`_IMPLEMENTATIONS`: server/explain/cams.py, server/explain/attributions.py, and every module
of the package server/explain/cam_methods/, found by a package scan), so a new method
is one new file in server/explain/cam_methods/.
"""
from __future__ import annotations

import importlib
import pkgutil
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import InvalidArgument, closest, closest_metadata, shown

FAMILIES = ("cam", "perturbation_cam", "attribution")
NEEDS = frozenset({"gradients", "layer", "conv_layer", "linear_head"})
# The cost classes, and the forward passes per image each stands for (ExplainStream sizes batches by them).
COSTS = {"cheap": 1, "moderate": 10, "expensive": 100}
TYPES = {"int": int, "float": float, "bool": bool, "str": str}


@dataclass(frozen=True)
class OptionSpec:
    """One explanation option, as a request may set it.

    default None means the method's own default (said in `description`).
    minimum: the least value allowed (inclusive; `exclusive` makes it >).
    ceiling: the name of the server-side ceiling (explain.Ceilings) that
    bounds it from above, or None. within_input: a length in pixels, at most
    the input's shorter side. requires: another option that must be set for
    this one to mean anything. draws_noise: for which values the option makes
    any method draw random noise (so seeded requests never share a batch).
    proto_field: the typed ExplainOptions field that carries it (the generic
    `parameters` map carries every option, these included)."""

    name: str
    type: str  # "int" | "float" | "bool" | "str"
    description: str
    default: Any = None
    minimum: float | None = None
    exclusive: bool = False
    ceiling: str | None = None
    choices: tuple[str, ...] = ()
    within_input: bool = False
    requires: str | None = None
    draws_noise: Callable[[Any], bool] | None = None
    proto_field: str | None = None

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"option {self.name}: type must be one of {', '.join(TYPES)}")


@dataclass(frozen=True)
class MethodSpec:
    """One explanation method.

    fn(model, x, layers, pick, opts) -> maps.Raw: x the preprocessed
    (N, C, H, W) batch, layers the resolved layer names, pick the target
    picker ((N, classes) logits -> (N, k) long), opts an explain.Options.

    needs: "gradients" (a backward pass), "layer" (takes and defaults
    layers), "conv_layer" (that layer's output must be (N, C, H, W)),
    "linear_head" (GAP + one Linear classifier). draws_noise: its answer
    depends on random draws (seeded requests never share a batch). may_batch:
    concurrent requests may share a device batch. forward_only: its batched
    passes keep no autograd graph (working memory: about two layers' outputs
    per input). sampled: its forward passes hold batch_size inputs.
    max_layers: how many layers it explains at once (None: any, fused).
    own_layers: for a method that picks its layers itself (full_grad),
    model -> layer names; a request may not name layers. signed: its maps
    have a meaningful sign (the renderer draws them on a diverging map).
    check(opts, (H, W)): a method-specific check that needs the input size."""

    name: str
    family: str
    description: str
    source: str
    fn: Callable = field(repr=False, compare=False)
    needs: frozenset = frozenset()
    options: tuple[str, ...] = ()
    draws_noise: bool = False
    may_batch: bool = True
    cost: str = "cheap"
    signed: bool = False
    forward_only: bool = False
    sampled: bool = False
    max_layers: int | None = None
    own_layers: Callable | None = field(default=None, repr=False, compare=False)
    check: Callable | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"method {self.name}: family must be one of {', '.join(FAMILIES)}")
        if not set(self.needs) <= NEEDS:
            raise ValueError(f"method {self.name}: unknown needs {sorted(set(self.needs) - NEEDS)}")
        if self.cost not in COSTS:
            raise ValueError(f"method {self.name}: cost must be one of {', '.join(COSTS)}")

    @property
    def takes_layers(self) -> bool:
        return "layer" in self.needs


_OPTIONS: dict[str, OptionSpec] = {}
_METHODS: dict[str, MethodSpec] = {}
_IMPLEMENTATIONS = ("cams", "attributions")
_PACKAGES = ("cam_methods",)
_loaded = False
_load_lock = threading.RLock()  # re-entrant: an implementation asking the registry on import cannot deadlock


def register_option(spec: OptionSpec) -> OptionSpec:
    """Declare an option (once; declaring the same spec again is a no-op)."""
    old = _OPTIONS.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"option {spec.name!r} is declared twice, differently")
    _OPTIONS[spec.name] = spec
    return spec


def register_method(*, name: str, family: str, description: str, source: str, options=(), **fields):
    """Decorator: declare the function below as method `name` (its `fn`).

    options: the names of the options it uses, or OptionSpecs of its own
    (declared here). The other keywords are MethodSpec's."""

    def wrap(fn: Callable) -> Callable:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is declared twice")
        names = []
        for o in options:
            if isinstance(o, OptionSpec):
                register_option(o)
                o = o.name
            if o not in _OPTIONS:
                raise ValueError(f"method {name!r} uses undeclared option {o!r}")
            names.append(o)
        _METHODS[name] = MethodSpec(name=name, family=family, description=description, source=source, fn=fn,
                                    options=tuple(dict.fromkeys(names)), needs=frozenset(fields.pop("needs", ())),
                                    **fields)
        return fn

    return wrap


def _load() -> None:
    """Import every implementation once, so their declarations have run.
    Thread-safe: the server's first concurrent requests all wait for the
    whole registry (marked loaded only when every import is done; before,
    a second caller saw a half-filled registry and got "unknown method")."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        for mod in _IMPLEMENTATIONS:
            importlib.import_module(f"{__package__}.{mod}")
        for pkg in _PACKAGES:
            package = importlib.import_module(f"{__package__}.{pkg}")
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
                importlib.import_module(f"{package.__name__}.{info.name}")
        _loaded = True


def methods() -> dict[str, MethodSpec]:
    """Every method, by name, in declaration order."""
    _load()
    return dict(_METHODS)


def method(name: str | None) -> MethodSpec:
    """The method called `name` (case-insensitive; None or "": the default,
    grad_cam). InvalidArgument (reason METHOD_NOT_FOUND, field "method",
    the closest names) when there is none."""
    _load()
    key = (name or DEFAULT_METHOD).lower()
    spec = _METHODS.get(key)
    if spec is None:
        raise InvalidArgument(f"unknown method {shown(key)}{closest(key, _METHODS)}; choose one of "
                              f"{', '.join(_METHODS)}", reason="METHOD_NOT_FOUND", field="method",
                              metadata=closest_metadata(key, _METHODS))
    return spec


def options() -> dict[str, OptionSpec]:
    """Every option, by name, in declaration order."""
    _load()
    return dict(_OPTIONS)


def option(name: str) -> OptionSpec:
    """The option called `name`; InvalidArgument (reason OPTION_NOT_FOUND,
    field "options.NAME", the closest names) when there is none."""
    _load()
    spec = _OPTIONS.get(name)
    if spec is None:
        raise InvalidArgument(f"unknown option {shown(name)}{closest(name, _OPTIONS)}; known options: "
                              f"{', '.join(_OPTIONS)}", reason="OPTION_NOT_FOUND", field=f"options.{name[:64]}",
                              metadata=closest_metadata(name, _OPTIONS))
    return spec


def users(name: str) -> list[str]:
    """The methods that use option `name`."""
    return [m.name for m in methods().values() if name in m.options]


DEFAULT_METHOD = "grad_cam"

# ---------------------------------------------------------------- options shared by several methods

for _spec in [
    OptionSpec("batch_size", "int", "masked / perturbed / interpolated inputs per forward pass (default 32)",
               minimum=1, ceiling="batch_size", proto_field="batch_size"),
    OptionSpec("steps", "int", "integration steps: integrated_gradients (50), is_cam mask intensities (10)",
               minimum=1, ceiling="steps", proto_field="steps"),
    OptionSpec("baseline", "str", "the reference input: zeros (default), blur, noise or the image's mean",
               choices=("zeros", "blur", "noise", "mean"), draws_noise=lambda v: v == "noise",
               proto_field="baseline"),
    OptionSpec("window", "int", "square window / patch side in pixels (default: 1/8 of the shorter side)",
               minimum=1, within_input=True, proto_field="window"),
    OptionSpec("stride", "int", "occlusion's window stride in pixels (default: half the window)",
               minimum=1, within_input=True, proto_field="stride"),
    OptionSpec("noise_tunnel", "str", "smooth a Captum attribution over noisy copies of the input (NoiseTunnel)",
               choices=("smoothgrad", "smoothgrad_sq", "vargrad"), draws_noise=bool, proto_field="noise_tunnel"),
    OptionSpec("nt_samples", "int", "noise-tunnel samples (default 5, as Captum)", minimum=1,
               ceiling="nt_samples", requires="noise_tunnel", proto_field="nt_samples"),
    OptionSpec("nt_stdev", "float", "noise-tunnel standard deviation in model-input units (default 1.0, as Captum)",
               minimum=0.0, requires="noise_tunnel", proto_field="nt_stdev"),
    OptionSpec("aug_smooth", "bool", "average the map over flips x intensities (0.9, 1, 1.1) of the input",
               default=False, proto_field="aug_smooth"),
    OptionSpec("eigen_smooth", "bool", "first principal component of the weighted activations instead of their sum",
               default=False, proto_field="eigen_smooth"),
    OptionSpec("samples", "int", "noisy / random samples per image (method default: 4, gradient_shap 5, lime 50, "
               "kernel_shap and shapley_value_sampling 25)", minimum=1, ceiling="samples", proto_field="samples"),
    OptionSpec("noise", "float", "standard deviation of the samples' noise in model-input units (0.3; "
               "gradient_shap 0)", minimum=0.0, proto_field="noise"),
    OptionSpec("seed", "int", "seeds the random draws (noise, baselines, random weights) for reproducible maps; "
               "every method accepts it", proto_field="seed"),
]:
    register_option(_spec)
del _spec

# Options every method accepts: a seed changes nothing for a method that draws
# no noise, and sweeps over methods send one seed to all of them.
COMMON_OPTIONS = ("seed",)
