"""The Statistics tab's charts, drawn with matplotlib (its object API, no
pyplot state, so concurrent requests do not share a figure).

`histograms`: per layer, its weight histogram and, when images were sent,
its gradient histogram (the server's bins). `gradient_flow`: the classic
plot for vanishing / exploding gradients, across layers in model order: the
root-mean-square gradient of each layer's parameters (l2 norm / sqrt(count),
the typical size of one element's gradient) and the largest |gradient|, on a
log scale."""
from __future__ import annotations

import math

from matplotlib.figure import Figure

from netscope.client import LayerStats, LayerStatsResult


def _bars(ax, stats, title: str, color: str) -> None:
    edges, counts = stats.hist_edges, stats.hist_counts
    if len(edges) >= 2 and len(counts):
        ax.bar(edges[:-1], counts, width=edges[1:] - edges[:-1], align="edge", color=color)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def histograms(result: LayerStatsResult, max_layers: int = 8) -> Figure:
    """One row per layer (the first `max_layers`): weights left, gradients right."""
    layers = [l for l in result.layers if l.parameters][:max_layers]
    with_grad = any(p.grad is not None for l in layers for p in l.parameters)
    cols = 2 if with_grad else 1
    fig = Figure(figsize=(4.2 * cols, 1.9 * max(1, len(layers))), layout="constrained")
    axes = fig.subplots(max(1, len(layers)), cols, squeeze=False)
    for row, layer in zip(axes, layers):
        p = layer.parameters[0]  # the weight (or the first parameter the layer has)
        _bars(row[0], p.value, f"{layer.layer}.{p.name}: values", "#4c72b0")
        if with_grad:
            if p.grad is not None:
                _bars(row[1], p.grad, f"{layer.layer}.{p.name}: gradients", "#dd8452")
            else:
                row[1].set_axis_off()
    return fig


def flow_values(layer: LayerStats) -> tuple[float, float] | None:
    """(RMS gradient, max |gradient|) over the layer's parameters; None without gradients."""
    grads = [(p.count, p.grad) for p in layer.parameters if p.grad is not None and p.count]
    if not grads:
        return None
    sq = sum(g.l2_norm ** 2 for _, g in grads)
    count = sum(n for n, _ in grads)
    return math.sqrt(sq / count), max(max(abs(g.min), abs(g.max)) for _, g in grads)


def gradient_flow(result: LayerStatsResult) -> Figure:
    """RMS and max |gradient| per layer, model order, log scale."""
    names, rms, peak = [], [], []
    for layer in result.layers:
        v = flow_values(layer)
        if v is not None:
            names.append(layer.layer)
            rms.append(v[0])
            peak.append(v[1])
    fig = Figure(figsize=(max(6.0, 0.22 * len(names) + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    x = range(len(names))
    ax.bar(x, peak, color="#c6dbef", label="max |gradient|")
    ax.bar(x, rms, color="#2171b5", label="RMS gradient")
    ax.set_yscale("log")
    ax.set_xticks(list(x), names, rotation=90, fontsize=6)
    ax.set_ylabel("gradient (log scale)")
    ax.set_title("gradient flow, input to output", fontsize=10)
    ax.legend(fontsize=8)
    return fig
