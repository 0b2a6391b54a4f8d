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
- A decompression-bomb limit of our own, `max_pixels` (default 250 MP, above a 200 MP phone
  photo; `--max-pixels` in the CLI), checked from the header before any pixel is decoded.
  Pillow's own limit (89 MP warning, 179 MP error) is not used: it refuses real panoramas.
- `max_side` decodes large photos economically: JPEGs at 1/2, 1/4 or 1/8 scale inside the
  decoder (draft mode), other formats reduced right after decoding, to at most `max_side`
  pixels a side. The model needs a few hundred pixels; a 24 MP JPEG then costs ~1/16 of
  its full-size memory. `image.info["original_size"]` keeps the (height, width) on disk.

`find_images` walks folders by what the loader can read: the extensions of Pillow's readers
(`image_extensions()`: .ico and .avif included), and says why everything else it passes over
was skipped (dangling links, special files, photo formats Pillow has no plugin for).
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DSeqJEPAError

DEFAULT_MAX_PIXELS = 250_000_000
# Photo formats people keep in image folders that Pillow cannot read without a plugin.
NEEDS_PLUGIN = {
    ".heic": "pillow-heif", ".heif": "pillow-heif", ".jxl": "pillow-jxl-plugin",
    ".cr2": "rawpy", ".cr3": "rawpy", ".nef": "rawpy", ".arw": "rawpy", ".dng": "rawpy",
    ".orf": "rawpy", ".raf": "rawpy", ".rw2": "rawpy",
}
_MAX_PIXELS_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is global: lift it for one open at a time


class ImageLoadError(DSeqJEPAError):
    """One file that could not be turned into an RGB image, and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def load_image(
    path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> Image.Image:
    """Open `path` as an upright RGB image (see the module docstring for the conversions).

    `max_pixels`: refuse larger images (None: no limit); `max_side`: decode at most this many
    pixels a side, keeping the aspect ratio (None: full size).
    """
    path = Path(path)
    try:
        status = path.stat()
    except (OSError, ValueError) as error:  # missing, a dangling link, a name too long or holding a NUL byte
        raise ImageLoadError(path, "file not found" if isinstance(error, FileNotFoundError) else str(error)) from error
    if not stat.S_ISREG(status.st_mode):
        raise ImageLoadError(path, "not a regular file")
    if status.st_size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    return _decode(path, path, max_pixels, max_side)


def load_image_bytes(
    data: bytes, name: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> Image.Image:
    """`load_image` for an encoded image held in memory (a data set's row), named `name` in errors."""
    if not data:
        raise ImageLoadError(Path(name), "empty image data (0 bytes)")
    return _decode(io.BytesIO(data), Path(name), max_pixels, max_side)


def _decode(source, path: Path, max_pixels: int | None, max_side: int | None) -> Image.Image:
    """Decode `source` (a path or a binary file object) as `load_image` says; errors name `path`."""
    try:
        with _MAX_PIXELS_LOCK:
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own limit, below
            try:
                image = Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
        with image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageLoadError(
                    path,
                    f"{width} x {height} = {_pixels(width * height)} is above the limit of "
                    f"{_pixels(max_pixels)} (a guard against decompression bombs); if you trust "
                    "this file, raise it (--max-pixels)",
                )
            if max_side is not None and max(width, height) > max_side:
                image.draft("RGB", _fit(width, height, max_side))  # JPEG: decode at a reduced scale
            image.load()
            if max_side is not None and max(image.size) > max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
            rgb = to_rgb(ImageOps.exif_transpose(image))
    except ImageLoadError:
        raise
    except UnidentifiedImageError as error:
        raise ImageLoadError(path, "not an image file that Pillow can read") from error
    except MemoryError as error:
        raise ImageLoadError(path, "decoding it needs more memory than this machine has") from error
    except Exception as error:  # noqa: BLE001 -- the decoding boundary: nothing a plugin raises escapes it
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated"); its plugins
        # also raise SyntaxError, ValueError, IndexError (a truncated QOI), NotImplementedError (a DDS
        # pixel format it has no decoder for), struct.error, ZeroDivisionError...
        raise ImageLoadError(path, f"truncated or corrupt image data ({type(error).__name__}: {error})") from error
    rotated = rgb.size != image.size
    rgb.info["original_size"] = (width, height) if rotated else (height, width)  # (H, W) as displayed
    return rgb


def _pixels(count: int) -> str:
    """A pixel count in words: whole megapixels from 10 MP up, else exactly (1 pixel is not "0 MP")."""
    return f"{count / 1e6:.0f} MP" if count >= 10_000_000 else f"{count:,} pixels"


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


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
        return Image.fromarray(to_uint8(np.asarray(image))).convert("RGB")
    return image.convert("RGB")


def to_uint8(values: np.ndarray) -> np.ndarray:
    """An image array as uint8: uint8 as it is, integers within 16 bits divided by 257, floats within
    [0, 1] times 255, any other range stretched from its finite minimum to its maximum (NaN -> 0,
    infinities clipped)."""
    if values.dtype == np.uint8:
        return values
    integers = np.issubdtype(values.dtype, np.integer)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and infinities are handled below, not warned about
        values = values.astype(np.float64)
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if integers and low >= 0 and high <= 65535:
            scaled = values / 257.0
        elif not integers and low >= 0 and high <= 1:
            scaled = values * 255.0
        else:
            half_span = high / 2 - low / 2  # halves: a range as wide as float64's own does not overflow
            scaled = (values / 2 - low / 2) / half_span * 255.0 if high > low else np.zeros_like(values)
        return np.nan_to_num(np.clip(np.round(scaled), 0, 255)).astype(np.uint8)


@cache
def image_extensions() -> frozenset[str]:
    """File extensions (lower case, with the dot) of every format Pillow can open here."""
    Image.init()
    # MPO (multi-picture JPEG, .mpo) has no reader of its own: the JPEG reader opens it.
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN or fmt == "MPO")


