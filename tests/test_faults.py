"""Hostile and damaged inputs end in one line naming the file and the problem, never a
traceback and never a result computed from garbage (docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dseqjepa_cli import main
from dseqjepa_hub import default_model_path

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "examples/images/coffee.jpg"


class ExecutesCode:
    """A pickle that would run a shell command if unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def model_copy(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(default_model_path(), folder)
    return folder


def damage(folder: Path, kind: str, tmp_path: Path) -> None:
    weights = folder / "model.safetensors"
    if kind == "hostile pickle":
        weights.unlink()
        torch.save({"blocks.0.norm1.weight": ExecutesCode(tmp_path / "executed")}, folder / "pytorch_model.bin")
    elif kind == "garbage header":
        weights.write_bytes(b"\xff" * 8 + b"not a header" * 4)
    elif kind == "huge header length":
        weights.write_bytes((10**15).to_bytes(8, "little") + b"{}")
    elif kind == "shapes disagree with config":
        config = json.loads((folder / "config.json").read_text())
        config["intermediate_size"] *= 2
        (folder / "config.json").write_text(json.dumps(config))
    elif kind == "NaN weights":
        tensors = {name: torch.full_like(t, float("nan")) for name, t in load_file(weights).items()}
        save_file(tensors, weights, metadata={"format": "pt"})
    else:
        raise AssertionError(kind)


EXPECTED = {
    "hostile pickle": "pytorch_model.bin: holds objects other than tensors and was refused",
    "garbage header": "model.safetensors: not a readable safetensors file",
    "huge header length": "model.safetensors: not a readable safetensors file",
    "shapes disagree with config": "model.safetensors: the weights do not match config.json: blocks.0.mlp.fc1.weight",
    "NaN weights": "gives non-finite",
}


@pytest.mark.parametrize("kind", list(EXPECTED))
@pytest.mark.parametrize("command", ["regions", "embed"])
def test_damaged_model_folder_is_one_clear_line(tmp_path, capsys, kind, command):
    folder = model_copy(tmp_path, "model")
    damage(folder, kind, tmp_path)
    out = tmp_path / ("out" if command == "regions" else "emb.safetensors")
    capsys.readouterr()
    code = main([command, str(IMAGE), "--model", str(folder), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"dseqjepa {command}: error: " in err and EXPECTED[kind] in err, err[-2000:]
    assert "Traceback" not in err and "LOAD REPORT" not in err
    assert not (tmp_path / "executed").exists()  # the pickle's code never ran
    assert not out.exists() or not any(out.iterdir())  # no result from garbage


def test_intact_copy_still_works(tmp_path, capsys):
    """The fault tests above mean something only if an undamaged copy passes the same way."""
    folder = model_copy(tmp_path, "model")
    assert main(["regions", str(IMAGE), "--model", str(folder), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out/coffee.regions.png").is_file()
