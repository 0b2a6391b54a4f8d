"""Conversion: every source format, built here with exactly its upstream layout, converts and matches
an independent forward of the source (fp32, <= 1e-4); timm export round-trips; bad input fails clearly
and writes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import IJepaConfig, IJepaForImageClassification, IJepaModel
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import dseqjepa_convert
from dseqjepa_cli import main
from dseqjepa_convert import READERS, ConversionError, convert, export_timm
from dseqjepa_convert.layout import infer_layout
from dseqjepa_convert.timm_vit import vit_kwargs
from dseqjepa_hub import (
    DSeqJEPAConfig,
    DSeqJEPAForImageClassification,
    DSeqJEPAModel,
    DSeqJEPAPredictor,
    DSeqJEPAPredictorConfig,
)
from dseqjepa_hub.application.atomic import FolderNotEmptyError

WIDTH, DEPTH, HEADS, PATCH, IMAGE, PRED_WIDTH = 32, 2, 2, 8, 32, 16
GRID = IMAGE // PATCH
TOLERANCE = 1e-4


def _random(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return 0.1 * torch.randn(*shape, generator=generator)


def _norm(state: dict, name: str, width: int, generator: torch.Generator) -> None:
    state[f"{name}.weight"] = 1 + _random(generator, width)
    state[f"{name}.bias"] = _random(generator, width)


def _linear(state: dict, name: str, out_features: int, in_features: int, generator: torch.Generator) -> None:
    state[f"{name}.weight"] = _random(generator, out_features, in_features)
    state[f"{name}.bias"] = _random(generator, out_features)


def _blocks(state: dict, prefix: str, width: int, depth: int, generator: torch.Generator) -> None:
    for i in range(depth):
        _norm(state, f"{prefix}{i}.norm1", width, generator)
        _linear(state, f"{prefix}{i}.attn.qkv", 3 * width, width, generator)
        _linear(state, f"{prefix}{i}.attn.proj", width, width, generator)
        _norm(state, f"{prefix}{i}.norm2", width, generator)
        _linear(state, f"{prefix}{i}.mlp.fc1", 4 * width, width, generator)
        _linear(state, f"{prefix}{i}.mlp.fc2", width, 4 * width, generator)


def release_encoder(cls_token: bool, seed: int) -> dict[str, torch.Tensor]:
    """An encoder state dict with the release's names and shapes (docs/METHOD.md section 7), random values."""
    generator = torch.Generator().manual_seed(seed)
    state = {"patch_embed.proj.weight": _random(generator, WIDTH, 3, PATCH, PATCH),
             "patch_embed.proj.bias": _random(generator, WIDTH)}
    if cls_token:
        state["cls_token"] = _random(generator, 1, 1, WIDTH)
    state["pos_embed"] = _random(generator, 1, GRID * GRID, WIDTH)
    _blocks(state, "blocks.", WIDTH, DEPTH, generator)
    _norm(state, "norm", WIDTH, generator)
    return state


def release_predictor(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    _linear(state, "predictor_embed", PRED_WIDTH, WIDTH, generator)
    state["mask_token"] = _random(generator, 1, 1, PRED_WIDTH)
    state["predictor_pos_embed"] = _random(generator, 1, GRID * GRID, PRED_WIDTH)
    _blocks(state, "predictor_blocks.", PRED_WIDTH, 2, generator)
    _norm(state, "predictor_norm", PRED_WIDTH, generator)
    _linear(state, "predictor_proj", WIDTH, PRED_WIDTH, generator)
    return state


def release_forward(state: dict, images: torch.Tensor, pos_embed_has_cls: bool = False) -> torch.Tensor:
    """The release ViT's forward written out from docs/METHOD.md (independent of the package and of timm)."""
    x = F.conv2d(images, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)  # (B, N, D)
    pos_embed = state["pos_embed"]
    if "cls_token" in state:
        cls = state["cls_token"].expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], 1) + pos_embed if pos_embed_has_cls else torch.cat([cls, x + pos_embed], 1)
    else:
        x = x + pos_embed
    batch, length, width = x.shape
    head_dim = width // HEADS
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    for i in range(depth):
        p = lambda name, i=i: (state[f"blocks.{i}.{name}.weight"], state[f"blocks.{i}.{name}.bias"])  # noqa: E731
        h = F.layer_norm(x, (width,), *p("norm1"), eps=1e-6)
        q, k, v = F.linear(h, *p("attn.qkv")).reshape(batch, length, 3, HEADS, head_dim).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-2, -1) * head_dim**-0.5, dim=-1)  # (B, H, L, L)
        x = x + F.linear((attention @ v).transpose(1, 2).reshape(batch, length, width), *p("attn.proj"))
        x = x + F.linear(F.gelu(F.linear(F.layer_norm(x, (width,), *p("norm2"), eps=1e-6), *p("mlp.fc1"))),
                         *p("mlp.fc2"))
    return F.layer_norm(x, (width,), state["norm.weight"], state["norm.bias"], eps=1e-6)


