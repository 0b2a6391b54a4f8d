"""Training that watches itself: the statistics against independent references, a healthy run, a run made to
collapse (warning, --stop-on-collapse), the online k-NN, the README's command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_init_from import FROZEN, readme_commands

from dseqjepa_cli import main
from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAModel
from dseqjepa_hub.application.loading import load_model
from dseqjepa_train import load_config, train
from dseqjepa_train.evaluation.features import extract_features
from dseqjepa_train.evaluation.probes import knn_accuracy
from dseqjepa_train.monitoring import STATISTICS, effective_rank, embedding_std, saliency_entropy

REPO = Path(__file__).resolve().parents[1]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_statistics_against_references():
    generator = torch.Generator().manual_seed(0)
    spread = torch.randn(3000, 16, generator=generator) * torch.linspace(0.2, 2.0, 16)
    singular = torch.linalg.svdvals(spread.double())  # RankMe from the SVD of the embeddings themselves
    p = singular / singular.sum() + 1e-7
    assert effective_rank(spread).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-5)
    constant = torch.randn(16, generator=generator).expand(500, -1)
    assert effective_rank(constant).item() == pytest.approx(1.0, abs=1e-3)
    assert embedding_std(constant).item() == pytest.approx(0.0, abs=1e-6)
    isotropic = torch.randn(20000, 64, generator=generator)
    assert embedding_std(isotropic).item() == pytest.approx(1 / math.sqrt(64), rel=0.02)
    normalised = torch.nn.functional.normalize(isotropic, dim=1).numpy()
    assert embedding_std(isotropic).item() == pytest.approx(normalised.std(axis=0, ddof=1).mean(), rel=1e-5)
    assert saliency_entropy(torch.full((2, 4, 4), 3.0)).item() == pytest.approx(1.0, abs=1e-6)
    peaked = torch.zeros(1, 4, 4)
    peaked[0, 1, 2] = 5.0
    assert saliency_entropy(peaked).item() == pytest.approx(0.0, abs=1e-6)
    half = torch.zeros(1, 4, 4)
    half[0, :2] = 1.0  # 8 of 16 patches equally: log 8 / log 16
    assert saliency_entropy(half).item() == pytest.approx(math.log(8) / math.log(16), rel=1e-5)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Labelled splits of noisy red / green squares: train/ (the training images too) and val/."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("val", 6)):
        for index in range(count):
            colour = ("red", "green")[index % 2]
            pixels = rng.integers(0, 60, (64, 64, 3)).astype(np.uint8)
            y, x = (int(v) for v in rng.integers(0, 32, 2))
            pixels[y : y + 32, x : x + 32] = (220, 30, 30) if colour == "red" else (30, 220, 30)
            (root / split / colour).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / split / colour / f"{index}.png")
    return root


def test_a_healthy_run_logs_the_statistics_and_no_collapse(images, tmp_path, caplog):
    config = load_config("tiny-cpu", ["log_every=2", "stop_on_collapse=true", "batch_size=4", "epochs=2"])
    train(config, images / "train", tmp_path)
    logged = records(tmp_path)
    assert [all(key in r for key in STATISTICS) for r in logged] == [i % 2 == 1 for i in range(len(logged))]
    for record in logged[1::2]:
        assert record["effective_rank"] > 5 and record["embedding_std"] * math.sqrt(64) > 0.3
        assert 0 < record["saliency_entropy"] <= 1
    assert "collapsed" not in caplog.text


@pytest.fixture
def collapsed_model(tmp_path) -> Path:
    """A model whose final norm maps every token to its bias: all embeddings one vector."""
    model = DSeqJEPAModel(DSeqJEPAConfig(image_size=64, patch_size=8, hidden_size=64, num_hidden_layers=4,
                                         num_attention_heads=4, intermediate_size=256, predictor_hidden_size=32,
                                         predictor_num_hidden_layers=2))
    with torch.no_grad():
        model.norm.weight.zero_()
        model.norm.bias.normal_()
    model.save_pretrained(tmp_path / "collapsed")
    return tmp_path / "collapsed"


def test_a_collapsed_run_warns_naming_the_step(images, collapsed_model, tmp_path, caplog):
    config = load_config("tiny-cpu", [f"init_from={collapsed_model}", "log_every=1", "batch_size=4", "epochs=2",
                                      "num_workers=0", *FROZEN])
    train(config, images / "train", tmp_path / "run")
    logged = records(tmp_path / "run")
    assert all(r["effective_rank"] < 1.01 and r["embedding_std"] < 1e-5 for r in logged)
    warnings = [r.message for r in caplog.records if "collapsed" in r.message]
    assert warnings and "collapsed at step 3:" in warnings[0]  # patience 3: the third log in a row


def test_the_collapse_count_goes_on_after_a_resume(images, collapsed_model, tmp_path, caplog):
    """Two collapsed logs, a checkpoint, a resume: the third log in a row is the warning, as in one run."""
    config = load_config("tiny-cpu", [f"init_from={collapsed_model}", "log_every=1", "batch_size=4", "epochs=2",
                                      "num_workers=0", *FROZEN])
    train(config, images / "train", tmp_path / "run", max_steps=2)
    assert not [r for r in caplog.records if "collapsed" in r.message]
    train(config, images / "train", tmp_path / "run", max_steps=3, resume=True)
    warnings = [r.message for r in caplog.records if "collapsed" in r.message]
    assert len(warnings) == 1 and "collapsed at step 3:" in warnings[0] and "for 3 logs in a row" in warnings[0]


def test_stop_on_collapse_ends_the_run_in_one_line(images, collapsed_model, tmp_path, capsys):
    code = main(["train", "--config", "tiny-cpu", "--data", str(images / "train"), "--output", str(tmp_path / "run"),
                 "--init-from", str(collapsed_model), "--stop-on-collapse", "--set", "log_every=1",
                 "--set", "batch_size=4", "--set", "checkpoint_every=2", *[f"--set={o}" for o in FROZEN]])
    assert code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "collapsed at step 3" in error and "stop_on_collapse" in error and "step_000002" in error
    assert [r["step"] for r in records(tmp_path / "run")] == [1, 2, 3]


def test_the_online_knn_is_the_evaluation_knn_of_the_checkpoint(images, tmp_path):
    config = load_config("tiny-cpu", ["eval_every=2", f"eval_data={images}", "batch_size=4", "epochs=2",
                                      "checkpoint_every=2", "keep_checkpoints=0"])
    train(config, images / "train", tmp_path)
    logged = records(tmp_path)
    assert ["knn_top1" in r for r in logged] == [r["step"] % 2 == 0 for r in logged]
    for record in logged[1::2]:
        loaded = load_model(tmp_path / "checkpoints" / f"step_{record['step']:06d}")
        features, labels = [], []
        for split in ("train", "val"):
            paths = sorted((images / split).rglob("*.png"), key=lambda p: (p.parent.name, p.name))
            features.append(extract_features(loaded.model, loaded.processor, paths, batch_size=4))
            labels.append(torch.tensor([["green", "red"].index(p.parent.name) for p in paths]))
        expected = knn_accuracy(features[0], labels[0], features[1], labels[1], 2)["top1"]
        assert record["knn_top1"] == pytest.approx(expected, abs=1e-6)


def test_eval_every_without_eval_data_is_refused():
    from dseqjepa_train.config import ConfigError

    with pytest.raises(ConfigError, match="eval_every > 0 needs eval_data"):
        load_config("tiny-cpu", ["eval_every=5"])


def test_readme_watched_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    for command in readme_commands("Training that watches itself"):
        assert main(command) == 0, command
    logged = records(tmp_path / "watched_run")
    assert [r["step"] for r in logged if "effective_rank" in r] == [2, 4]
