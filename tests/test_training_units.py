"""Pretraining building blocks: config, masks, region sequences, the objective, checkpoints, schedules."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from dseqjepa_hub.configuration_dseqjepa import DSeqJEPAConfig, DSeqJEPAPredictorConfig
from dseqjepa_hub.modeling_dseqjepa import DSeqJEPAModel, DSeqJEPAPredictor
from dseqjepa_train import checkpoint as checkpoint_module
from dseqjepa_train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from dseqjepa_train.config import CONFIG_DIR, ConfigError, load_config
from dseqjepa_train.masks import multiblock_masks
from dseqjepa_train.objective import JEPAStudent, dseq_task, ijepa_task, jepa_loss, target_features
from dseqjepa_train.schedules import Schedules
from dseqjepa_train.sequences import region_sequence
from dseqjepa_train.trainer import parameter_groups


def tiny_model_config(**overrides) -> DSeqJEPAConfig:
    values = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, predictor_hidden_size=16, predictor_num_hidden_layers=2,
                  predictor_num_attention_heads=2)
    return DSeqJEPAConfig(**{**values, **overrides})


# ----------------------------------------------------------------------------- config


def test_shipped_configs_load_and_build_their_models():
    names = sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))
    assert {"tiny-cpu", "vit_tiny", "vit_small", "vit_base", "vit_huge14", "vit_giant"} <= set(names)
    for name in names:
        config = load_config(name)
        assert config.model_config().hidden_size > 0
    base = load_config("vit_base")
    assert (base.epochs, base.warmup_epochs, base.start_lr, base.lr, base.final_lr) == (600, 15, 2e-4, 8e-4, 1e-4)
    assert (base.weight_decay, base.final_weight_decay, base.ema_start, base.ema_end) == (0.04, 0.4, 0.996, 1.0)
    assert load_config("vit_tiny").lr == 1e-3 and load_config("vit_tiny").epochs == 100


def test_unknown_keys_are_rejected_by_name(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: dseq\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown config key 'epoch'.*did you mean 'epochs'"):
        load_config("tiny-cpu", ["epoch=3"])
    with pytest.raises(ConfigError, match="unknown config key 'model.hiden_size'"):
        load_config("tiny-cpu", ["model.hiden_size=8"])


def test_overrides_are_coerced_and_checked():
    config = load_config("tiny-cpu", ["lr=2e-3", "grad_clip=null", "crop_scale=[0.5, 1.0]", "model.hidden_size=32",
                                      "compile=false", "epochs=3"])
    assert config.lr == 2e-3 and isinstance(config.lr, float)
    assert config.grad_clip is None and config.crop_scale == (0.5, 1.0) and config.epochs == 3.0
    assert config.model_config().hidden_size == 32
    with pytest.raises(ConfigError, match="batch_size: expected int, found 'eight'"):
        load_config("tiny-cpu", ["batch_size=eight"])
    with pytest.raises(ConfigError, match="method: expected one of"):
        load_config("tiny-cpu", ["method=byol"])
    with pytest.raises(ConfigError, match="release_compat: true needs context_mode: masked"):
        load_config("tiny-cpu", ["release_compat=true"])
    with pytest.raises(ConfigError, match=r"model: (?s:.*)DSeqJEPAConfig: hidden_size .30. must be divisible"):
        load_config("tiny-cpu", ["model.hidden_size=30", "method=ijepa"])
    with pytest.raises(ConfigError, match="ranks regions by the CLS token"):
        load_config("tiny-cpu", ["model.use_cls_token=false"])
    assert not load_config("tiny-cpu", ["model.use_cls_token=false", "method=ijepa"]).model_config().use_cls_token


# ----------------------------------------------------------------------------- masks


def test_multiblock_masks_reach_every_row_and_column_and_respect_the_recipe():
    generator = torch.Generator().manual_seed(0)
    grid = (14, 14)
    context_rows = torch.zeros(14, dtype=torch.bool)
    context_cols = torch.zeros(14, dtype=torch.bool)
    target_rows = torch.zeros(14, dtype=torch.bool)
    target_cols = torch.zeros(14, dtype=torch.bool)
    for _ in range(20):
        context, targets = multiblock_masks(generator, 16, grid, min_keep=10)  # the recipe's defaults
        assert context.shape == (16, 14, 14) and targets.shape == (16, 4, 14, 14)
        sizes = targets.flatten(2).sum(-1)
        assert (sizes == sizes[0, 0]).all()  # one target size per batch
        assert 0.15 * 196 * 0.6 <= sizes[0, 0] <= 0.2 * 196 * 1.4
        assert (context.flatten(1).sum(1) >= 10).all()
        assert not (context[:, None] & targets).any()  # the context excludes every target
        context_rows |= context.any(-1).any(0)
        context_cols |= context.any(-2).any(0)
        target_rows |= targets.any(-1).flatten(0, 1).any(0)
        target_cols |= targets.any(-2).flatten(0, 1).any(0)
    # I-JEPA's own sampler never reaches the last row or column (randint's exclusive end).
    assert context_rows.all() and context_cols.all() and target_rows.all() and target_cols.all()


def test_multiblock_masks_refuse_a_context_block_below_min_keep():
    with pytest.raises(ValueError, match="smaller than min_keep=50"):
        multiblock_masks(torch.Generator().manual_seed(0), 2, (4, 4), min_keep=50)


# ----------------------------------------------------------------------------- region sequences


def hand_made_regions() -> torch.Tensor:
    """Two images on a 4x4 grid, 5 slots (background last); image 1 has an empty third slot."""
    labels = torch.tensor([
        [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 4, 4]],
        [[0, 0, 0, 1], [4, 4, 4, 1], [3, 3, 4, 4], [4, 4, 4, 4]],
    ])
    return labels[:, None] == torch.arange(5)[None, :, None, None]  # (2, 5, 4, 4)


def test_region_sequences_follow_the_paper():
    regions = hand_made_regions()
    contexts, targets = region_sequence(regions)
    assert contexts.shape == targets.shape == (2, 4, 4, 4)
    for b in range(2):
        for k in range(1, 5):  # step k: context R1 u .. u Rk, target R(k+1)
            expected = regions[b, :k].any(0)
            assert torch.equal(contexts[b, k - 1], expected)
            assert torch.equal(targets[b, k - 1], regions[b, k])


def test_region_sequences_release_compat_lag_one_region():
    regions = hand_made_regions()
    contexts, targets = region_sequence(regions, release_compat=True)
    r = regions
    for b in range(2):  # R1 -> R2, R1 -> R3, R1 u R2 -> R4, R1 u R2 u R3 -> R5
        assert torch.equal(contexts[b, 0], r[b, 0]) and torch.equal(targets[b, 0], r[b, 1])
        assert torch.equal(contexts[b, 1], r[b, 0]) and torch.equal(targets[b, 1], r[b, 2])
        assert torch.equal(contexts[b, 2], r[b, 0] | r[b, 1]) and torch.equal(targets[b, 2], r[b, 3])
        assert torch.equal(contexts[b, 3], r[b, 0] | r[b, 1] | r[b, 2]) and torch.equal(targets[b, 3], r[b, 4])


def test_dseq_task_computes_only_steps_with_a_target():
    regions = hand_made_regions()
    task = dseq_task(regions)
    # image 0: 4 valid steps; image 1: its slot 3 (index 2) is empty, so step 2 is skipped
    assert task.target_masks.shape[0] == 7
    assert task.context_image.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert task.target_masks.flatten(1).any(1).all()
    assert torch.equal(task.target_masks[4], regions[1, 1]) and torch.equal(task.target_masks[5], regions[1, 3])
    assert task.context_length == int(task.context_masks.flatten(1).sum(1).max())


# ----------------------------------------------------------------------------- the objective


def reference_loss(encoder, predictor, pixel_values, task, targets) -> torch.Tensor:
    """Each prediction on its own unpadded sequences, no masks: CLS + context tokens through the
    encoder, then context + target queries through the predictor; smooth-L1 over all target tokens."""
    tokens, _ = encoder.embed(pixel_values)
    errors = []
    for s in range(task.target_masks.shape[0]):
        c = s if task.target_context is None else int(task.target_context[s])
        image = int(task.context_image[c])
        context_idx = task.context_masks[c].flatten().nonzero().squeeze(1)
        target_idx = task.target_masks[s].flatten().nonzero().squeeze(1)
        sequence = torch.cat([tokens[image, :1], tokens[image, 1:][context_idx]])[None]
        context = encoder.encode(sequence)
        x = predictor.predictor_embed(context)
        pos = predictor.predictor_pos_embed[0]
        x = torch.cat([x[:, :1], x[:, 1:] + pos[context_idx]], dim=1)
        x = torch.cat([x, predictor.mask_token + pos[target_idx]], dim=1)
        for block in predictor.predictor_blocks:
            x = block(x)
        prediction = predictor.predictor_proj(predictor.predictor_norm(x[:, -len(target_idx):]))[0]
        errors.append(F.smooth_l1_loss(prediction, targets[image, target_idx], reduction="none", beta=1.0))
    return torch.cat(errors).mean()


@pytest.fixture(scope="module")
def tiny_networks():
    torch.manual_seed(0)
    config = tiny_model_config()
    encoder = DSeqJEPAModel(config).eval()
    predictor = DSeqJEPAPredictor(DSeqJEPAPredictorConfig.from_encoder_config(encoder.config))
    pixel_values = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        targets = target_features(encoder(pixel_values).last_hidden_state, encoder.config)
    return encoder, predictor, pixel_values, targets


def random_regions(generator, batch, grid=(4, 4), slots=5) -> torch.Tensor:
    labels = torch.randint(0, slots, (batch, *grid), generator=generator)
    labels[:, 0, 0] = slots - 1  # a background patch in every image
    return labels[:, None] == torch.arange(slots)[None, :, None, None]


@pytest.mark.parametrize("method", ["dseq", "ijepa"])
def test_gather_and_masked_give_the_reference_loss(tiny_networks, method):
    encoder, predictor, pixel_values, targets = tiny_networks
    generator = torch.Generator().manual_seed(1)
    if method == "dseq":
        task = dseq_task(random_regions(generator, 3))
    else:
        context, blocks = multiblock_masks(generator, 3, (4, 4), target_scale=(0.15, 0.2), min_keep=2)
        task = ijepa_task(context, blocks)
    losses = {}
    for mode in ("gather", "masked"):
        student = JEPAStudent(encoder, predictor, context_mode=mode)
        predictions, positions, keep = student(pixel_values, task)
        losses[mode] = jepa_loss(predictions, targets, task, positions, keep)
    with torch.no_grad():
        expected = reference_loss(encoder, predictor, pixel_values, task, targets)
    torch.testing.assert_close(losses["gather"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["masked"], expected, rtol=1e-5, atol=1e-6)


def test_release_compat_predictor_reads_other_non_context_patches_not_the_target(tiny_networks):
    """The release's inverted predictor attention reads the encoder outputs at the non-context
    positions, which carry their own patch content, except at the target positions, which it
    overwrites with their position embedding (docs/PARITY.md): its predictions change with the
    pixels of a patch outside both the context and the target, not with the target's pixels.
    The paper's change with neither."""
    encoder, predictor, pixel_values, _ = tiny_networks
    regions = hand_made_regions()[:1]  # step 1 of image 0, in both: R1 (top left) -> R2 (top right)

    def changed(row: int, col: int) -> torch.Tensor:
        images = pixel_values[:1].clone()
        images[:, :, row * 8:(row + 1) * 8, col * 8:(col + 1) * 8] += 3.0
        return images

    target_patch, outside_patch = changed(0, 2), changed(3, 0)  # in R2; in the background
    paper = JEPAStudent(encoder, predictor, context_mode="masked")
    release = JEPAStudent(encoder, predictor, context_mode="masked", release_compat=True)
    with torch.no_grad():
        for student, task in ((paper, dseq_task(regions)), (release, dseq_task(regions, release_compat=True))):
            original = student(pixel_values[:1], task)[0][0]
            torch.testing.assert_close(student(target_patch, task)[0][0], original)
            if student is paper:
                torch.testing.assert_close(student(outside_patch, task)[0][0], original)
            else:
                assert (student(outside_patch, task)[0][0] - original).abs().max() > 1e-5  # the paper: ~1e-7