def images(n: int = 3, seed: int = 7) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def converted_tokens(out: Path, pixel_values: torch.Tensor) -> torch.Tensor:
    return DSeqJEPAModel.from_pretrained(out).eval()(pixel_values=pixel_values).last_hidden_state


def module_prefixed(state: dict) -> dict:
    return {f"module.{key}": value for key, value in state.items()}


def dseq_release_dict(path: Path) -> dict:
    """The authors' training dict: DDP prefixes, context and target encoders, predictor, optimizer state."""
    checkpoint = {
        "epoch": 12,
        "encoder": module_prefixed(release_encoder(True, seed=1)),
        "predictor": module_prefixed(release_predictor(seed=2)),
        "target_encoder": module_prefixed(release_encoder(True, seed=3)),
        "opt": {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3)}},
                "param_groups": [{"lr": 1e-3, "weight_decay": 0.04, "params": [0]}]},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
        "lr_scheduler": {"_step": 120}, "wd_scheduler": {"_step": 120}, "ema_scheduler": {"_step": 120},
    }
    torch.save(checkpoint, path)
    return checkpoint


def ijepa_release_dict(path: Path) -> dict:
    checkpoint = {
        "encoder": module_prefixed(release_encoder(False, seed=4)),
        "predictor": module_prefixed(release_predictor(seed=5)),
        "target_encoder": module_prefixed(release_encoder(False, seed=6)),
        "opt": {"state": {}, "param_groups": [{"lr": 1e-3, "params": []}]},
        "scaler": None, "epoch": 300, "loss": 0.123, "batch_size": 128, "world_size": 16, "lr": 1e-3,
    }
    torch.save(checkpoint, path)
    return checkpoint


def strip(state: dict) -> dict:
    return {key.removeprefix("module."): value for key, value in state.items()}


# ---- per format ---------------------------------------------------------------------------------

@pytest.mark.parametrize("encoder,key", [("target", "target_encoder"), ("context", "encoder")])
def test_dseq_release_dict_converts_and_matches(tmp_path, encoder, key):
    checkpoint = dseq_release_dict(tmp_path / "dseq-vit.pth.tar")
    result = convert(tmp_path / "dseq-vit.pth.tar", "dseq-release", tmp_path / "out", encoder=encoder,
                     num_heads=HEADS, with_predictor=True, log=lambda *_: None)
    assert result.max_abs_difference <= TOLERANCE
    x = images()
    expected = release_forward(strip(checkpoint[key]), x)
    assert (converted_tokens(tmp_path / "out", x) - expected).abs().max() <= TOLERANCE
    config = DSeqJEPAConfig.from_pretrained(tmp_path / "out")
    assert config.use_cls_token and config.saliency_query == "cls_token"
    assert (config.predictor_hidden_size, config.predictor_num_hidden_layers) == (PRED_WIDTH, 2)
    predictor = load_file(tmp_path / "out" / "predictor.safetensors")
    assert predictor.keys() == strip(checkpoint["predictor"]).keys()
    assert all(torch.equal(predictor[k], v) for k, v in strip(checkpoint["predictor"]).items())
    DSeqJEPAPredictor(DSeqJEPAPredictorConfig.from_encoder_config(config)).load_state_dict(predictor, strict=True)
    provenance = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert provenance["format"] == "dseq-release" and provenance["encoder"] == key
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_dseq_release_bare_encoder_file(tmp_path):
    state = release_encoder(True, seed=8)
    torch.save(module_prefixed(state), tmp_path / "vit-h16-cls.pth.tar")
    convert(tmp_path / "vit-h16-cls.pth.tar", "dseq-release", tmp_path / "out", num_heads=HEADS, log=lambda *_: None)
    x = images()
    assert (converted_tokens(tmp_path / "out", x) - release_forward(state, x)).abs().max() <= TOLERANCE


