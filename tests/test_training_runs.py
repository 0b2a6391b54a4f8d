"""Pretraining runs of the tiny-cpu config: loss goes down, exact resume, interrupted checkpoint
writes, NaN stops, two processes under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from dseqjepa_train import checkpoint as checkpoint_module
from dseqjepa_train import load_config, train
from dseqjepa_train.checkpoint import NETWORK_DIRS, latest_checkpoint, load_checkpoint
from dseqjepa_train.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """16 images of coloured shapes in two class folders, and one unreadable file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(16):
        image = Image.new("RGB", (80, 72), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = (int(v) for v in rng.integers(0, 50, 2))
            size = int(rng.integers(10, 30))
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + size, y + size], fill=colour)
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{i:02d}.png")
    (root / "cats" / "broken.jpg").write_bytes(b"this is not a JPEG")
    return root


def losses(output: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["dseq", "ijepa", "mixed"])
def test_each_method_lowers_the_loss(images, tmp_path, method, caplog):
    config = load_config("tiny-cpu", [f"method={method}", "epochs=3", "tensorboard=true"])
    result = train(config, images, tmp_path)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert "TensorBoard is not installed" in caplog.text
    else:
        assert (tmp_path / "tensorboard").is_dir()
    history = losses(tmp_path)
    assert len(history) == result.step == 6
    assert np.mean(history[-2:]) < np.mean(history[:2]) - 0.01
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["skipped_images"] >= 1  # broken.jpg was skipped, the epochs went on
    methods = {json.loads(line)["method"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()}
    assert methods == ({"dseq", "ijepa"} if method == "mixed" else {method})


def run_state(output: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the newest checkpoint: the three networks and the optimizer state."""
    path = latest_checkpoint(output)
    tensors = {}
    for name in NETWORK_DIRS:
        tensors.update({f"{name}.{k}": v for k, v in load_file(path / name / "model.safetensors").items()})
    state = torch.load(path / "trainer_state.pt", weights_only=True)
    for index, values in state["optimizer"]["state"].items():
        tensors.update({f"optimizer.{index}.{k}": v for k, v in values.items()})
    return tensors


def test_resume_after_an_interrupted_checkpoint_write_is_bit_identical(images, tmp_path, monkeypatch):
    # mixed: both step kinds; 8 scheduled steps, so --max-steps cuts the schedules short
    config = load_config("tiny-cpu", ["method=mixed", "lambda_start=0.5", "lambda_end=0.5", "epochs=4"])
    straight = tmp_path / "straight"
    train(config, images, straight, max_steps=4)

    pieces = tmp_path / "pieces"  # 2 steps per epoch: stop mid-epoch 0, write step 2, die writing step 4
    train(config, images, pieces, max_steps=1)
    real_save = checkpoint_module.torch.save

    def killed_at_step_4(state, path, *args, **kwargs):  # dies after the model folders are written
        if state["step"] == 4:
            raise KeyboardInterrupt("killed while writing step 4")
        real_save(state, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(config, images, pieces, max_steps=4, resume=True)
    monkeypatch.undo()
    assert latest_checkpoint(pieces).name == "step_000002"  # the previous checkpoint is intact
    assert not (pieces / "checkpoints" / "step_000004").exists()

    result = train(config, images, pieces, max_steps=4, resume=True)
    assert result.step == 4 and result.checkpoint.name == "step_000004"
    expected, found = run_state(straight), run_state(pieces)
    assert expected.keys() == found.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, found[name]), name
    assert losses(straight) == losses(pieces)  # the re-run step 3 replaced its first record


def test_checkpoints_are_model_folders(images, tmp_path):
    """Each checkpoint's encoders load as DSeq-JEPA model folders (with their image processor) and its
    predictor through AutoModel, with the weights that --resume reads."""
    from transformers import AutoModel

    from dseqjepa_hub import DSeqJEPAModel, DSeqJEPAPredictor
    from dseqjepa_hub.application.loading import load_model

    config = load_config("tiny-cpu", ["method=ijepa"])
    train(config, images, tmp_path, max_steps=1)
    path = latest_checkpoint(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == [
        "complete", "config.yaml", "context_encoder", "predictor", "target_encoder", "trainer_state.pt"]
    networks, _ = load_checkpoint(path)
    for name in ("target_encoder", "context_encoder"):
        loaded = load_model(str(path / name))
        assert type(loaded.model) is DSeqJEPAModel and loaded.processor.size == {"height": 64, "width": 64}
        assert loaded.model.config.to_dict() == DSeqJEPAModel.from_pretrained(path / name).config.to_dict()
        assert all(torch.equal(t, networks[name][k]) for k, t in loaded.model.state_dict().items())
    assert not all(torch.equal(t, networks["context_encoder"][k]) for k, t in networks["target_encoder"].items())
    predictor = AutoModel.from_pretrained(path / "predictor")
    assert type(predictor) is DSeqJEPAPredictor and predictor.config.encoder_hidden_size == config.model_config().hidden_size
    assert predictor.state_dict().keys() == networks["predictor"].keys()
    assert all(torch.equal(t, networks["predictor"][k]) for k, t in predictor.state_dict().items())


def test_resume_refuses_a_changed_config(images, tmp_path):
    config = load_config("tiny-cpu", ["method=ijepa"])
    train(config, images, tmp_path, max_steps=1)
    with pytest.raises(ConfigError, match=r"config differs from the checkpoint's .* in \['lr'\] \(only the monitoring") \
            as raised:  # log_every may change, lr may not
        train(load_config("tiny-cpu", ["method=ijepa", "lr=0.01", "log_every=1"]), images, tmp_path, max_steps=2,
              resume=True)
    assert type(raised.value) is ConfigError


def test_resume_takes_changed_monitoring_keys(images, tmp_path, caplog):
    """What only watches the run may change on resume; the resumed weights are the uninterrupted run's."""
    train(load_config("tiny-cpu", ["method=ijepa"]), images, tmp_path / "whole", max_steps=2)
    train(load_config("tiny-cpu", ["method=ijepa"]), images, tmp_path / "split", max_steps=1)
    watched = load_config("tiny-cpu", ["method=ijepa", "log_every=1", "collapse_patience=5", "stop_on_collapse=true"])
    with caplog.at_level("INFO"):
        train(watched, images, tmp_path / "split", max_steps=2, resume=True)
    assert "the monitoring changes: collapse_patience 3 -> 5, log_every 10 -> 1, stop_on_collapse False -> True" in caplog.text
    assert load_config(tmp_path / "split" / "config.yaml").log_every == 1
    whole, split = run_state(tmp_path / "whole"), run_state(tmp_path / "split")
    assert whole.keys() == split.keys() and all(torch.equal(whole[k], split[k]) for k in whole)
    # Resuming a complete run does nothing, and its folder is left as it was (the command says "nothing was changed")
    before = {path: path.read_bytes() for path in (tmp_path / "whole").rglob("*") if path.is_file()}
    result = train(watched, images, tmp_path / "whole", max_steps=2, resume=True)
    assert result.step == 2 and result.loss is None  # nothing trained
    assert {path: path.read_bytes() for path in (tmp_path / "whole").rglob("*") if path.is_file()} == before


def test_a_nan_loss_stops_the_run_naming_the_step(images, tmp_path, capsys):
    from dseqjepa_cli import main

    exit_code = main([
        "train", "--config", "tiny-cpu", "--data", str(images), "--output", str(tmp_path),
        "--set", "start_lr=1e30", "--set", "lr=1e30", "--set", "checkpoint_every=1", "--set", "grad_clip=null",
    ])
    assert exit_code == 1
    message = capsys.readouterr().err
    assert "at step 2" in message and "step_000001" in message and "not finite" in message
    assert latest_checkpoint(tmp_path).name == "step_000001"
    assert len(losses(tmp_path)) == 1


def test_torchrun_two_processes_end_with_identical_weights(images, tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "dseqjepa_cli", "train", "--config", "tiny-cpu", "--data", str(images), "--output", str(tmp_path),
        "--set", "batch_size=4", "--set", "method=mixed", "--set", "lambda_start=0.5", "--set", "lambda_end=0.5",
        "--max-steps", "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 2
    assert len(summary["weight_digests"]) == 2 and len(set(summary["weight_digests"])) == 1
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["method"] for r in records] == ["dseq", "ijepa"]  # seed 0 draws both kinds; only rank 0 writes