# ----------------------------------------------------------------------------- optimisation


def test_weight_decay_on_matrices_and_tokens_not_on_biases_and_norms(tiny_networks):
    """As both releases group them (checked against their recordings in test_release_parity.py)."""
    encoder, predictor, _, _ = tiny_networks
    student = JEPAStudent(encoder, predictor)
    decay_group, no_decay_group = parameter_groups(student)
    names = {id(p): n for n, p in student.named_parameters()}
    no_decay = {names[id(p)] for p in no_decay_group["params"]}
    decay = {names[id(p)] for p in decay_group["params"]}
    assert {"encoder.norm.weight", "encoder.blocks.0.attn.qkv.bias", "predictor.predictor_norm.bias"} <= no_decay
    assert {"encoder.blocks.0.attn.qkv.weight", "encoder.patch_embed.proj.weight", "predictor.predictor_proj.weight",
            "encoder.cls_token", "predictor.mask_token"} <= decay
    assert no_decay_group["weight_decay"] == 0.0
    assert len(decay) + len(no_decay) == len(list(student.parameters()))


def test_schedules_follow_the_recipe():
    config = load_config("vit_base")
    schedules = Schedules.for_run(config, steps_per_epoch=100)  # 60000 steps, 1500 warm-up
    assert schedules.total_steps == 60000 and schedules.warmup_steps == 1500
    assert math.isclose(schedules.lr(0), 2e-4) and math.isclose(schedules.lr(1500), 8e-4)
    assert math.isclose(schedules.lr(750), 5e-4)
    assert math.isclose(schedules.lr(60000), 1e-4)
    assert math.isclose(schedules.weight_decay(0), 0.04) and math.isclose(schedules.weight_decay(60000), 0.4)
    assert math.isclose(schedules.weight_decay(30000), 0.22)
    assert math.isclose(schedules.ema_momentum(0), 0.996) and math.isclose(schedules.ema_momentum(30000), 0.998)
    assert math.isclose(schedules.dseq_probability(15000), 0.25)  # mixed: lambda 0 -> 1


