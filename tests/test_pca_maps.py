"""PCA feature maps: the library call against a numpy PCA, one basis across a batch and across calls, the
foreground option, any input size, `visualize --kind pca` (the README's commands) fitting one basis per run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_init_from import readme_commands

from dseqjepa_cli import main
from dseqjepa_hub.application import feature_maps
from dseqjepa_hub.application.feature_maps import layer_features, pca_maps
from dseqjepa_hub.application.loading import load_model
from dseqjepa_hub.regions import extract_regions

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples" / "images").glob("*.jpg"))


@pytest.fixture(scope="module")
def loaded():
    return load_model(None)


@pytest.fixture(scope="module")
def pixels(loaded) -> torch.Tensor:
    return loaded.processor([Image.open(path).convert("RGB") for path in EXAMPLES], return_tensors="pt")["pixel_values"]


def numpy_pca_colors(features: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """An independent reference: SVD of the centred fitted features, the same sign and percentile conventions."""
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    components = vt[:3] * np.sign(vt[:3][np.arange(3), np.abs(vt[:3]).argmax(axis=1)])[:, None]
    fitted = (fit - mean) @ components.T
    low, high = np.quantile(fitted, 0.01, axis=0), np.quantile(fitted, 0.99, axis=0)
    return np.clip(((features - mean) @ components.T - low) / (high - low), 0, 1)


def test_colours_are_the_first_three_principal_components_of_the_batch(loaded, pixels):
    maps = pca_maps(loaded.model, pixels)
    features = layer_features(loaded.model, pixels)[0].double().numpy()  # (B, h, w, D)
    expected = numpy_pca_colors(features, features.reshape(-1, features.shape[-1]))
    assert maps.colors.shape == (*features.shape[:3], 3) and maps.colors.dtype == np.float32
    np.testing.assert_allclose(maps.colors, expected, atol=1e-4)
    assert maps.foreground is None


def test_one_basis_colours_other_images_the_same(loaded, pixels):
    batch = pca_maps(loaded.model, pixels)
    alone = pca_maps(loaded.model, pixels[2:3], basis=batch.basis)
    np.testing.assert_allclose(alone.colors[0], batch.colors[2], atol=1e-5)
    refitted = pca_maps(loaded.model, pixels[2:3])  # its own basis: other colours
    assert np.abs(refitted.colors[0] - batch.colors[2]).max() > 0.1


def test_foreground_fits_and_draws_the_ranked_regions_only(loaded, pixels):
    maps = pca_maps(loaded.model, pixels, foreground=True)
    saliency = loaded.model(pixels, output_saliency=True).saliency
    regions = extract_regions(saliency, min_region_fraction=loaded.model.config.min_region_fraction,
                              num_regions=loaded.model.config.num_regions)
    expected_mask = (regions.masks[:, :-1] & regions.valid[:, :-1, None, None]).any(1).numpy()
    np.testing.assert_array_equal(maps.foreground, expected_mask)
    assert 0 < expected_mask.mean() < 1
    assert not maps.colors[~expected_mask].any()
    features = layer_features(loaded.model, pixels)[0].double().numpy()
    expected = numpy_pca_colors(features, features[expected_mask])
    np.testing.assert_allclose(maps.colors[expected_mask], expected[expected_mask], atol=1e-4)


def test_any_input_size(loaded):
    pixel_values = torch.randn(2, 3, 64, 120)
    maps = pca_maps(loaded.model, pixel_values, layer=-2)
    assert maps.colors.shape == (2, 8, 15, 3) and np.isfinite(maps.colors).all()


def test_visualize_pca_fits_one_basis_for_the_run(tmp_path, monkeypatch):
    """The README's commands; every batch after the first is coloured with the first batch's basis."""
    fits = []
    fit_pca = feature_maps.fit_pca
    monkeypatch.setattr(feature_maps, "fit_pca", lambda features: fits.append(len(features)) or fit_pca(features))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    commands = readme_commands("PCA feature maps")
    for command in commands:
        assert main([*command, "--batch-size", "2"]) == 0, command  # 4 images: two batches
    assert len(fits) == len(commands)  # one fit per run, not per batch
    for folder, foreground, tag in (("pca_maps", False, "pca"), ("pca_foreground", True, "pca-foreground")):
        index = json.loads((tmp_path / folder / f"{tag}.json").read_text())  # the index is named by its options
        assert index["options"] == {"layer": -1, "foreground": foreground}
        assert len(index["images"]) == len(EXAMPLES)
        for entry in index["images"]:
            picture = Image.open(entry["output"])
            assert picture.width > entry["size"][1] * 2  # the image and its map side by side
            assert ("foreground_fraction" in entry) == foreground
