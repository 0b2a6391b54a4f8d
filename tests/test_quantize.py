"""int8 inference on the CPU: the README's commands, the quantized layers really in the model, agreement with
fp32, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_init_from import readme_commands

from dseqjepa_cli import main
from dseqjepa_hub.application.loading import ModelLoadError, load_model, quantize_model

REPO = Path(__file__).resolve().parents[1]


def test_int8_replaces_every_linear_layer():
    model = load_model(None, quantize="int8").model
    linears = [type(m) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert not linears and len(quantized) == 4 * model.config.num_hidden_layers  # qkv, proj, fc1, fc2


def test_readme_commands_agree_with_fp32(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    commands = readme_commands("Quantized inference on the CPU")
    for command in commands:
        assert main(command) == 0, command
        fp32 = [part.replace("_int8", "_fp32") for part in command if part != "--quantize" and part != "int8"]
        assert main(fp32) == 0, fp32
    int8, fp32 = np.load("embeddings_int8.npy"), np.load("embeddings_fp32.npy")
    cosine = (int8 * fp32).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() > 0.99 and not np.array_equal(int8, fp32)
    same = 0
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        quantized = json.loads(Path(f"regions_int8/{name}.regions.json").read_text())["regions"]
        reference = json.loads(Path(f"regions_fp32/{name}.regions.json").read_text())["regions"]
        same += [r["mask"] for r in quantized] == [r["mask"] for r in reference]
        assert quantized[0]["area_fraction"] == pytest.approx(reference[0]["area_fraction"], abs=0.1)
    assert same >= 3  # Otsu's threshold on 8-bit levels may move a patch or two (benchmarks/RESULTS.md)


def test_int8_is_refused_off_the_cpu():
    model = load_model(None).model
    with pytest.raises(ModelLoadError, match="--quantize int8 runs on the CPU only"):
        quantize_model(model, "int8", "cuda")
    with pytest.raises(ModelLoadError, match="expected one of"):
        quantize_model(model, "int4")
