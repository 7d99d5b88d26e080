"""Explanation maps side by side, with the map's value under the cursor.

Gradio's image components show pixels, not the numbers behind them, so each
map is an <img> of the server's overlay PNG carrying the map itself
(`heatmap_upsampled`, float32, the overlay's own (H, W) frame: both are at the
model input's size) as base64 in a data attribute; HOVER_JS, run once on the
page, reads the value under the cursor from it."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass

import numpy as np


@dataclass
class MapCard:
    """One map to show: a method's explanation of one class of the image."""

    method: str
    label: str           # the class explained
    target: int
    probability: float
    overlay_png: bytes
    values: np.ndarray   # (H, W) float32, the overlay's frame
    seconds: float       # wall time of the request, as the viewer saw it
    compute_ms: float    # the server's compute time
    faithfulness: dict | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def card_html(card: MapCard) -> str:
    values = np.ascontiguousarray(card.values, dtype="<f4")
    h, w = values.shape
    lo, hi = float(values.min()), float(values.max())
    faith = ""
    if card.faithfulness:
        faith = "<table class='ns-faith'>" + "".join(
            f"<tr><td>{html.escape(k.replace('_', ' '))}</td><td>{v:.4g}</td></tr>"
            for k, v in card.faithfulness.items()) + "</table>"
    return (
        f"<figure class='ns-card' data-method='{html.escape(card.method)}'>"
        f"<figcaption><b>{html.escape(card.method)}</b> &middot; {html.escape(card.label)} "
        f"(class {card.target}, p={card.probability:.3f})</figcaption>"
        f"<img class='ns-map' alt='{html.escape(card.method)} map of {html.escape(card.label)}' "
        f"src='data:image/png;base64,{_b64(card.overlay_png)}' data-w='{w}' data-h='{h}' "
        f"data-values='{_b64(values.tobytes())}'>"
        f"<div class='ns-readout'>hover over the map for its value (range {lo:.4g} .. {hi:.4g})</div>"
        f"<div class='ns-time'>{card.seconds:.2f} s (server compute {card.compute_ms:.0f} ms)</div>"
        f"{faith}</figure>")


def cards_html(cards: list[MapCard]) -> str:
    if not cards:
        return "<div class='ns-empty'>Choose methods and press Explain.</div>"
    return "<div class='ns-cards'>" + "".join(card_html(c) for c in cards) + "</div>"


CSS = """
.ns-cards { display: flex; flex-wrap: wrap; gap: 16px; }
.ns-card { margin: 0; width: 300px; }
.ns-card figcaption { font-size: 0.9em; margin-bottom: 4px; }
.ns-map { width: 300px; image-rendering: auto; cursor: crosshair; display: block; border-radius: 4px; }
.ns-readout, .ns-time { font-family: var(--font-mono); font-size: 0.8em; }
.ns-faith { font-size: 0.8em; margin-top: 4px; }
.ns-faith td { padding: 0 8px 0 0; border: none; }
"""

# Delegated on the component's root, so it survives each re-render of the cards.
HOVER_JS = """
const cache = new WeakMap();
function valuesOf(img) {
  let v = cache.get(img);
  if (!v) {
    const bin = atob(img.dataset.values);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    v = new Float32Array(bytes.buffer);
    cache.set(img, v);
  }
  return v;
}
element.addEventListener('mousemove', (e) => {
  const img = e.target.closest && e.target.closest('img.ns-map');
  if (!img) return;
  const r = img.getBoundingClientRect();
  const w = +img.dataset.w, h = +img.dataset.h;
  const x = Math.min(w - 1, Math.max(0, Math.floor((e.clientX - r.left) / r.width * w)));
  const y = Math.min(h - 1, Math.max(0, Math.floor((e.clientY - r.top) / r.height * h)));
  const value = valuesOf(img)[y * w + x];
  const out = img.parentElement.querySelector('.ns-readout');
  if (out) out.textContent = `x ${x}, y ${y}: ${value.toPrecision(4)}`;
});
"""
