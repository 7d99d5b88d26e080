"""How an explanation is drawn: the sign mode, colormap, opacity and outlier
clipping of a request's RenderOptions, resolved against the method's own
default and checked before any work; then the overlay and heatmap PNGs.

CAMs are non-negative evidence for a class and keep the CAM look ("heat":
min-max stretched onto jet, blended at 0.5 over the whole image). Signed
input attributions (integrated gradients, DeepLIFT, occlusion, ...) are drawn
as Captum's `visualize_image_attr` draws them: centred on zero with a
diverging colormap, outliers clipped, blended as an alpha mask so the photo
shows wherever the attribution is 0 (server/imaging/).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import imaging
from ..errors import InvalidArgument, shown

HEAT = "heat"
AUTO = "auto"
SIGNS = (AUTO, HEAT, *imaging.SIGNS)
HEAT_ALPHA = 0.5  # today's CAM overlay opacity
SIGNED_ALPHA = 0.8  # opacity at the strongest attribution (fading to 0 at none)

# Noise tunnels whose output is non-negative whatever the method's sign.
_NON_NEGATIVE_TUNNELS = ("smoothgrad_sq", "vargrad")


def render_defaults(method: str, noise_tunnel: str = "") -> str:
    """The sign mode "auto" means for `method`: "heat" for the CAM family,
    "all" for attributions whose sign means something (the registry's
    `MethodSpec.signed`), "absolute_value" for the other attributions
    (saliency is |gradient|) and for the smoothgrad_sq / vargrad noise
    tunnels (squares and variances are non-negative). Raises InvalidArgument
    for an unknown method."""
    from . import methods  # the registry; imported late (it imports the implementations)

    spec = methods.method(method)  # unknown: InvalidArgument naming the closest methods
    if spec.family != "attribution":
        return HEAT
    if noise_tunnel in _NON_NEGATIVE_TUNNELS or not spec.signed:
        return "absolute_value"
    return "all"


@dataclass(frozen=True)
class Rendering:
    """A request's rendering, defaults resolved. sign: "heat" or one of
    imaging.SIGNS; alpha in [0, 1]; clip_percentile in [0, 100) (signed modes)."""

    sign: str
    colormap: str
    alpha: float
    clip_percentile: float

    def overlay_png(self, rgb: np.ndarray, values: np.ndarray) -> bytes:
        """(H, W, 3) uint8 RGB and a 2-D float map -> PNG of the map over the
        image; a small image (the 32 px demo) is enlarged for display by a whole
        factor to at least imaging.DISPLAY_MIN_SIDE, pixels as square blocks."""
        if self.sign == HEAT:
            return imaging.encode_png(imaging.for_display(imaging.overlay(rgb, values, self.colormap, self.alpha)))
        return imaging.encode_png(imaging.for_display(imaging.signed_overlay(
            rgb, values, self.sign, self.colormap, self.alpha, clip_percentile=self.clip_percentile)))

    def heatmap_png(self, values: np.ndarray) -> bytes:
        """A 2-D float map -> PNG of the map alone, coloured, enlarged for display as overlay_png is."""
        if self.sign == HEAT:
            return imaging.encode_png(imaging.for_display(imaging.colorize(imaging.to_uint8(values), self.colormap)))
        return imaging.encode_png(imaging.for_display(imaging.signed_heatmap(
            values, self.sign, self.colormap, clip_percentile=self.clip_percentile)))


def resolve(render, method: str, noise_tunnel: str = "") -> Rendering:
    """pb.RenderOptions (or anything with colormap, alpha, sign and
    clip_percentile attributes; HasField for the optional one) for `method`
    -> Rendering. Raises InvalidArgument naming the field: an unknown sign or
    colormap, alpha outside [0, 1], clip_percentile outside [0, 100) or given
    with sign heat."""
    sign = (render.sign or AUTO).lower()
    if sign not in SIGNS:
        raise InvalidArgument(f"render.sign {shown(render.sign)} is not a sign mode; choose one of {', '.join(SIGNS)}",
                              reason="UNKNOWN_SIGN", field="render.sign", metadata={"choices": ",".join(SIGNS)})
    if sign == AUTO:
        sign = render_defaults(method, noise_tunnel)
    has_clip = render.HasField("clip_percentile") if hasattr(render, "HasField") else render.clip_percentile is not None
    clip = float(render.clip_percentile) if has_clip else imaging.DEFAULT_CLIP_PERCENTILE
    if has_clip and sign == HEAT:
        raise InvalidArgument(
            f"render.clip_percentile applies to the signed modes (all, positive, negative, absolute_value); {method} is "
            f"drawn as heat (min-max); leave clip_percentile unset or choose a render.sign",
            reason="OPTION_NOT_USED", field="render.clip_percentile")
    if not (math.isfinite(clip) and 0.0 <= clip < 100.0):
        raise InvalidArgument(f"render.clip_percentile must be a percentage in [0, 100) (default 2); got {clip:g}",
                              field="render.clip_percentile", metadata={"minimum": "0", "below": "100"})
    alpha = float(render.alpha)
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise InvalidArgument(f"render.alpha must be an overlay opacity in [0, 1] (0: the default, {HEAT_ALPHA} for heat, "
                              f"{SIGNED_ALPHA} for the signed modes); got {alpha:g}", field="render.alpha")
    colormap = (render.colormap or "").lower()
    if colormap:
        imaging.colorize(np.zeros((1, 1), np.uint8), colormap)  # unknown: InvalidArgument
    else:
        colormap = "jet" if sign == HEAT else imaging.DEFAULT_SIGN_COLORMAP[sign]
    default_alpha = HEAT_ALPHA if sign == HEAT else SIGNED_ALPHA
    return Rendering(sign, colormap, alpha or default_alpha, clip)  # alpha 0 is "unset" on the wire
