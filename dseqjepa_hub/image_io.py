"""Safe image loading for every entry point (CLI, examples, training data).

`load_image` turns whatever Pillow can decode into an upright 8-bit RGB image or raises
`ImageLoadError(path, reason)` with a reason a user can act on. Choices:
- EXIF orientation is applied (phones store portraits as rotated landscapes).
- Transparency (RGBA, LA, palette with a transparent colour) is composited over white:
  the colour stored under fully transparent pixels is arbitrary (often black), so dropping
  alpha would show it.
- 16-bit integer images are scaled by 1/257 (0..65535 -> 0..255); 32-bit float images in
  [0, 1] are scaled by 255, other float or integer ranges are min-max normalised.
- ICC colour profiles are not applied (as in transformers and torchvision).
- Images above Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) are refused,
  also between the limit and twice the limit, where Pillow itself only warns.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DSeqJEPAError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)


class ImageLoadError(DSeqJEPAError):
    """One file that could not be turned into an RGB image, and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open `path` as an upright RGB image (see the module docstring for the conversions)."""
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(path, "file not found")
    if not path.is_file():
        raise ImageLoadError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageLoadError(
            path,
            f"refused as a possible decompression bomb ({error}); if you trust this file, "
            "raise PIL.Image.MAX_IMAGE_PIXELS",
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image file that Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated"),
        # some plugins as SyntaxError or ValueError.
        raise ImageLoadError(path, f"truncated or corrupt image data ({error})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited over white."""
    if image.mode == "RGB":
        return image
    if (image.mode == "P" and "transparency" in image.info) or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image), image.mode)).convert("RGB")
    return image.convert("RGB")


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a single-channel 16-bit, 32-bit integer or float array to uint8."""
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        scaled = values / 257.0
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    else:
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    return np.nan_to_num(np.clip(np.round(scaled), 0, 255)).astype(np.uint8)


def find_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a list of image paths.

    Folders are walked recursively for files with an image extension (case-insensitive,
    hidden files and folders skipped), sorted; files named explicitly are kept whatever
    their extension, so that a wrong file is reported by `load_image` instead of vanishing.
    Input order is kept and duplicates are dropped.
    """
    found: dict[Path, None] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path).parts
                if child.is_file() and child.suffix.lower() in IMAGE_EXTENSIONS and not any(
                    part.startswith(".") for part in relative
                ):
                    found.setdefault(child, None)
        else:
            found.setdefault(path, None)
    return list(found)


def load_images(paths: Iterable[str | os.PathLike]) -> tuple[list[tuple[Path, Image.Image]], list[tuple[Path, str]]]:
    """Load many files; returns ([(path, RGB image)], [(path, reason)]) so one bad file never sinks a batch."""
    images, failures = [], []
    for path in paths:
        try:
            images.append((Path(path), load_image(path)))
        except ImageLoadError as error:
            failures.append((error.path, error.reason))
    return images, failures