# ----------------------------------------------------------------------------- checkpoints


def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path, tiny_networks, monkeypatch):
    encoder, predictor, _, _ = tiny_networks
    config = load_config("tiny-cpu")
    networks = {"context_encoder": encoder, "target_encoder": encoder, "predictor": predictor}
    state = {"step": 2, "rng": checkpoint_module.rng_states(), "optimizer": {"state": {}, "param_groups": []}}
    first = save_checkpoint(tmp_path, 2, networks, state, config)

    def killed(*args, **kwargs):  # the process dies after the model folders, before the trainer state
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(checkpoint_module.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 4, networks, {**state, "step": 4}, config)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == first
    assert not (tmp_path / "checkpoints" / "step_000004").exists()
    loaded, trainer_state = load_checkpoint(first)  # trainer_state.pt through torch.load(weights_only=True)
    assert trainer_state["step"] == 2
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(loaded["context_encoder"][name], tensor)
    assert set(loaded["context_encoder"]) == set(encoder.state_dict())  # DSeqJEPAModel's own names
    assert set(loaded["predictor"]) == set(predictor.state_dict())  # the release's predictor names
    second = save_checkpoint(tmp_path, 4, networks, {**state, "step": 4}, config, keep=1)
    assert latest_checkpoint(tmp_path) == second and not first.exists()
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["step_000004"]


