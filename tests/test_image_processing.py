"""The image processors: the PIL backend (`DSeqJEPAImageProcessorPil`) checked against PIL + numpy
by hand, the default torchvision backend (`DSeqJEPAImageProcessor`) against it, and `crop_box`
against where the pixels of the model input really come from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from transformers.image_utils import IMAGENET_DEFAULT_STD as IMAGENET_STD

from dseqjepa_hub import DSeqJEPAConfig
from dseqjepa_hub.image_processing_dseqjepa import DSeqJEPAImageProcessor, DSeqJEPAImageProcessorPil

BACKENDS = [DSeqJEPAImageProcessorPil, DSeqJEPAImageProcessor]
# Statistics other than ImageNet's, in the config as earlier versions wrote them into config.json, so
# that a processor that ignores them there shows it.
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
CONFIG = DSeqJEPAConfig(
    image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    image_mean=MEAN, image_std=STD,
)
# One 8-bit level after normalisation, in the channel with the smallest std.
ONE_LEVEL = 1 / 255 / min(STD) + 1e-6
# How far the two backends may be apart, in 8-bit levels before normalisation. Both resample
# bicubic with antialiasing, but torchvision's two passes round differently from Pillow's on some
# shapes (seen: up to 7 levels on high-frequency noise in tall images, never more than 0.32 levels
# on average; photos within 1 level). A different filter is far off: bilinear or Lanczos in one
# backend alone puts them 1.1 levels or more apart on average, nearest 17.
MAX_LEVELS, MEAN_LEVELS = 8, 0.5


def noise_image(height: int, width: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """Smooth colour gradients plus noise: resampling changes it, in ways a wrong filter shows."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    smooth = np.stack([xs * 255 / max(width - 1, 1), ys * 255 / max(height - 1, 1), (xs + ys) % 64 * 4], axis=-1)
    pixels = np.clip(smooth + rng.normal(0, 25, smooth.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def normalise(pixels: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float64, by hand."""
    return ((pixels.astype(np.float64) / 255 - np.array(mean)) / np.array(std)).transpose(2, 0, 1)


def levels_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| of normalised (B, 3, H, W) pixel values, in 8-bit levels of the original image."""
    return np.abs(a.astype(np.float64) - b) * np.array(STD)[None, :, None, None] * 255


def pixel_values(processor, image, return_tensors="np") -> np.ndarray:
    values = processor(image, return_tensors=return_tensors)["pixel_values"]
    return values.numpy() if isinstance(values, torch.Tensor) else values


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_shape_and_dtype(backend):
    processor = backend.from_model_config(CONFIG)
    images = [noise_image(40, 50), noise_image(60, 20, mode="L"), noise_image(33, 45, mode="RGBA"),
              np.asarray(noise_image(21, 17))]
    batch = processor(images, return_tensors="pt")
    assert list(batch) == ["pixel_values"]
    assert isinstance(batch["pixel_values"], torch.Tensor)
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    as_numpy = processor(images, return_tensors="np")["pixel_values"]
    assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == (4, 3, 32, 32) and as_numpy.dtype == np.float32
    np.testing.assert_allclose(as_numpy, batch["pixel_values"].numpy(), rtol=0, atol=1e-6)
    cropping = backend.from_model_config(CONFIG, center_crop=True)
    assert cropping(images, return_tensors="pt")["pixel_values"].shape == (4, 3, 32, 32)
    # The defaults without a config: 224 x 224, ImageNet statistics.
    plain = backend()
    assert pixel_values(plain, images[0]).shape == (1, 3, 224, 224)
    assert (list(plain.image_mean), list(plain.image_std)) == (IMAGENET_MEAN, IMAGENET_STD)


def test_pil_backend_is_a_bicubic_pil_resize_then_normalisation():
    """The PIL processor equals PIL's own bicubic resize (and centre crop) followed by x / 255,
    minus the config's mean, over its std, channels first: recomputed in numpy."""
    image = noise_image(300, 451)
    direct = DSeqJEPAImageProcessorPil.from_model_config(CONFIG)
    expected = normalise(np.asarray(image.resize((32, 32), Image.BICUBIC)))
    np.testing.assert_allclose(pixel_values(direct, image)[0], expected, rtol=0, atol=1e-5)

    # Centre crop: the shorter side to round(32 * 8 / 7) = 37, the longer to int(37 * 451 / 300) = 55,
    # then the middle 32 x 32: columns 11..43, rows 2..34.
    cropping = DSeqJEPAImageProcessorPil.from_model_config(CONFIG, center_crop=True)
    assert cropping.size["shortest_edge"] == 37 and (cropping.crop_size["height"], cropping.crop_size["width"]) == (32, 32)
    resized = image.resize((55, 37), Image.BICUBIC)
    expected = normalise(np.asarray(resized)[2:34, 11:43])
    np.testing.assert_allclose(pixel_values(cropping, image)[0], expected, rtol=0, atol=1e-5)
    # crop_box: that window in original pixels, (11 * 451 / 55, 2 * 300 / 37, 43 * 451 / 55, 34 * 300 / 37) rounded.
    assert cropping.crop_box(original_size=(300, 451)) == (90, 16, 353, 276)
    assert direct.crop_box(original_size=(300, 451)) == (0, 0, 451, 300)


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalisation_uses_the_config_statistics(backend):
    """An image already at the input size is not resampled: the output is the normalisation alone."""
    processor = backend.from_model_config(CONFIG)
    assert (list(processor.image_mean), list(processor.image_std)) == (MEAN, STD)
    image = noise_image(32, 32, seed=1)
    np.testing.assert_allclose(pixel_values(processor, image)[0], normalise(np.asarray(image)), rtol=0, atol=1e-5)
    # Switched off piece by piece: no normalisation, then no rescaling either.
    raw = backend.from_model_config(CONFIG, do_normalize=False)
    np.testing.assert_allclose(pixel_values(raw, image)[0], np.asarray(image).transpose(2, 0, 1) / 255, atol=1e-6)
    unscaled = backend.from_model_config(CONFIG, do_normalize=False, do_rescale=False)
    np.testing.assert_allclose(pixel_values(unscaled, image)[0], np.asarray(image).transpose(2, 0, 1), atol=1e-4)


def coordinate_ramp(height: int, width: int) -> Image.Image:
    """Red = x, green = y (in pixels; up to 256): linear, so resampling keeps it (away from the edges)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = np.arange(width)[None, :]
    pixels[..., 1] = np.arange(height)[:, None]
    return Image.fromarray(pixels)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "height, width, shortest_edge, crop",
    [(150, 200, 37, 32), (200, 150, 40, 32), (100, 201, 50, 43), (101, 99, 70, 63), (120, 120, 64, 57)],
)
def test_crop_box_is_where_the_input_pixels_come_from(backend, height, width, shortest_edge, crop):
    """On a ramp image every output pixel says which original pixel it was sampled at; the
    output's pixel centres must spread evenly over crop_box, to within one original pixel."""
    processor = backend(
        size={"shortest_edge": shortest_edge}, crop_size={"height": crop, "width": crop}, do_center_crop=True,
        do_normalize=False, do_rescale=False,
    )
    out = pixel_values(processor, coordinate_ramp(height, width))[0].astype(np.float64)  # (3, crop, crop)
    x0, y0, x1, y1 = processor.crop_box(original_size=(height, width))
    centres = (np.arange(crop) + 0.5) / crop
    inner = slice(2, -2)  # the filter sees past the crop's edge but not past the image's
    seen_x = out[0, crop // 2, inner]
    seen_y = out[1, inner, crop // 2]
    np.testing.assert_allclose(seen_x, (x0 + centres * (x1 - x0) - 0.5)[inner], rtol=0, atol=1.0)
    np.testing.assert_allclose(seen_y, (y0 + centres * (y1 - y0) - 0.5)[inner], rtol=0, atol=1.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("height, width", [(39, 47), (40, 48), (41, 33), (32, 32)])
def test_crop_box_without_resize_is_exact(backend, height, width):
    """No resize: the model input is exactly the crop_box window of the image (odd margins too)."""
    pixels = np.asarray(noise_image(height, width, seed=2))
    processor = backend(do_resize=False, do_center_crop=True, crop_size={"height": 32, "width": 32},
                        image_mean=MEAN, image_std=STD)
    x0, y0, x1, y1 = processor.crop_box(original_size=(height, width))
    assert (x1 - x0, y1 - y0) == (32, 32)
    assert (x0, y0) == ((width - 32) // 2, (height - 32) // 2)
    np.testing.assert_allclose(
        pixel_values(processor, Image.fromarray(pixels))[0], normalise(pixels[y0:y1, x0:x1]), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("height", [20, 21])  # 21: an odd padding, where the two backends differ by a row
@pytest.mark.parametrize("backend", BACKENDS)
def test_crop_box_when_the_crop_is_larger_than_the_image(backend, height):
    pixels = np.asarray(noise_image(height, 50, seed=3))
    processor = backend(do_resize=False, do_center_crop=True, crop_size={"height": 32, "width": 32},
                        do_normalize=False)
    out = pixel_values(processor, Image.fromarray(pixels))[0]
    assert out.shape == (3, 32, 32)
    # The model input is the crop_box window of the image, zero outside the image (any box that
    # reaches past the edges is fine: region_dicts clips such boxes).
    x0, y0, x1, y1 = processor.crop_box(original_size=(height, 50))
    padded = np.zeros((height + 64, 50 + 64, 3), dtype=np.uint8)
    padded[32 : 32 + height, 32:82] = pixels
    window = padded[y0 + 32 : y1 + 32, x0 + 32 : x1 + 32]
    assert window.shape == (32, 32, 3)
    np.testing.assert_allclose(out, window.transpose(2, 0, 1) / 255, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grey_and_transparent_images_become_rgb(backend):
    processor = backend.from_model_config(CONFIG)
    # Grey ("L", and with alpha "LA" fully opaque): the grey level in each channel, normalised per channel.
    grey = noise_image(32, 32, seed=4, mode="L")
    level = np.asarray(grey)
    expected = normalise(np.repeat(level[..., None], 3, axis=-1))
    np.testing.assert_allclose(pixel_values(processor, grey)[0], expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(pixel_values(processor, grey.convert("LA"))[0], expected, rtol=0, atol=1e-5)

    # RGBA: composited on white. Left third transparent, middle half-transparent, right opaque.
    colour = np.asarray(noise_image(32, 32, seed=5)).astype(np.float64)
    alpha = np.zeros((32, 32), dtype=np.uint8)
    alpha[:, 11:22] = 128
    alpha[:, 22:] = 255
    rgba = Image.fromarray(np.dstack([colour.astype(np.uint8), alpha]), mode="RGBA")
    out = pixel_values(processor, rgba)[0]
    weight = alpha[..., None] / 255
    composite = colour * weight + 255 * (1 - weight)
    np.testing.assert_allclose(out[:, :, :11], normalise(np.full((32, 11, 3), 255)), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out[:, :, 22:], normalise(colour[:, 22:]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out[:, :, 11:22], normalise(composite[:, 11:22]), rtol=0, atol=ONE_LEVEL)


def test_backends_agree():
    """Same settings, any mode and geometry: within MAX_LEVELS everywhere, MEAN_LEVELS on average."""
    images = [noise_image(300, 451, seed=6), noise_image(97, 61, seed=7), noise_image(20, 24, seed=8),
              noise_image(103, 27, seed=9), noise_image(64, 80, seed=9, mode="L"),
              noise_image(45, 45, seed=10, mode="RGBA")]
    for kwargs in ({}, {"center_crop": True}):
        pil = DSeqJEPAImageProcessorPil.from_model_config(CONFIG, **kwargs)
        torchvision = DSeqJEPAImageProcessor.from_model_config(CONFIG, **kwargs)
        for image in images:
            a, b = pixel_values(pil, image), pixel_values(torchvision, image)
            assert a.shape == b.shape == (1, 3, 32, 32)
            apart = levels_apart(a, b)
            assert apart.max() <= MAX_LEVELS and apart.mean() <= MEAN_LEVELS, (image.size, image.mode, kwargs)


def test_backends_agree_on_photos():
    skimage_data = pytest.importorskip("skimage.data")
    for name in ("astronaut", "chelsea", "coffee"):
        image = Image.fromarray(getattr(skimage_data, name)())
        for kwargs in ({}, {"center_crop": True}):
            a = pixel_values(DSeqJEPAImageProcessorPil.from_model_config(CONFIG, **kwargs), image)
            b = pixel_values(DSeqJEPAImageProcessor.from_model_config(CONFIG, **kwargs), image)
            apart = levels_apart(a, b)
            assert apart.max() <= MAX_LEVELS and apart.mean() <= MEAN_LEVELS, (name, kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_save_and_load_round_trip(backend, tmp_path):
    processor = backend.from_model_config(CONFIG, center_crop=True)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == MEAN and saved["image_std"] == STD
    assert saved["size"] == {"shortest_edge": 37} and saved["crop_size"] == {"height": 32, "width": 32}
    assert saved["do_center_crop"] is True and saved["resample"] == int(Image.BICUBIC)
    assert saved["auto_map"]["AutoImageProcessor"] == f"image_processing_dseqjepa.{backend.__name__}"

    image = noise_image(300, 451, seed=11)
    expected = pixel_values(processor, image)
    reloaded = backend.from_pretrained(tmp_path)
    assert type(reloaded) is backend
    assert reloaded.to_dict() == processor.to_dict()
    assert reloaded.crop_box(original_size=(300, 451)) == processor.crop_box(original_size=(300, 451))
    np.testing.assert_array_equal(pixel_values(reloaded, image), expected)

    # Through the Auto class, either backend, from the same file.
    for name, other in (("pil", DSeqJEPAImageProcessorPil), ("torchvision", DSeqJEPAImageProcessor)):
        auto = AutoImageProcessor.from_pretrained(tmp_path, backend=name)
        assert type(auto) is other
        assert (list(auto.image_mean), list(auto.image_std), auto.size["shortest_edge"]) == (MEAN, STD, 37)
        apart = levels_apart(pixel_values(auto, image), expected)
        assert apart.max() <= MAX_LEVELS and apart.mean() <= MEAN_LEVELS