def test_ijepa_release_converts_with_mean_patch_fallback(tmp_path):
    checkpoint = ijepa_release_dict(tmp_path / "IN1K-vit.h.14-300e.pth.tar")
    convert(tmp_path / "IN1K-vit.h.14-300e.pth.tar", "ijepa-release", tmp_path / "out", num_heads=HEADS,
            log=lambda *_: None)
    x = images()
    expected = release_forward(strip(checkpoint["target_encoder"]), x)  # (B, N, D): no CLS token
    assert (converted_tokens(tmp_path / "out", x) - expected).abs().max() <= TOLERANCE
    config = DSeqJEPAConfig.from_pretrained(tmp_path / "out")
    assert not config.use_cls_token and config.saliency_query == "mean_patch"
    saliency = DSeqJEPAModel.from_pretrained(tmp_path / "out")(pixel_values=x, output_saliency=True).saliency
    assert saliency.shape == (3, GRID, GRID) and torch.isfinite(saliency).all()
    assert json.loads((tmp_path / "out" / "conversion.json").read_text())["license"] == "cc-by-nc-4.0"


def random_ijepa(classifier: bool = False):
    config = IJepaConfig(image_size=IMAGE, patch_size=PATCH, hidden_size=WIDTH, num_hidden_layers=DEPTH,
                         num_attention_heads=HEADS, intermediate_size=4 * WIDTH, layer_norm_eps=1e-6, num_labels=4)
    torch.manual_seed(9)
    model = (IJepaForImageClassification if classifier else IJepaModel)(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


@torch.no_grad()
def test_hf_ijepa_folder_v4_names(tmp_path):
    source = random_ijepa()
    source.save_pretrained(tmp_path / "ijepa")
    on_disk = load_file(tmp_path / "ijepa" / "model.safetensors")
    assert "encoder.layer.0.attention.attention.query.weight" in on_disk  # transformers writes v4 names
    convert(tmp_path / "ijepa", "hf-ijepa", tmp_path / "out", log=lambda *_: None)  # heads from config.json
    x = images()
    expected = source(pixel_values=x).last_hidden_state
    assert (converted_tokens(tmp_path / "out", x) - expected).abs().max() <= TOLERANCE


@torch.no_grad()
def test_hf_ijepa_state_dict_v5_names_and_classifier_folder(tmp_path):
    source = random_ijepa()
    state = source.state_dict()
    assert "layers.0.attention.q_proj.weight" in state  # transformers 5's module names
    torch.save(state, tmp_path / "pytorch_model.bin")
    convert(tmp_path / "pytorch_model.bin", "hf-ijepa", tmp_path / "out", num_heads=HEADS, log=lambda *_: None)
    x = images()
    assert (converted_tokens(tmp_path / "out", x) - source(pixel_values=x).last_hidden_state).abs().max() <= TOLERANCE

    classifier = random_ijepa(classifier=True)
    classifier.save_pretrained(tmp_path / "ijepa-cls")  # ijepa.* prefix + classifier.*
    result = convert(tmp_path / "ijepa-cls", "hf-ijepa", tmp_path / "out-cls", log=lambda *_: None)
    assert any("classifier" in note for note in result.notes)
    expected = classifier.ijepa(pixel_values=x).last_hidden_state
    assert (converted_tokens(tmp_path / "out-cls", x) - expected).abs().max() <= TOLERANCE


def test_hf_ijepa_sizes_come_from_the_shared_inference(tmp_path):
    """Renamed to release names, an hf-ijepa state dict meets the checks every reader's tensors meet."""
    state = {key.replace("layers.1.", "layers.2."): value for key, value in random_ijepa().state_dict().items()}
    torch.save(state, tmp_path / "gap.bin")
    with pytest.raises(ConversionError, match=r"block indices are not 0\.\.1: found \[0, 2\]"):
        convert(tmp_path / "gap.bin", "hf-ijepa", tmp_path / "out", num_heads=HEADS)
    assert_nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("fmt", ["hf-ijepa", "timm"])
def test_single_encoder_formats_refuse_with_predictor(tmp_path, fmt):
    state = random_ijepa().state_dict() if fmt == "hf-ijepa" else release_encoder(True, seed=1)
    torch.save(state, tmp_path / "encoder.pth")
    with pytest.raises(ConversionError, match=f"--with-predictor: a {fmt} checkpoint holds no JEPA predictor"):
        convert(tmp_path / "encoder.pth", fmt, tmp_path / "out", num_heads=HEADS, with_predictor=True)
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_one_layer_norm_eps_in_conversion():
    """The release's, I-JEPA's and timm's eps is one named constant (layout.LAYER_NORM_EPS)."""
    sources = Path(dseqjepa_convert.__file__).parent.glob("*.py")
    assert sum(path.read_text().count("1e-6") for path in sources) == 1


@torch.no_grad()
def test_timm_state_dict_with_cls_position_and_head(tmp_path):
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=IMAGE, patch_size=PATCH,
                               embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, num_classes=5).eval()
    for parameter in source.parameters():
        parameter.add_(0.1 * torch.randn_like(parameter))
    state = source.state_dict()
    assert state["pos_embed"].shape == (1, 1 + GRID * GRID, WIDTH) and "head.weight" in state
    torch.save(state, tmp_path / "vit.pth")
    result = convert(tmp_path / "vit.pth", "timm", tmp_path / "out", num_heads=HEADS, log=lambda *_: None)
    assert any("head" in note for note in result.notes)
    x = images()
    expected = release_forward(state, x, pos_embed_has_cls=True)
    assert (expected - source.forward_features(x)).abs().max() <= TOLERANCE  # the written-out reference is right
    assert (converted_tokens(tmp_path / "out", x) - expected).abs().max() <= TOLERANCE


