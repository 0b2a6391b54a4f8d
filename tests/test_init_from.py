"""Continued pretraining (`dseqjepa train --init-from MODEL`): the README's commands on the data kit from the
bundled model, where the weights start, the predictor that travels with a run, refusals, exact resume."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_scenes_or_skip
from PIL import Image
from safetensors.torch import load_file
from test_training_runs import losses, run_state

from dseqjepa_cli import main
from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAModel
from dseqjepa_hub.application.loading import default_model_path, load_model
from dseqjepa_train import load_config, train
from dseqjepa_train.checkpoint import latest_checkpoint
from dseqjepa_train.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
FROZEN = ["start_lr=0", "lr=0", "final_lr=0", "ema_start=1", "ema_end=1", "weight_decay=0", "final_weight_decay=0"]


def readme_commands(heading: str) -> list[list[str]]:
    """The `dseqjepa` command lines of the first bash block under `heading` in README.md, as argv lists."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert all(command[0] == ".venv/bin/dseqjepa" for command in commands)
    return [command[1:] for command in commands]


def test_readme_continues_the_bundled_model_on_the_data_kit(tmp_path, monkeypatch, caplog):
    """The README's commands: the kit, continued pretraining from `default` (loss falls), then `embed` loads the run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    for command in readme_commands("Continue pretraining a released model on your images"):
        if command[:3] == ["data", "build", "scenes"]:
            build_scenes_or_skip("scenes", num_train=64, num_val=8, image_size=96)  # the command's library call
            continue
        with caplog.at_level("INFO"):
            assert main(command) == 0, command
    assert "the predictor is new (the model has none)" in caplog.text
    config = load_config(tmp_path / "adapted" / "config.yaml")
    assert config.init_from == "default"
    history = losses(tmp_path / "adapted")
    assert len(history) == 24
    assert np.mean(history[-4:]) < np.mean(history[:4]) - 0.01, history
    checkpoint = latest_checkpoint(tmp_path / "adapted")
    loaded = load_model(checkpoint / "target_encoder")
    bundled = load_model(None)
    assert loaded.model.config.hidden_size == bundled.model.config.hidden_size
    for name in ("image_mean", "image_std", "size", "do_center_crop"):
        assert getattr(loaded.processor, name) == getattr(bundled.processor, name), name
    assert not torch.equal(loaded.model.cls_token, bundled.model.cls_token)  # trained, not a copy
    embeddings = np.load(tmp_path / "adapted.npy")
    assert embeddings.shape == (4, loaded.model.config.hidden_size) and np.isfinite(embeddings).all()


def test_both_encoders_start_from_the_model(scenes, tmp_path):
    """With every update switched off, the run's encoders are the bundled model's weights, bit for bit."""
    config = load_config("domain-adapt", [f"init_from={default_model_path()}", "batch_size=4", "num_workers=0",
                                          "precision=fp32", *FROZEN])
    train(config, scenes / "train" / "images", tmp_path, max_steps=1)
    expected = load_file(default_model_path() / "model.safetensors")
    for name in ("target_encoder", "context_encoder"):
        found = load_file(latest_checkpoint(tmp_path) / name / "model.safetensors")
        assert found.keys() == expected.keys()
        assert all(torch.equal(found[key], expected[key]) for key in expected), name


@pytest.fixture
def small_images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(8):
        Image.fromarray(rng.integers(0, 255, (72, 80, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def test_the_predictor_comes_from_a_run_it_starts_from(small_images, tmp_path, caplog):
    first = tmp_path / "first"
    train(load_config("tiny-cpu", ["method=ijepa"]), small_images, first, max_steps=2)
    with caplog.at_level("INFO"):
        train(load_config("tiny-cpu", ["method=ijepa", f"init_from={first}", *FROZEN]), small_images,
              tmp_path / "second", max_steps=1)
    assert f"the predictor from {latest_checkpoint(first) / 'predictor'}" in caplog.text
    for name in ("target_encoder", "predictor"):
        expected = load_file(latest_checkpoint(first) / name / "model.safetensors")
        found = load_file(latest_checkpoint(tmp_path / "second") / name / "model.safetensors")
        assert all(torch.equal(found[key], expected[key]) for key in expected), name
    # the run's context encoder is not where the second run starts: both encoders come from the target encoder
    context = load_file(latest_checkpoint(tmp_path / "second") / "context_encoder" / "model.safetensors")
    assert all(torch.equal(context[key], tensor) for key, tensor in expected.items() if key in context)


@pytest.mark.parametrize(("options", "message"), [
    (["--config", "tiny-cpu"], "model.image_size: 64 in the config, 96 in the model"),
    (["--config", "vit_tiny"], "model_preset vit_tiny_patch16_224: hidden_size is 192, the model's is 128"),
])
def test_an_architecture_mismatch_is_refused_naming_the_field(small_images, tmp_path, capsys, options, message):
    code = main(["train", *options, "--init-from", str(default_model_path()), "--data", str(small_images),
                 "--output", str(tmp_path / "run")])
    assert code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0] and "init_from" in error[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_dseq_method_is_refused_for_a_model_without_a_cls_token(small_images, tmp_path):
    folder = tmp_path / "ijepa_like"
    DSeqJEPAModel(DSeqJEPAConfig(image_size=64, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128, use_cls_token=False)).save_pretrained(folder)
    config = load_config("domain-adapt", [f"init_from={folder}", "batch_size=4"])
    with pytest.raises(ConfigError, match="does not have .* set method: ijepa"):
        train(config, small_images, tmp_path / "run", max_steps=1)
    config = load_config("domain-adapt", [f"init_from={folder}", "batch_size=4", "method=ijepa", "num_workers=0",
                                          "precision=fp32", "min_keep=4"])
    assert train(config, small_images, tmp_path / "ijepa_run", max_steps=1).step == 1


def test_resume_of_a_continued_run_is_bit_identical(small_images, tmp_path):
    config = load_config("domain-adapt", [f"init_from={default_model_path()}", "batch_size=4", "num_workers=0",
                                          "precision=fp32", "epochs=2", "checkpoint_every=2"])
    train(config, small_images, tmp_path / "straight", max_steps=3)
    train(config, small_images, tmp_path / "pieces", max_steps=2)
    train(config, small_images, tmp_path / "pieces", max_steps=3, resume=True)
    expected, found = run_state(tmp_path / "straight"), run_state(tmp_path / "pieces")
    assert expected.keys() == found.keys()
    assert all(torch.equal(tensor, found[name]) for name, tensor in expected.items())
    assert losses(tmp_path / "straight") == losses(tmp_path / "pieces")
    assert json.loads((tmp_path / "pieces" / "summary.json").read_text())["step"] == 3
