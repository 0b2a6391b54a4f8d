"""The fuzz harness in CI (issue 20): seeded mutants of images, model folders and command lines, a few
minutes on two CPU cores, the outcomes counted (tests/fuzzing.py) and asserted: no traceback, no hang, no
garbage, no leftover temporary file, no pickle run. `scripts/fuzz_long.py` runs the same at 10,000+ inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fuzzing import command_paths, fuzz_commands, fuzz_images, fuzz_model_folders

from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAImageProcessor, DSeqJEPAModel

SEED = 20


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz") / "model"
    torch.manual_seed(0)
    model = DSeqJEPAModel(DSeqJEPAConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64))
    model.save_pretrained(folder)
    DSeqJEPAImageProcessor.from_model_config(model.config).save_pretrained(folder)
    return folder


def assert_clean(counts, minimum_results: int = 1) -> None:
    bad = {outcome: counts[outcome] for outcome in ("traceback", "hang", "garbage", "leftover", "pickle") if counts[outcome]}
    assert not bad, f"{bad}; first examples: {list(counts.examples.items())[:8]}"
    assert counts["result"] >= minimum_results and counts["refusal"] >= 1, dict(counts)  # both paths exercised


def test_mutated_images_are_decoded_or_refused(tmp_path):
    assert_clean(fuzz_images(tmp_path, count=600, seed=SEED), minimum_results=50)


def test_mutated_model_folders_load_whole_or_are_refused(tiny_model, tmp_path):
    paths = command_paths(tmp_path / "inputs", tiny_model)
    assert_clean(fuzz_model_folders(tiny_model, tmp_path / "work", count=40, seed=SEED, image=Path(paths["image"])))


def test_malformed_command_lines_run_or_are_refused_in_one_line(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_clean(fuzz_commands(command_paths(tmp_path, tiny_model), count=80, seed=SEED))


def test_the_command_fuzz_writes_nothing_outside_its_folders(tiny_model, tmp_path, monkeypatch):
    """Relative paths among fuzzed arguments (`--out 16`) land in the harness's scratch folder, not in the
    directory the tests run from."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    fuzz_commands(command_paths(tmp_path / "fuzz", tiny_model), count=40, seed=SEED)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fuzz"]