def raw_training_checkpoint(folder: Path, networks: dict, train_config) -> None:
    """A checkpoint as `dseqjepa train` wrote them before checkpoints were model folders: one raw
    state dict per network beside the encoders' config.json (the reader's foreign, older layout)."""
    from dseqjepa_train.config import save_config

    folder.mkdir(parents=True)
    for name, module in networks.items():
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, folder / f"{name}.safetensors")
    networks["context_encoder"].config.to_json_file(str(folder / "config.json"))
    save_config(train_config, folder / "config.yaml")
    torch.save({"step": 40}, folder / "trainer_state.pt")
    (folder / "complete").write_text("40\n")


@pytest.mark.parametrize("layout", ["model folders", "raw state dicts"])
def test_training_checkpoint_converts(tmp_path, layout):
    from dseqjepa_train.checkpoint import save_checkpoint
    from dseqjepa_train.config import TrainConfig

    train_config = TrainConfig(model_preset=None, model=dict(
        image_size=IMAGE, patch_size=PATCH, hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
        intermediate_size=4 * WIDTH, predictor_hidden_size=PRED_WIDTH, predictor_num_hidden_layers=2))
    config = train_config.model_config()
    torch.manual_seed(10)
    networks = {"context_encoder": DSeqJEPAModel(config), "target_encoder": DSeqJEPAModel(config),
                "predictor": DSeqJEPAPredictor(DSeqJEPAPredictorConfig.from_encoder_config(config))}
    with torch.no_grad():
        for parameter in networks["target_encoder"].parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    if layout == "model folders":
        save_checkpoint(tmp_path / "run", 40, networks, {"step": 40}, train_config)
    else:
        raw_training_checkpoint(tmp_path / "run" / "checkpoints" / "step_000040", networks, train_config)
    convert(tmp_path / "run", "training", tmp_path / "out", with_predictor=True, log=lambda *_: None)
    x = images()
    target = networks["target_encoder"].state_dict()
    assert (converted_tokens(tmp_path / "out", x) - release_forward(target, x)).abs().max() <= TOLERANCE
    predictor = load_file(tmp_path / "out" / "predictor.safetensors")
    assert predictor.keys() == networks["predictor"].state_dict().keys()
    assert all(torch.equal(predictor[k], v) for k, v in networks["predictor"].state_dict().items())
    provenance = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert provenance["format"] == "training" and provenance["training_config"]["method"] == "dseq"
    assert provenance["training_text"].startswith("Pretrained with `dseqjepa train` (step_000040): method dseq")
    assert provenance["converted_from"] is None and provenance["license"] is None
    # the context encoder, from the checkpoint folder itself
    convert(tmp_path / "run" / "checkpoints" / "step_000040", "training", tmp_path / "context", encoder="context",
            log=lambda *_: None)
    context = networks["context_encoder"].state_dict()
    assert (converted_tokens(tmp_path / "context", x) - release_forward(context, x)).abs().max() <= TOLERANCE


