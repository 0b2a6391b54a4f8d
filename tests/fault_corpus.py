"""A corpus of odd, damaged and hostile image files, made by the tests (nothing is committed).

`make_corpus(folder)` writes about 50 files and returns what each must become:
("good", None), ("bad", fragment of the reason `load_image` gives) or ("skipped", fragment of
the reason `find_images` gives). Good files cover every mode and container the loader converts;
bad ones every way a file can be damaged; skipped ones what a folder walk passes over.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A smooth colour field with a bright disc: something for the model to rank."""
    y, x = np.mgrid[:height, :width]
    rng = np.random.default_rng(seed)
    pixels = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 90)], -1)
    cy, cx, r = height * rng.uniform(0.3, 0.7), width * rng.uniform(0.3, 0.7), min(width, height) / 4
    pixels[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = (250, 240, 60)
    return Image.fromarray(pixels.astype(np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path: Path, side: int = 30_000) -> None:
    """A valid PNG header declaring side x side pixels, with a few bytes of data."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side * 3 + 1) * 2)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows)
                     + _png_chunk(b"IEND", b""))


def make_corpus(folder: Path) -> dict[str, tuple[str, str | None]]:
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, tuple[str, str | None]] = {}

    def good(name: str, image: Image.Image, **save) -> None:
        image.save(folder / name, **save)
        expected[name] = ("good", None)

    photo = _photo()
    good("rgb.jpg", photo, quality=90)
    good("progressive.jpg", photo, quality=90, progressive=True)
    good("cmyk.jpg", photo.convert("CMYK"))
    good("upper.JPG", _photo(seed=1))
    good("grey.png", photo.convert("L"))
    good("grey_alpha.png", photo.convert("LA"))
    rgba = photo.convert("RGBA")
    alpha = np.full((48, 64), 255, np.uint8)
    alpha[:, :20] = 0  # fully transparent strip over whatever colour is stored there
    rgba.putalpha(Image.fromarray(alpha))
    good("transparent.png", rgba)
    good("palette.png", photo.convert("P"))
    good("palette_transparent.png", photo.convert("P"), transparency=0)
    good("grey16.png", Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257))
    good("int32.tif", Image.fromarray(np.asarray(photo.convert("L")).astype(np.int32) * 1000))
    good("float01.tif", Image.fromarray(np.asarray(photo.convert("L")).astype(np.float32) / 255))
    good("float_range.tif", Image.fromarray(np.asarray(photo.convert("L")).astype(np.float32) * 7 - 300))
    good("bilevel.bmp", photo.convert("1"))
    good("plain.bmp", photo)
    good("frames.gif", photo.convert("P"), save_all=True, append_images=[_photo(seed=2).convert("P")])
    good("lossy.webp", photo, quality=80)
    good("lossless_alpha.webp", rgba, lossless=True)
    good("still.avif", photo)
    good("icon.ico", _photo(32, 32))
    good("targa.tga", photo)
    good("pixmap.ppm", photo)
    good("greymap.pgm", photo.convert("L"))
    good("bitmap.pbm", photo.convert("1"))
    good("pages.tif", photo, save_all=True, append_images=[_photo(seed=3)])
    good("one_pixel.png", Image.new("RGB", (1, 1), (200, 10, 10)))
    good("thin_tall.png", _photo(2, 300))
    good("thin_wide.png", _photo(300, 2))
    good("jpeg_named.png", photo, format="JPEG")
    for orientation in range(2, 9):
        exif = photo.getexif()
        exif[0x0112] = orientation
        good(f"exif{orientation}.jpg", photo, exif=exif)

    def bad(name: str, data: bytes, reason: str) -> None:
        (folder / name).write_bytes(data)
        expected[name] = ("bad", reason)

    jpeg = (folder / "rgb.jpg").read_bytes()
    png = (folder / "plain.bmp").read_bytes()
    for fraction in (0.1, 0.5, 0.9):
        bad(f"truncated_{int(fraction * 100)}.jpg", jpeg[: int(len(jpeg) * fraction)], "truncated or corrupt")
    bad("truncated.bmp", png[: len(png) // 2], "truncated or corrupt")
    bad("empty.jpg", b"", "empty file (0 bytes)")
    bad("empty.webp", b"", "empty file (0 bytes)")
    bad("text.jpg", b"this is not an image\n", "not an image file that Pillow can read")
    bad("noise.png", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "not an image file that Pillow can read")
    bad("page.jpg", b"<!DOCTYPE html><html><body>404</body></html>", "not an image file that Pillow can read")
    png_bytes = (folder / "grey.png").read_bytes()
    bad("bad_crc.png", png_bytes[:40] + bytes([png_bytes[40] ^ 0xFF]) + png_bytes[41:], "not an image file that Pillow can read")
    _bomb_png(folder / "bomb.png")
    expected["bomb.png"] = ("bad", "above the limit")

    (folder / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic")
    expected["phone.heic"] = ("skipped", "pillow-heif")
    (folder / "gone.jpg").symlink_to(folder / "deleted.jpg")
    expected["gone.jpg"] = ("skipped", "dangling symbolic link")
    os.mkfifo(folder / "pipe.png")
    expected["pipe.png"] = ("skipped", "not a regular file")
    (folder / "notes.txt").write_text("not an image, not reported")
    return expected
