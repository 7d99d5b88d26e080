"""Example images to try without a file of one's own: a few photos that ship
with scikit-image (when installed; the `ui` extra installs it) and digits
drawn here, for the digits demo model. Written once to a folder as PNGs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PHOTOS = ("chelsea", "astronaut", "coffee")  # skimage.data photos that ship with the package (no download)


def digit(d: int, size: int = 64) -> np.ndarray:
    """A white digit drawn on black, (size, size, 3) uint8, centred, about 3/4 of the height."""
    img = Image.new("RGB", (size, size), "black")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=int(size * 0.75))
    box = draw.textbbox((0, 0), str(d), font=font)
    x = (size - (box[2] - box[0])) / 2 - box[0]
    y = (size - (box[3] - box[1])) / 2 - box[1]
    draw.text((x, y), str(d), fill="white", font=font)
    return np.asarray(img)


def write_examples(folder: Path) -> list[str]:
    """PNG files of the examples in `folder` (made if missing); their paths, photos first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images: dict[str, np.ndarray] = {}
    try:
        import skimage.data

        for name in PHOTOS:
            images[name] = getattr(skimage.data, name)()
    except (ImportError, OSError, ValueError):  # no scikit-image, or a photo it would have to download
        pass
    for d in (3, 7):
        images[f"digit_{d}"] = digit(d)
    paths = []
    for name, rgb in images.items():
        path = folder / f"{name}.png"
        if not path.exists():
            Image.fromarray(rgb).save(path)
        paths.append(str(path))
    return paths