# ---- timm export ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cls_token", [True, False])
@torch.no_grad()
def test_export_timm_loads_strict_and_round_trips(tmp_path, cls_token):
    config = DSeqJEPAConfig(image_size=IMAGE, patch_size=PATCH, hidden_size=WIDTH, num_hidden_layers=DEPTH,
                            num_attention_heads=HEADS, intermediate_size=4 * WIDTH, use_cls_token=cls_token)
    torch.manual_seed(11)
    model = DSeqJEPAModel(config).eval()
    for parameter in model.parameters():
        parameter.add_(0.1 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path / "model")
    name, kwargs, _ = export_timm(tmp_path / "model", tmp_path / "vit", log=lambda *_: None)
    # the arguments the conversion reference is built from, for the same encoder (CLS position in pos_embed)
    assert kwargs == vit_kwargs(infer_layout(model.state_dict(), "model", num_heads=HEADS))

    timm_model = timm.create_model(f"local-dir:{tmp_path / 'vit'}", pretrained=True).eval()
    x = images()
    outputs = model(pixel_values=x)
    assert (timm_model.forward_features(x) - outputs.last_hidden_state).abs().max() <= TOLERANCE
    assert (timm_model(x) - outputs.pooler_output).abs().max() <= TOLERANCE  # avg pool, num_classes=0
    data = timm.data.resolve_data_config({}, model=timm_model)  # the preprocessing travels with the export
    assert data["input_size"] == (3, IMAGE, IMAGE) and data["crop_mode"] == "squash" and data["crop_pct"] == 1.0
    assert tuple(data["mean"]) == tuple(IMAGENET_DEFAULT_MEAN) and tuple(data["std"]) == tuple(IMAGENET_DEFAULT_STD)

    # back again without --num-heads: the folder records it
    convert(tmp_path / "vit", "timm", tmp_path / "back", log=lambda *_: None)
    assert (converted_tokens(tmp_path / "back", x) - outputs.last_hidden_state).abs().max() <= TOLERANCE


@torch.no_grad()
def test_export_timm_at_another_size_matches_the_model_there_exactly(tmp_path):
    config = DSeqJEPAConfig(image_size=IMAGE, patch_size=PATCH, hidden_size=WIDTH, num_hidden_layers=DEPTH,
                            num_attention_heads=HEADS, intermediate_size=4 * WIDTH)
    torch.manual_seed(3)
    model = DSeqJEPAModel(config).eval()
    model.save_pretrained(tmp_path / "model")
    side = IMAGE + 2 * PATCH
    assert main(["export", "timm", str(tmp_path / "model"), "--out", str(tmp_path / "vit"), "--image-size", str(side)]) == 0
    exported = timm.create_model(f"local-dir:{tmp_path / 'vit'}", pretrained=True).eval()
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    assert (exported.forward_features(x) - model(pixel_values=x).last_hidden_state).abs().max() <= TOLERANCE
    assert timm.data.resolve_data_config({}, model=exported)["input_size"] == (3, side, side)
    # timm's own resampling of the native export's table does not match the regenerated sin-cos
    export_timm(tmp_path / "model", tmp_path / "native", log=lambda *_: None)
    resampled = timm.create_model(f"local-dir:{tmp_path / 'native'}", pretrained=True, img_size=side).eval()
    assert (resampled.forward_features(x) - model(pixel_values=x).last_hidden_state).abs().max() > 10 * TOLERANCE


