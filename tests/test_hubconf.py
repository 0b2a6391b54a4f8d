"""torch.hub entry points from the checkout: the bundled model and the presets, importing only the core."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dseqjepa_hub import PRESETS, DSeqJEPAModel, default_model_path

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
    with pytest.raises(ValueError, match="are not a vit_small_patch16_224 model: hidden_size 192 \\(preset 384\\)"):
        torch.hub.load(str(REPO), "dseqjepa_vit_small_patch16_224", source="local", weights=str(tmp_path / "tiny"))
    with pytest.raises(ValueError, match="come with their own configuration"):
        torch.hub.load(str(REPO), "dseqjepa_vit_tiny_patch16_224", source="local", weights=str(tmp_path / "tiny"),
                       image_size=64)


def test_hubconf_imports_only_the_model_core(tmp_path):
    """As DINOv2's hubconf: neither the package's __init__ (Auto-class registration, pipelines) nor any
    module around the core runs, and the checkout works where the package is not installed."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["dseqjepa_hub"] = None  # as if the package were not installed
        import torch
        model = torch.hub.load({str(REPO)!r}, "dseqjepa_default", source="local")
        loaded = sorted(name for name, module in sys.modules.items()
                        if module is not None and name.lstrip("_").startswith("dseqjepa"))
        print("LOADED", loaded)
        with torch.no_grad():
            print("SHAPE", tuple(model(torch.zeros(1, 3, 96, 96), output_saliency=True).saliency.shape))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = next(line for line in done.stdout.splitlines() if line.startswith("LOADED"))
    core = {"configuration_dseqjepa", "modeling_dseqjepa", "regions"}  # the model file imports no processor
    assert loaded == "LOADED " + str(sorted(["_dseqjepa_hub_core", *(f"_dseqjepa_hub_core.{name}" for name in core)]))
    assert "SHAPE (1, 12, 12)" in done.stdout
