"""torch.hub entry points from the checkout: the bundled model and the presets, through the package's one
loader, from a checkout that need not be installed."""

import ast
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch

from dseqjepa_hub import PRESETS, DSeqJEPAModel, default_model_path
from dseqjepa_hub.application.loading import ModelLoadError

REPO = Path(__file__).resolve().parents[1]


def entry_points() -> set[str]:
    """Public callables defined at the top of hubconf.py (what torch.hub.list shows), read from the source."""
    tree = ast.parse((REPO / "hubconf.py").read_text())
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    names |= {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets
              if isinstance(target, ast.Name)}
    return {name for name in names if not name.startswith("_") and name != "dependencies"}


def test_entry_points_are_the_presets_and_the_bundled_model():
    assert entry_points() == {"dseqjepa_default"} | {f"dseqjepa_{name}" for name in PRESETS}


def test_torch_hub_load_the_bundled_model_from_the_checkout():
    model = torch.hub.load(str(REPO), "dseqjepa_default", source="local")
    reference = DSeqJEPAModel.from_pretrained(default_model_path()).eval()
    assert not model.training and type(model).__name__ == "DSeqJEPAModel"
    pixels = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(pixels, output_saliency=True), reference(pixels, output_saliency=True)
    assert torch.equal(ours.last_hidden_state, theirs.last_hidden_state)
    assert torch.equal(ours.saliency, theirs.saliency)


def test_torch_hub_load_a_preset_with_overrides_and_weights(tmp_path):
    model = torch.hub.load(str(REPO), "dseqjepa_vit_tiny_patch16_224", source="local", image_size=32)
    assert (model.config.hidden_size, model.config.num_attention_heads, model.config.image_size) == (192, 3, 32)
    assert model.config.num_hidden_layers == 12 and not model.training
    model.save_pretrained(tmp_path / "tiny")
    again = torch.hub.load(str(REPO), "dseqjepa_vit_tiny_patch16_224", source="local", weights=str(tmp_path / "tiny"))
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(pixels).last_hidden_state, model(pixels).last_hidden_state)
    with pytest.raises(ModelLoadError, match="are not a vit_small_patch16_224 model: hidden_size 192 \\(preset 384\\)"):
        torch.hub.load(str(REPO), "dseqjepa_vit_small_patch16_224", source="local", weights=str(tmp_path / "tiny"))
    with pytest.raises(ModelLoadError, match="come with their own configuration"):
        torch.hub.load(str(REPO), "dseqjepa_vit_tiny_patch16_224", source="local", weights=str(tmp_path / "tiny"),
                       image_size=64)


def test_hubconf_works_from_a_checkout_that_is_not_installed(tmp_path):
    """As DINOv2's hubconf: the package is imported from the checkout torch.hub loads, here a copy of it
    beside no installed distribution (its version then comes from pyproject.toml), and nothing but the
    package (no trainer, no converter, no CLI) is imported."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "dseqjepa_hub", checkout / "dseqjepa_hub", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("hubconf.py", "pyproject.toml"):
        shutil.copy2(REPO / name, checkout / name)
    script = textwrap.dedent(f"""
        import importlib.metadata, sys
        sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in repr(finder)]
        installed = importlib.metadata.version
        def version(name):  # as if the distribution were not installed
            if name == "dseqjepa-hub":
                raise importlib.metadata.PackageNotFoundError(name)
            return installed(name)
        importlib.metadata.version = version
        import torch
        model = torch.hub.load({str(checkout)!r}, "dseqjepa_default", source="local")
        import dseqjepa_hub
        print("FILE", dseqjepa_hub.__file__)
        print("VERSION", dseqjepa_hub.__version__)
        print("LOADED", sorted({{name.split(".")[0] for name, module in sys.modules.items()
                                if module is not None and name.lstrip("_").startswith("dseqjepa")}}))
        with torch.no_grad():
            print("SHAPE", tuple(model(torch.zeros(1, 3, 96, 96), output_saliency=True).saliency.shape))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert lines["FILE"] == str(checkout / "dseqjepa_hub" / "__init__.py")
    assert lines["VERSION"] == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert lines["LOADED"] == "['dseqjepa_hub']"
    assert lines["SHAPE"] == "(1, 12, 12)"