KILLED_WRITER = """
import os, signal, sys
import torch
from dseqjepa_hub.modeling_dseqjepa import DSeqJEPAModel
from dseqjepa_train import checkpoint
from dseqjepa_hub.configuration_dseqjepa import DSeqJEPAPredictorConfig
from dseqjepa_hub.modeling_dseqjepa import DSeqJEPAPredictor
from dseqjepa_train.config import load_config

config = load_config("tiny-cpu")
encoder = DSeqJEPAModel(config.model_config())
predictor = DSeqJEPAPredictor(DSeqJEPAPredictorConfig.from_encoder_config(encoder.config))
networks = {"context_encoder": encoder, "target_encoder": encoder, "predictor": predictor}
checkpoint.save_checkpoint(sys.argv[1], 2, networks, {"step": 2}, config)
# SIGKILL after the model folders, before the trainer state: no cleanup code runs
checkpoint.torch.save = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save_checkpoint(sys.argv[1], 4, networks, {"step": 4}, config)
"""


def test_a_killed_checkpoint_write_leaves_no_folder_at_the_final_path(tmp_path, tiny_networks):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    root = tmp_path / "checkpoints"
    assert not (root / "step_000004").exists()
    assert latest_checkpoint(tmp_path) == root / "step_000002"
    leftovers = [path for path in root.iterdir() if path.name.startswith(".")]
    assert leftovers and (leftovers[0] / "predictor" / "model.safetensors").is_file()  # killed midway, out of sight
    encoder, predictor, _, _ = tiny_networks
    networks = {"context_encoder": encoder, "target_encoder": encoder, "predictor": predictor}
    save_checkpoint(tmp_path, 6, networks, {"step": 6}, load_config("tiny-cpu"))
    assert sorted(path.name for path in root.iterdir()) == ["step_000002", "step_000006"]  # the leftover is gone