@pytest.mark.parametrize("pooling, batchnorm, size", [("mean", True, None), ("cls", False, IMAGE + 2 * PATCH)])
@torch.no_grad()
def test_export_timm_keeps_a_fine_tuned_head(tmp_path, pooling, batchnorm, size, capsys):
    """timm reproduces the classifier's logits (the linear probe's BatchNorm folded into the head), and the
    folder records num_classes, the pooling and the label names."""
    config = DSeqJEPAConfig(image_size=IMAGE, patch_size=PATCH, hidden_size=WIDTH, num_hidden_layers=DEPTH,
                            num_attention_heads=HEADS, intermediate_size=4 * WIDTH, num_labels=3,
                            classifier_pooling=pooling, classifier_batchnorm=batchnorm,
                            id2label={0: "cat", 1: "dog", 2: "rocket"}, label2id={"cat": 0, "dog": 1, "rocket": 2})
    torch.manual_seed(5)
    classifier = DSeqJEPAForImageClassification(config).eval()
    if batchnorm:  # running statistics far from the identity
        classifier.batchnorm.running_mean.normal_()
        classifier.batchnorm.running_var.uniform_(0.2, 3.0)
    classifier.save_pretrained(tmp_path / "classifier")
    command = ["export", "timm", str(tmp_path / "classifier"), "--out", str(tmp_path / "vit")]
    assert main(command + (["--image-size", str(size)] if size else [])) == 0
    assert "with its 3-class head" in capsys.readouterr().out
    exported = timm.create_model(f"local-dir:{tmp_path / 'vit'}", pretrained=True).eval()
    recorded = json.loads((tmp_path / "vit" / "config.json").read_text())
    assert recorded["num_classes"] == exported.num_classes == 3
    assert recorded["pretrained_cfg"]["label_names"] == ["cat", "dog", "rocket"]
    assert recorded["global_pool"] == {"mean": "avg", "cls": "token"}[pooling]
    side = size or IMAGE
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    assert (exported(x) - classifier(pixel_values=x).logits).abs().max() <= 1e-5


def test_export_timm_says_in_one_line_what_it_cannot_carry(tmp_path, capsys):
    config = DSeqJEPAConfig(image_size=IMAGE, patch_size=PATCH, hidden_size=WIDTH, num_hidden_layers=DEPTH,
                            num_attention_heads=HEADS, intermediate_size=4 * WIDTH, num_labels=3,
                            classifier_pooling="cls+mean")
    DSeqJEPAForImageClassification(config).save_pretrained(tmp_path / "classifier")
    assert main(["export", "timm", str(tmp_path / "classifier"), "--out", str(tmp_path / "vit")]) == 0
    [note] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert "no 'cls+mean' pooling" in note and "3-class head is left out" in note
    assert json.loads((tmp_path / "vit" / "config.json").read_text())["num_classes"] == 0


def test_export_timm_cli_refuses_a_file_name_or_a_non_empty_folder(tmp_path, capsys):
    config = DSeqJEPAConfig(image_size=IMAGE, patch_size=PATCH, hidden_size=WIDTH, num_hidden_layers=DEPTH,
                            num_attention_heads=HEADS, intermediate_size=4 * WIDTH)
    DSeqJEPAModel(config).save_pretrained(tmp_path / "model")
    assert main(["export", "timm", str(tmp_path / "model"), "--out", str(tmp_path / "vit.pt")]) == 1
    assert "expected a folder" in capsys.readouterr().err and not (tmp_path / "vit.pt").exists()
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "keep.txt").write_text("keep me")
    assert main(["export", "timm", str(tmp_path / "model"), "--out", str(tmp_path / "vit")]) == 1
    assert "is not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "vit").iterdir()) == ["keep.txt"]


# ---- bad input -------------------------------------------------------------------------------------

