"""The user's journeys end to end: what a new user does across the package's parts, offline."""

from __future__ import annotations

from pathlib import Path

from dseqjepa_cli import main

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "examples/images/coffee.jpg"


def test_a_preset_name_works_wherever_a_model_is_named_and_says_it_is_random(tmp_path, caplog):
    assert main(["regions", str(IMAGE), "--model", "vit_tiny_patch16_224", "--out", str(tmp_path / "out")]) == 0
    assert "RANDOMLY INITIALISED" in caplog.text
    assert (tmp_path / "out/coffee.regions.png").is_file()
    caplog.clear()
    assert main(["embed", str(IMAGE), "--model", "vit_tiny_patch16_224", "--out", str(tmp_path / "e.npy")]) == 0
    assert "RANDOMLY INITIALISED" in caplog.text