# ----------------------------------------------------------------------------- data


def test_data_from_a_file_list_with_seeded_crops(tmp_path):
    from PIL import Image

    from dseqjepa_train.pretraining_data import PretrainingImages, TrainingDataError, build_loader, list_image_files

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(torch.randint(0, 255, (40, 48, 3), dtype=torch.uint8).numpy()).save(tmp_path / "imgs" / f"{i}.png")
    listing = tmp_path / "train.txt"
    listing.write_text("# training images\nimgs/0.png\n\nimgs/1.png\n" + str(tmp_path / "imgs" / "2.png") + "\n")
    paths = list_image_files(listing)
    assert paths == [tmp_path / "imgs" / f"{i}.png" for i in range(3)]
    dataset = PretrainingImages(paths, 16, (0.3, 1.0), [0.5] * 3, [0.25] * 3, seed=0)
    first, skipped = dataset[(0, 1)]
    assert first.shape == (3, 16, 16) and skipped == 0
    assert torch.equal(first, dataset[(0, 1)][0])  # a function of (seed, epoch, index)
    assert not torch.equal(first, dataset[(1, 1)][0])  # another epoch, another crop
    with pytest.raises(TrainingDataError, match="no image files found"):
        (tmp_path / "empty").mkdir()
        list_image_files(tmp_path / "empty")
    with pytest.raises(TrainingDataError, match="no such folder or file list"):
        list_image_files(tmp_path / "missing")
    split = tmp_path / "split"  # the data kit's layout: images/, label images in masks/, labels.tsv
    for sub in ("images", "masks"):
        (split / sub).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(torch.zeros((8, 8), dtype=torch.uint8).numpy()).save(split / sub / f"{i}.png")
    (split / "labels.tsv").write_text("images/0.png\tcat\nimages/1.png\tdog\n")
    assert list_image_files(split) == [split / "images" / "0.png", split / "images" / "1.png"]
    with pytest.raises(ValueError, match="fewer than batch_size 8"):
        build_loader(paths, image_size=16, crop_scale=(0.3, 1.0), mean=[0.5] * 3, std=[0.25] * 3, seed=0,
                     batch_size=8, num_workers=0, world_size=1, rank=0)


def test_resume_drops_a_half_written_metrics_line(tmp_path):
    """A kill in the middle of appending to metrics.jsonl leaves a partial last line: --resume keeps
    the complete lines up to its checkpoint and drops the rest, instead of failing to parse."""
    from dseqjepa_train.trainer import _truncate_metrics

    metrics = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": step, "loss": 1.0 / step}) for step in (1, 2, 3)]
    metrics.write_text("\n".join(lines) + '\n{"step": 4, "lo')
    _truncate_metrics(metrics, 2)
    assert metrics.read_text() == lines[0] + "\n" + lines[1] + "\n"