def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_convert_reports_errors_without_traceback(tmp_path, capsys):
    dseq_release_dict(tmp_path / "ckpt.pth.tar")
    out = tmp_path / "out"
    assert main(["convert", str(tmp_path / "ckpt.pth.tar"), "--format", "dseq-release", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "number of attention heads" in err and "--num-heads" in err and "Traceback" not in err
    assert_nothing_written(tmp_path, out)
    assert main(["convert", str(tmp_path / "ckpt.pth.tar"), "--format", "dseq-release", "--out", str(out),
                 "--num-heads", str(HEADS)]) == 0
    assert "max abs difference" in capsys.readouterr().out


def test_truncated_files(tmp_path):
    dseq_release_dict(tmp_path / "full.pth.tar")
    data = (tmp_path / "full.pth.tar").read_bytes()
    (tmp_path / "cut.pth.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="cut.pth.tar: not a readable checkpoint \\(truncated"):
        convert(tmp_path / "cut.pth.tar", "dseq-release", tmp_path / "out", num_heads=HEADS)
    save_file(release_encoder(True, seed=1), tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(ConversionError, match="cut.safetensors: not a readable safetensors file"):
        convert(tmp_path / "cut.safetensors", "timm", tmp_path / "out", num_heads=HEADS)
    assert_nothing_written(tmp_path, tmp_path / "out")


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_carrying_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    checkpoint = {"target_encoder": release_encoder(True, seed=1), "extra": RunsCode(marker)}
    torch.save(checkpoint, tmp_path / "evil.pth.tar")
    with pytest.raises(ConversionError, match=r"refused: the file refers to code \((posix|nt)\.system\)"):
        convert(tmp_path / "evil.pth.tar", "dseq-release", tmp_path / "out", num_heads=HEADS)
    assert not marker.exists()
    assert_nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("given,written_as,hint", [
    ("hf-ijepa", "dseq", "dseq-release"),
    ("dseq-release", "ijepa", "ijepa-release"),
    ("ijepa-release", "dseq", "dseq-release"),
    ("timm", "ijepa-hf", "hf-ijepa"),
    ("training", "dseq", "checkpoint folder"),
])
def test_wrong_format_is_explained(tmp_path, given, written_as, hint):
    path = tmp_path / "ckpt.pth.tar"
    if written_as == "dseq":
        dseq_release_dict(path)
    elif written_as == "ijepa":
        ijepa_release_dict(path)
    else:
        torch.save(random_ijepa().state_dict(), path)
    with pytest.raises(ConversionError, match=hint):
        convert(path, given, tmp_path / "out", num_heads=HEADS)
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_mismatched_shapes_are_listed_by_name(tmp_path):
    state = release_encoder(True, seed=1)
    state["blocks.1.attn.qkv.weight"] = state["blocks.1.attn.qkv.weight"][:-6]  # (90, 32) instead of (96, 32)
    state["blocks.1.mlp.fc9.weight"] = torch.zeros(2)
    del state["blocks.0.norm2.bias"]
    torch.save(state, tmp_path / "encoder.pth")
    with pytest.raises(ConversionError) as error:
        convert(tmp_path / "encoder.pth", "dseq-release", tmp_path / "out", num_heads=HEADS)
    message = str(error.value)
    assert "blocks.1.attn.qkv.weight: expected (96, 32), found (90, 32)" in message
    assert "unexpected tensors: ['blocks.1.mlp.fc9.weight']" in message
    assert "missing tensors: ['blocks.0.norm2.bias']" in message
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_non_empty_out_is_refused_untouched(tmp_path):
    torch.save(release_encoder(True, seed=1), tmp_path / "encoder.pth")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep")
    with pytest.raises(FolderNotEmptyError, match="out exists and is not an empty folder"):
        convert(tmp_path / "encoder.pth", "dseq-release", tmp_path / "out", num_heads=HEADS)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["precious.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_numerical_mismatch_writes_nothing(tmp_path, monkeypatch):
    """A reader whose renamed tensors do not reproduce the source fails the shared check."""
    torch.save(release_encoder(True, seed=1), tmp_path / "encoder.pth")
    reader = READERS["dseq-release"]

    def corrupting_reader(*args, **kwargs):
        source = reader(*args, **kwargs)
        weight = source.encoder["blocks.1.mlp.fc2.weight"].clone()
        weight[0, 0] += 0.05
        source.encoder["blocks.1.mlp.fc2.weight"] = weight
        return source

    monkeypatch.setitem(READERS, "dseq-release", corrupting_reader)
    with pytest.raises(ConversionError, match="differs from the source by .* above the tolerance"):
        convert(tmp_path / "encoder.pth", "dseq-release", tmp_path / "out", num_heads=HEADS)
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_ambiguous_or_contradicting_sizes(tmp_path):
    torch.save(release_encoder(True, seed=1), tmp_path / "encoder.pth")
    with pytest.raises(ConversionError, match="--preset vit_base_patch16_224 has width 768 but the checkpoint's is 32"):
        convert(tmp_path / "encoder.pth", "dseq-release", tmp_path / "out", preset="vit_base_patch16_224")
    with pytest.raises(ConversionError, match="not divisible by 5 attention heads"):
        convert(tmp_path / "encoder.pth", "dseq-release", tmp_path / "out", num_heads=5)