class FoundImages(NamedTuple):
    paths: list[Path]
    skipped: list[tuple[Path, str]]  # (path, why) for what a folder walk passed over, other than non-images


def find_images(inputs: Iterable[str | os.PathLike]) -> FoundImages:
    """Expand files and folders into image paths, and say what was skipped.

    Folders are walked recursively (sorted; hidden files and folders skipped) for files whose
    extension a Pillow reader claims (`image_extensions()`, case-insensitive). Skipped with a
    reason: dangling links, special files (FIFOs, sockets, devices) and photo formats that need
    a plugin (`NEEDS_PLUGIN`); other files (text, JSON...) are passed over silently. Files named
    explicitly are kept whatever they are, so that a wrong file is reported by `load_image`
    instead of vanishing. Input order is kept and duplicates are dropped.
    """
    found: dict[Path, None] = {}
    skipped: list[tuple[Path, str]] = []
    readable = image_extensions()
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            found.setdefault(path, None)
            continue
        for child in sorted(path.rglob("*")):
            if any(part.startswith(".") for part in child.relative_to(path).parts) or child.is_dir():
                continue
            suffix = child.suffix.lower()
            if not child.exists():
                skipped.append((child, "dangling symbolic link"))
            elif not stat.S_ISREG(child.stat().st_mode):
                skipped.append((child, "not a regular file (FIFO, socket or device)"))
            elif suffix in readable:
                found.setdefault(child, None)
            elif suffix in NEEDS_PLUGIN:
                skipped.append((child, f"Pillow cannot read {suffix} files without a plugin ({NEEDS_PLUGIN[suffix]})"))
    return FoundImages(list(found), skipped)


def load_images(
    paths: Iterable[str | os.PathLike], **options
) -> tuple[list[tuple[Path, Image.Image]], list[tuple[Path, str]]]:
    """Load many files (`options` as `load_image`'s); returns ([(path, RGB image)], [(path, reason)]),
    so one bad file never sinks a batch."""
    images, failures = [], []
    for path in paths:
        try:
            images.append((Path(path), load_image(path, **options)))
        except ImageLoadError as error:
            failures.append((error.path, error.reason))
    return images, failures
