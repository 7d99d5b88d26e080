"""What each tab shows, from calls to the server through netscope.client
(no Gradio here, so it is plain to read and test). Errors are the client's
NetscopeError (code and the server's message) or a ValueError naming what
to change in the form; the app shows either as a message, never a trace."""
from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from netscope.client import Client, ModelInfo
from netscope.client.server_info import ServerInfo

from . import charts, option_form
from .maps_html import MapCard

TARGETS = ("top-1", "class", "top-k")


def image_bytes(path: str | None) -> bytes:
    """The chosen image file's bytes; ValueError when none is chosen."""
    if not path:
        raise ValueError("choose an image first (upload, drop or pick an example on the One image tab)")
    return Path(path).read_bytes()


def human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}P"


class Viewer:
    """One server, as the page sees it. Thread-safe: the client's channel is."""

    def __init__(self, client: Client):
        self.client = client
        self._info: dict[str, ModelInfo] = {}
        self.server: ServerInfo = client.server_info()

    # ------------------------------------------------------------ models

    def model_ids(self) -> list[str]:
        return [m.model for m in self.client.list_models()]

    def models_rows(self) -> list[list]:
        return [[m.model, m.arch, m.source, m.device, m.dtype, m.num_classes, "yes" if m.pretrained else "no"]
                for m in self.client.list_models()]

    def info(self, model: str) -> ModelInfo:
        if not model:
            raise ValueError("choose a model")
        if model not in self._info:
            self._info[model] = self.client.model_info(model)
        return self._info[model]

    def load(self, model: str, source: str, weights: str) -> ModelInfo:
        """Load `source` as `model` (needs an admin token)."""
        if not model.strip() or not source.strip():
            raise ValueError("give the new model's id and its source (an architecture such as resnet18, "
                             "or a checkpoint in the server's store)")
        info = self.client.load_model(model.strip(), source.strip(), weights=weights.strip())
        self._info[info.model] = info
        return info

    def summary(self, model: str) -> tuple[list[list], str]:
        """The layer table (name, type, output shape, parameters, mult-adds) and a line of totals."""
        m = self.info(model)
        rows = [[("  " * l.depth) + l.name, l.type, "x".join(map(str, l.output_shape)), l.num_parameters,
                 l.mult_adds] for l in m.layers]
        totals = (f"**{m.model}**: {m.arch} ({m.source}{', ' + m.weights if m.weights else ''}) on {m.device}, "
                  f"{m.dtype}; input {'x'.join(map(str, m.input_size))}; {human(m.num_parameters)} parameters, "
                  f"{human(m.mult_adds)} mult-adds; {len(m.class_names)} classes; "
                  f"default CAM layer: `{m.default_cam_layer or '-'}`" + (f"\n\n{m.note}" if m.note else ""))
        return rows, totals

    def layer_choices(self, model: str, *, conv_only: bool = False, with_parameters: bool = False) -> list[tuple]:
        """(label, name) per layer in model order, indented by depth: the layer tree."""
        out = []
        for l in self.info(model).layers:
            if (conv_only and not l.conv) or (with_parameters and not l.num_parameters):
                continue
            shape = "x".join(map(str, l.output_shape))
            out.append(("\u2003" * l.depth + f"{l.name}  ({l.type}, {shape})", l.name))
        return out

    # ------------------------------------------------------------ one image

    def predict(self, model: str, image: str | None, k: int) -> dict[str, float]:
        """{label: probability} of the top-k."""
        pred = self.client.predict(model, image_bytes(image), k=int(k or 5))[0]
        return {f"{s.label} ({s.index})": s.probability for s in pred.top_k}

    # ------------------------------------------------------------ why

    def explain(self, model: str, image: str | None, methods: list[str], target_mode: str, class_name: str,
                top_k: int, faithfulness: bool, option_values: list, progress=None) -> tuple[list[MapCard], list[str]]:
        """One request per method; the maps and the files to download (overlay PNGs, raw maps .npy)."""
        if not methods:
            raise ValueError("choose at least one method")
        data = image_bytes(image)
        target, k = None, 0
        if target_mode == "class":
            if not class_name:
                raise ValueError("type or pick the class to explain")
            target = class_name
        elif target_mode == "top-k":
            k = int(top_k or 0)
            if k < 1:
                raise ValueError("top-k needs k of 1 or more")
        cards: list[MapCard] = []
        out = Path(tempfile.mkdtemp(prefix="netscope-ui-"))
        files = []
        for n, method in enumerate(methods):
            if progress is not None:
                progress(n / len(methods), desc=f"{method} ({n + 1} of {len(methods)})")
            options = option_form.options_for(self.server.options, option_values, method)
            start = time.perf_counter()
            per_image, timing = self.client.explain_timed(model, data, method=method, target=target, top_k=k,
                                                          overlay=True, faithfulness=faithfulness, **options)
            seconds = time.perf_counter() - start
            for c in per_image[0]:
                faith = vars(c.faithfulness) if c.faithfulness is not None else None
                cards.append(MapCard(method, c.label, c.target, c.probability, c.overlay_png, c.heatmap_upsampled,
                                     seconds, timing.compute_ms, faith))
                stem = f"{method}.{c.target}"
                (out / f"{stem}.png").write_bytes(c.overlay_png)
                np.save(out / f"{stem}.npy", c.heatmap)
                np.save(out / f"{stem}.upsampled.npy", c.heatmap_upsampled)
                files += [str(out / f"{stem}.png"), str(out / f"{stem}.npy"), str(out / f"{stem}.upsampled.npy")]
        return cards, files

    # ------------------------------------------------------------ layers

    def feature_maps(self, model: str, image: str | None, layer: str, count: int) -> tuple[list, str]:
        """(PIL image, caption) per channel, the most active first; and a line about the layer."""
        if not layer:
            raise ValueError("pick a layer")
        fm = self.client.feature_maps(model, image_bytes(image), layer, top_channels=int(count or 16))[0][layer]
        if fm.activation is None or fm.activation.ndim - 1 < 2:
            raise ValueError(f"{layer}'s output ({'x'.join(map(str, fm.shape))}) has no spatial maps to show; "
                             "pick a convolutional layer or block")
        act = np.moveaxis(fm.activation, fm.channel_axis, 0)
        tiles = [(_colour(a), f"channel {ch}") for ch, a in zip(fm.channels, act)]
        return tiles, (f"{layer}: output {'x'.join(map(str, fm.shape))}; the {len(tiles)} channels of highest "
                       "mean activation, each scaled to its own range (viridis). Click one to enlarge.")

    def kernels(self, model: str, layer: str) -> Image.Image | None:
        """The server's grid of a conv layer's kernels; None for a layer without kernels."""
        if not layer or not any(l.name == layer and l.conv for l in self.info(model).layers):
            return None
        return Image.open(io.BytesIO(self.client.kernels(model, layer, tensor=False).grid_png))

    # ------------------------------------------------------------ statistics

    def statistics(self, model: str, image: str | None, layers: list[str], target: str):
        """(histogram figure, gradient-flow figure): weights of `layers`, and with an image the
        gradients of one backward pass of the target's logit (default the top-1) over every layer."""
        tgt = (int(target) if target.strip().lstrip("-").isdigit() else target.strip()) if target else None
        images = [image_bytes(image)] if image else None
        result = self.client.layer_stats(model, images=images, target=tgt if images else None)
        picked = [l for l in result.layers if not layers or l.layer in layers]
        hist = charts.histograms(type(result)(picked, result.loss, result.timing))
        flow = charts.gradient_flow(result) if images else None
        return hist, flow


def _colour(a: np.ndarray, size: int = 112) -> Image.Image:
    """A 2-D map scaled to its range, through viridis, nearest-neighbour enlarged to about `size` px."""
    a = np.asarray(a, np.float32)
    a = a.reshape(a.shape[-2:]) if a.ndim > 2 else a
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    norm = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    rgb = (colormaps["viridis"](norm)[..., :3] * 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    scale = max(1, size // max(a.shape))
    return img.resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST)
