"""Safe image loading: every conversion and every bad-file case, each with its message."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dseqjepa_hub.image_io import ImageLoadError, find_images, load_image, load_images, to_rgb

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def two_halves(width=60, height=40) -> Image.Image:
    """Left half red, right half blue: orientation changes are visible."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return Image.fromarray(pixels)


def write_good_jpeg(path: Path) -> Path:
    two_halves().save(path, quality=95)
    return path


def write_truncated_jpeg(path: Path) -> Path:
    source = path.with_name("full_" + path.name)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(source)
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_text(path: Path) -> Path:
    path.write_text("this is not an image\n")
    return path


BAD_FILES = {
    "truncated.jpg": (write_truncated_jpeg, "truncated or corrupt image data"),
    "empty.png": (write_zero_byte, "empty file (0 bytes)"),
    "notes.jpg": (write_text, "not an image file that Pillow can read"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_has_its_message(tmp_path, name):
    write, message = BAD_FILES[name]
    path = write(tmp_path / name)
    with pytest.raises(ImageLoadError) as raised:
        load_image(path)
    assert raised.value.path == path
    assert message in raised.value.reason
    assert str(path) in str(raised.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(tmp_path)


def test_decompression_bomb_refused_by_our_limit_from_the_header(tmp_path):
    path = write_good_jpeg(tmp_path / "big.jpg")  # 60 x 40
    with pytest.raises(ImageLoadError) as raised:
        load_image(path, max_pixels=60 * 40 - 1)
    assert "60 x 40" in raised.value.reason and "--max-pixels" in raised.value.reason
    assert load_image(path, max_pixels=60 * 40).size == (60, 40)


def test_pillows_own_bomb_limit_does_not_refuse_a_large_photo(tmp_path, monkeypatch):
    """Pillow warns at MAX_IMAGE_PIXELS and errors at twice that; a 144 MP panorama is above both."""
    path = write_good_jpeg(tmp_path / "panorama.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60 * 40 // 3)  # the file is 3x Pillow's limit
    assert load_image(path).size == (60, 40)
    assert Image.MAX_IMAGE_PIXELS == 60 * 40 // 3  # restored


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_max_side_decodes_smaller_and_records_the_original_size(tmp_path, suffix):
    path = tmp_path / f"wide{suffix}"
    two_halves(800, 400).save(path)
    image = load_image(path, max_side=100)
    assert max(image.size) <= 100 and image.size[0] == 2 * image.size[1]
    assert image.info["original_size"] == (400, 800)
    pixels = np.asarray(image).astype(int)
    assert np.abs(pixels[25, 10] - RED).max() < 40 and np.abs(pixels[25, 90] - BLUE).max() < 40
    assert load_image(path).info["original_size"] == (400, 800) and load_image(path).size == (800, 400)


def test_original_size_is_as_displayed_after_exif_rotation(tmp_path):
    image = two_halves(80, 40)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).info["original_size"] == (80, 40)
    assert load_image(path, max_side=20).info["original_size"] == (80, 40)


def test_find_images_walks_by_what_pillow_reads_and_says_what_it_skipped(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    two_halves(32, 32).save(root / "icon.ico")
    two_halves(8, 8).save(root / "photo.png")
    (root / "phone.heic").write_bytes(b"x")
    (root / "labels.json").write_text("{}")
    (root / "gone.jpg").symlink_to(root / "nowhere.jpg")
    os.mkfifo(root / "pipe.png")
    found, skipped = find_images([root])
    assert found == [root / "icon.ico", root / "photo.png"]
    reasons = dict(skipped)
    assert set(reasons) == {root / "gone.jpg", root / "phone.heic", root / "pipe.png"}
    assert "dangling" in reasons[root / "gone.jpg"] and "pillow-heif" in reasons[root / "phone.heic"]
    assert "not a regular file" in reasons[root / "pipe.png"]
    assert load_image(root / "icon.ico").size == (32, 32)


def test_exif_orientation_applied(tmp_path):
    image = two_halves()  # stored 60 wide, 40 high
    exif = image.getexif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    loaded = np.asarray(load_image(path)).astype(int)
    assert loaded.shape == (60, 40, 3)
    # The stored left (red) half is on top once rotated clockwise.
    assert np.abs(loaded[5, 20] - RED).max() < 40
    assert np.abs(loaded[55, 20] - BLUE).max() < 40


def test_cmyk_converted(tmp_path):
    path = tmp_path / "cmyk.tif"
    two_halves().convert("CMYK").save(path)  # lossless
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert np.array_equal(np.asarray(loaded), np.asarray(two_halves()))


def test_cmyk_jpeg_converted(tmp_path):
    path = tmp_path / "cmyk.jpg"
    two_halves().convert("CMYK").save(path, quality=95)
    loaded = np.asarray(load_image(path)).astype(int)
    assert np.abs(loaded[20, 5] - RED).max() < 40 and np.abs(loaded[20, 55] - BLUE).max() < 40


def test_sixteen_bit_scaled(tmp_path):
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    loaded = np.asarray(load_image(path))
    assert loaded.shape == (1, 3, 3)
    assert loaded[0, :, 0].tolist() == [0, 100, 255]
    assert (loaded == loaded[..., :1]).all()  # grey


def test_thirty_two_bit_integer_and_float(tmp_path):
    assert np.asarray(to_rgb(Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")))[0, :, 0].tolist() == [0, 255]
    wide = np.array([[-1000, 0, 1000]], dtype=np.int32)  # outside 16 bits: min-max
    assert np.asarray(to_rgb(Image.fromarray(wide, mode="I")))[0, :, 0].tolist() == [0, 128, 255]
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(path)
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 128, 255]
    unbounded = Image.fromarray(np.array([[10.0, 20.0, 30.0]], dtype=np.float32))
    assert np.asarray(to_rgb(unbounded))[0, :, 0].tolist() == [0, 128, 255]


def test_palette_transparency_on_white(tmp_path):
    indices = np.zeros((4, 4), dtype=np.uint8)
    indices[:, 2:] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)  # index 0 (black) transparent
    loaded = np.asarray(load_image(path))
    assert loaded[:, :2].reshape(-1, 3).tolist() == [list(WHITE)] * 8
    assert loaded[:, 2:].reshape(-1, 3).tolist() == [list(RED)] * 8


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_composited_on_white(tmp_path, mode):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 100
    rgba[0, 0, 3] = 255  # opaque
    rgba[0, 1, 3] = 0  # transparent
    rgba[1, :, 3] = 128  # half
    path = tmp_path / f"alpha_{mode}.png"
    Image.fromarray(rgba, mode="RGBA").convert(mode).save(path)
    loaded = np.asarray(load_image(path)).astype(int)
    assert loaded[0, 0].tolist() == [100] * 3
    assert loaded[0, 1].tolist() == [255] * 3
    assert np.abs(loaded[1, 0] - (100 * 128 + 255 * 127) / 255).max() <= 1


def test_grey_and_bilevel_to_rgb(tmp_path):
    for mode in ("L", "1"):
        path = tmp_path / f"grey_{mode}.png"
        Image.new(mode, (3, 2), 1 if mode == "1" else 77).save(path)
        loaded = load_image(path)
        assert loaded.mode == "RGB" and loaded.size == (3, 2)
        assert np.asarray(loaded)[0, 0].tolist() == ([255] * 3 if mode == "1" else [77] * 3)


def test_batch_keeps_good_files_and_lists_failures(tmp_path):
    good = write_good_jpeg(tmp_path / "good.jpg")
    bad = [write(tmp_path / name) for name, (write, _) in sorted(BAD_FILES.items())]
    also_good = tmp_path / "also_good.png"
    two_halves(8, 8).save(also_good)
    images, failures = load_images([good, *bad, also_good])
    assert [path for path, _ in images] == [good, also_good]
    assert all(image.mode == "RGB" for _, image in images)
    assert [path for path, _ in failures] == bad
    for (_, reason), name in zip(failures, sorted(BAD_FILES)):
        assert BAD_FILES[name][1] in reason


def test_find_images_walks_sorted_skips_hidden_keeps_explicit(tmp_path):
    root = tmp_path / "photos"
    (root / "b").mkdir(parents=True)
    (root / ".cache").mkdir()
    for relative in ("b/z.JPG", "b/a.png", "top.webp", "readme.txt", ".hidden.jpg", ".cache/x.png"):
        (root / relative).write_bytes(b"x")
    explicit = tmp_path / "notes.txt"
    explicit.write_text("x")
    found, skipped = find_images([root, explicit, root / "top.webp"])
    assert found == [root / "b/a.png", root / "b/z.JPG", root / "top.webp", explicit]
    assert skipped == []


def write_truncated_qoi(path: Path) -> Path:
    """Pillow's QOI reader raises IndexError on a truncated file."""
    full = path.with_name("full_" + path.name)
    two_halves().save(full, "QOI")
    path.write_bytes(full.read_bytes()[:40])
    return path


def write_dds_of_unknown_pixel_format(path: Path) -> Path:
    """Pillow's DDS reader raises NotImplementedError for a FourCC it has no decoder for."""
    full = path.with_name("full_" + path.name)
    two_halves(64, 64).save(full, "DDS")
    data = bytearray(full.read_bytes())
    data[80:88] = (4).to_bytes(4, "little") + b"ZZZZ"  # pixel format flags: DDPF_FOURCC; FourCC "ZZZZ"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("write, escaped", [(write_truncated_qoi, "IndexError"),
                                            (write_dds_of_unknown_pixel_format, "NotImplementedError")])
def test_nothing_a_pillow_plugin_raises_escapes_the_decoder(tmp_path, write, escaped):
    """The decoding boundary: any exception from Pillow becomes an ImageLoadError naming the file and the
    reason, with the original chained."""
    path = write(tmp_path / f"bad.{write.__name__[-3:]}")
    with pytest.raises(ImageLoadError) as raised:
        load_image(path)
    assert raised.value.path == path and escaped in raised.value.reason
    assert type(raised.value.__cause__).__name__ == escaped


def test_paths_that_cannot_even_be_looked_up(tmp_path):
    for path in (tmp_path / ("x" * 5000), tmp_path / "nul\x00byte.png"):
        with pytest.raises(ImageLoadError):
            load_image(path)


def test_a_tiny_pixel_limit_is_stated_in_pixels(tmp_path):
    two_halves().save(tmp_path / "small.png")
    with pytest.raises(ImageLoadError, match=r"60 x 40 = 2,400 pixels is above the limit of 1 pixels"):
        load_image(tmp_path / "small.png", max_pixels=1)


def test_mpo_photos_are_found_in_folders(tmp_path):
    two_halves().save(tmp_path / "stereo.mpo", "MPO")
    assert find_images([tmp_path]).paths == [tmp_path / "stereo.mpo"]
    assert load_image(tmp_path / "stereo.mpo").size == (60, 40)


def test_float_images_with_extreme_values_become_uint8_without_warnings():
    """A float image whose range overflows float64 arithmetic, or holds NaN or infinities, decodes to
    uint8 quietly (NaN to 0, infinities clipped); numpy's overflow / invalid-cast warnings never reach the console."""
    import warnings

    import numpy as np

    from dseqjepa_hub.image_io import to_uint8

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert to_uint8(np.array([[-1.7e308, 0.0, 1.7e308]])).tolist() == [[0, 128, 255]]
        assert to_uint8(np.array([[np.nan, np.inf, 0.25, 0.5]], dtype=np.float32)).tolist() == [[0, 255, 64, 128]]
