"""The core model against independent references (timm, transformers' IJepaModel, I-JEPA's numpy
sin-cos), its attention paths, dtypes, serialisation and its errors on bad input."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from transformers import AutoModel, IJepaConfig, IJepaModel, pipeline

from dseqjepa_hub import (
    PRESETS,
    DSeqJEPAConfig,
    DSeqJEPAForImageClassification,
    DSeqJEPAImageProcessor,
    DSeqJEPAModel,
    DSeqJEPAPredictor,
    DSeqJEPAPredictorConfig,
)
from dseqjepa_hub.errors import ModelLoadError
from dseqjepa_hub.modeling_dseqjepa import sincos_pos_embed_2d

TINY = dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128)


def tiny_model(**overrides) -> DSeqJEPAModel:
    torch.manual_seed(0)
    model = DSeqJEPAModel(DSeqJEPAConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # non-trivial biases and norms, so that a wrong copy shows
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model


def ijepa_numpy_sincos(dim: int, height: int, width: int) -> np.ndarray:
    """I-JEPA's get_2d_sincos_pos_embed, written out from its published description (float64 numpy)."""

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)), axis=0)
    return np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)


def timm_twin(model: DSeqJEPAModel) -> VisionTransformer:
    """timm's VisionTransformer with the same sizes and weights (the patch mean is pooled after the norm)."""
    config = model.config
    twin = VisionTransformer(
        img_size=config.image_size, patch_size=config.patch_size, embed_dim=config.hidden_size,
        depth=config.num_hidden_layers, num_heads=config.num_attention_heads,
        mlp_ratio=config.intermediate_size / config.hidden_size, qkv_bias=True, class_token=config.use_cls_token,
        global_pool="avg", fc_norm=False, num_classes=0,
    ).eval()
    state = dict(model.state_dict())
    if config.use_cls_token:  # timm keeps a position for the CLS token: zero here
        state["pos_embed"] = torch.cat([torch.zeros(1, 1, config.hidden_size), state["pos_embed"]], dim=1)
    twin.load_state_dict(state, strict=True)
    return twin


@pytest.mark.parametrize("use_cls_token", [True, False])
def test_matches_timm_vision_transformer(use_cls_token):
    model = tiny_model(use_cls_token=use_cls_token)
    twin = timm_twin(model)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours = model(pixels)
        tokens = twin.forward_features(pixels)
        pooled = twin.forward_head(tokens, pre_logits=True)
    assert ours.last_hidden_state.shape == (3, 16 + int(use_cls_token), 64)
    torch.testing.assert_close(ours.last_hidden_state, tokens, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.pooler_output, pooled, atol=1e-4, rtol=0)


def test_no_cls_mode_matches_transformers_ijepa():
    model = tiny_model(use_cls_token=False)
    reference = IJepaModel(
        IJepaConfig(
            image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
            intermediate_size=128, layer_norm_eps=1e-6, qkv_bias=True, hidden_act="gelu",
        )
    ).eval()
    ours = model.state_dict()
    mapped = {
        "embeddings.position_embeddings": ours["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": ours["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": ours["patch_embed.proj.bias"],
        "layernorm.weight": ours["norm.weight"],
        "layernorm.bias": ours["norm.bias"],
    }
    for i in range(3):
        prefix, target = f"blocks.{i}.", f"layers.{i}."
        for part in ("weight", "bias"):
            q, k, v = ours[prefix + f"attn.qkv.{part}"].chunk(3, dim=0)
            mapped.update({
                target + f"attention.q_proj.{part}": q,
                target + f"attention.k_proj.{part}": k,
                target + f"attention.v_proj.{part}": v,
                target + f"attention.o_proj.{part}": ours[prefix + f"attn.proj.{part}"],
                target + f"layernorm_before.{part}": ours[prefix + f"norm1.{part}"],
                target + f"layernorm_after.{part}": ours[prefix + f"norm2.{part}"],
                target + f"mlp.fc1.{part}": ours[prefix + f"mlp.fc1.{part}"],
                target + f"mlp.fc2.{part}": ours[prefix + f"mlp.fc2.{part}"],
            })
    reference.load_state_dict(mapped, strict=True)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(pixels).last_hidden_state
        actual = model(pixels)
    torch.testing.assert_close(actual.last_hidden_state, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.pooler_output, expected.mean(dim=1), atol=1e-4, rtol=0)


def test_position_embedding_is_ijepa_sincos_on_any_grid():
    model = tiny_model()
    expected = torch.from_numpy(ijepa_numpy_sincos(64, 4, 4)).float()
    torch.testing.assert_close(model.pos_embed[0], expected, atol=1e-6, rtol=0)
    pixels = torch.randn(2, 3, 24, 40)  # non-square 3 x 5 grid
    with torch.no_grad():
        tokens, grid = model.embed(pixels, interpolate_pos_encoding=True)
        patches = model.patch_embed.proj(pixels).flatten(2).transpose(1, 2)
    assert grid == (3, 5)
    rebuilt = torch.from_numpy(ijepa_numpy_sincos(64, 3, 5)).float()
    torch.testing.assert_close(tokens[:, 1:] - patches, rebuilt.expand(2, -1, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens[:, 0], model.cls_token[0].expand(2, -1))  # zero position for CLS
    with torch.no_grad():
        out = model(pixels, interpolate_pos_encoding=True, output_saliency=True)
    assert out.last_hidden_state.shape == (2, 16, 64) and out.saliency.shape == (2, 3, 5)


def test_sdpa_and_eager_agree_and_eager_returns_attentions(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    eager = DSeqJEPAModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert model.config._attn_implementation == "sdpa"
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast = model(pixels, output_hidden_states=True)
        slow = eager(pixels, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(fast.last_hidden_state, slow.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert len(slow.attentions) == 3 and slow.attentions[0].shape == (2, 4, 17, 17)
    torch.testing.assert_close(slow.attentions[0].sum(-1), torch.ones(2, 4, 17))
    assert len(fast.hidden_states) == 4
    with torch.no_grad():  # as transformers 5 models, no error: the weights are computed eagerly
        asked = model(pixels, output_attentions=True)
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(asked.attentions, slow.attentions, atol=1e-6, rtol=0)
    torch.testing.assert_close(asked.last_hidden_state, slow.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_recorded_outputs_are_every_blocks_input_output_and_attention(tmp_path):
    """hidden_states: the embeddings then each block's output (before the final norm); attentions:
    each block's softmax(q k^T / sqrt(d)), computed here by hand from the fused qkv weights."""
    tiny_model().save_pretrained(tmp_path)
    model = DSeqJEPAModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True, output_attentions=True)
        tokens, _ = model.embed(pixels)
        states, attentions = [tokens], []
        for block in model.blocks:
            q, k, _ = block.attn.qkv(block.norm1(tokens)).reshape(2, 17, 3, 4, 16).permute(2, 0, 3, 1, 4)
            attentions.append((q @ k.transpose(-2, -1) / 4.0).softmax(dim=-1))  # (B, H, L, L)
            tokens = block(tokens)
            states.append(tokens)
        plain = model(pixels)
        as_tuple = model(pixels, output_hidden_states=True, return_dict=False)
    assert len(out.hidden_states) == 4 and len(out.attentions) == 3
    for recorded, expected in zip(out.hidden_states, states, strict=True):
        torch.testing.assert_close(recorded, expected, atol=1e-6, rtol=0)
    for recorded, expected in zip(out.attentions, attentions, strict=True):
        assert recorded.shape == (2, 4, 17, 17)
        torch.testing.assert_close(recorded, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.norm(out.hidden_states[-1]), out.last_hidden_state)
    assert plain.hidden_states is None and plain.attentions is None  # nothing recorded unless asked
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 3 and len(as_tuple[2]) == 4
    model.config.output_hidden_states = True  # the config's default applies too
    with torch.no_grad():
        assert len(model(pixels).hidden_states) == 4


def test_classification_head_passes_recording_and_return_dict_through():
    head = DSeqJEPAForImageClassification(DSeqJEPAConfig(**TINY, num_labels=3)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = head(pixels, output_hidden_states=True)
        encoder = head.dseqjepa(pixels, output_hidden_states=True)
        as_tuple = head(pixels, return_dict=False)
    assert len(out.hidden_states) == 4
    for recorded, expected in zip(out.hidden_states, encoder.hidden_states, strict=True):
        torch.testing.assert_close(recorded, expected)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1 and as_tuple[0].shape == (2, 3)


def test_misspelt_forward_options_are_refused():
    model = tiny_model()
    head = DSeqJEPAForImageClassification(DSeqJEPAConfig(**TINY, num_labels=2))
    pixels = torch.randn(1, 3, 32, 32)
    with pytest.raises(TypeError, match="argument 'output_saliancy'; did you mean 'output_saliency'"):
        model(pixel_values=pixels, output_saliancy=True)
    with pytest.raises(TypeError, match="argument 'output_hidden_state'; did you mean 'output_hidden_states'"):
        head(pixels, output_hidden_state=True)
    with pytest.raises(TypeError, match="DSeqJEPAModel.forward.. got an unexpected keyword argument 'num_items_in_batch'"):
        model(pixels, num_items_in_batch=4)  # a loss option: the head's only
    with pytest.raises(TypeError, match="argument 'output_saliency'"):
        head(pixels, output_saliency=True)


def test_classification_loss_divides_by_trainers_item_count():
    """Trainer passes `num_items_in_batch` (the labels of all accumulated batches): sum / count, not a mean."""
    head = DSeqJEPAForImageClassification(DSeqJEPAConfig(**TINY, num_labels=3)).eval()
    pixels, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        mean = head(pixels, labels=labels).loss
        counted = head(pixels, labels=labels, num_items_in_batch=torch.tensor(8)).loss
    torch.testing.assert_close(counted, mean / 2)


def test_attention_masks_match_dropping_the_masked_tokens():
    """A key mask over the full sequence must equal running only the kept tokens (training's two modes)."""
    model = tiny_model()
    pixels = torch.randn(2, 3, 32, 32)
    keep = torch.zeros(2, 17, dtype=torch.bool)
    keep[:, :7] = True
    with torch.no_grad():
        tokens, _ = model.embed(pixels)
        masked = model.encode(tokens, attention_mask=keep)
        dropped = model.encode(tokens[:, :7])
        pairwise = model.encode(tokens, attention_mask=keep[:, None, :].expand(2, 17, 17))
    torch.testing.assert_close(masked[:, :7], dropped, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pairwise[:, :7], dropped, atol=1e-5, rtol=1e-5)


def test_saliency_is_cls_parameter_against_normed_saliency_block():
    model = tiny_model()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(pixels, output_saliency=True, output_hidden_states=True)
        block = out.hidden_states[model.config.saliency_layer + 1]  # hidden_states[0] is the embeddings
        keys = torch.nn.functional.layer_norm(block[:, 1:], (64,), model.norm.weight, model.norm.bias, 1e-6)
        expected = (keys @ model.cls_token[0, 0]) / 8.0
    assert model.config.saliency_layer == 1
    torch.testing.assert_close(out.saliency, expected.reshape(2, 4, 4), atol=1e-5, rtol=1e-5)
    fallback = tiny_model(use_cls_token=False)
    assert fallback.config.saliency_query == "mean_patch"
    with torch.no_grad():
        assert fallback(pixels, output_saliency=True).saliency.shape == (2, 4, 4)


def test_saliency_stays_float32_under_autocast():
    model = tiny_model()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(pixels, output_saliency=True, output_hidden_states=True)
        block = mixed.hidden_states[model.config.saliency_layer + 1].float()
        keys = torch.nn.functional.layer_norm(block[:, 1:], (64,), model.norm.weight, model.norm.bias, 1e-6)
        expected = (keys @ model.cls_token[0, 0]) / 8.0
    assert mixed.saliency.dtype == torch.float32
    torch.testing.assert_close(mixed.saliency, expected.reshape(2, 4, 4), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_close_to_fp32(dtype):
    model = tiny_model()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(pixels).last_hidden_state
        half = model.to(dtype)(pixels, output_saliency=True)
    assert half.last_hidden_state.dtype == dtype
    assert torch.isfinite(half.last_hidden_state.float()).all()
    assert (half.last_hidden_state.float() - reference).abs().max() < 0.1


def test_gradient_checkpointing_recomputes_the_blocks_and_gives_the_same_gradients():
    def gradients(checkpointing):
        model = tiny_model()
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        calls = []  # attention runs: once per block forward, again per block in the backward when checkpointed
        for block in model.blocks:
            block.attn.register_forward_pre_hook(lambda *_: calls.append(1))
        model(torch.ones(2, 3, 32, 32)).pooler_output.square().sum().backward()
        assert len(calls) == len(model.blocks) * (2 if checkpointing else 1)
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5)


def test_save_and_reload_is_bit_identical(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    reloaded = DSeqJEPAModel.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(pixels).last_hidden_state, reloaded(pixels).last_hidden_state)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name


def test_folder_with_normalisation_in_config_json_loads_and_its_processor_takes_it(tmp_path):
    """Earlier versions wrote image_mean / image_std into config.json: such a folder still loads, and a
    processor built from its config (a folder without preprocessor_config.json) normalises with them."""
    model = tiny_model()
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").unlink(missing_ok=True)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "image_mean" not in saved and "image_std" not in saved
    saved.update(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.5, 0.75])
    (tmp_path / "config.json").write_text(json.dumps(saved))
    reloaded = DSeqJEPAModel.from_pretrained(tmp_path).eval()
    processor = DSeqJEPAImageProcessor.from_model_config(reloaded.config)
    assert (list(processor.image_mean), list(processor.image_std)) == ([0.5, 0.5, 0.5], [0.25, 0.5, 0.75])
    assert list(DSeqJEPAImageProcessor.from_model_config(model.config).image_std) == [0.229, 0.224, 0.225]
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(pixels).last_hidden_state, reloaded(pixels).last_hidden_state)


@pytest.mark.parametrize("num_channels", [1, 4])
def test_any_number_of_channels_builds_and_runs(num_channels):
    config = DSeqJEPAConfig(**TINY, num_channels=num_channels, num_labels=3)
    logits = DSeqJEPAForImageClassification(config).eval()(torch.randn(2, num_channels, 32, 32)).logits
    assert logits.shape == (2, 3)


def test_remote_code_loads_without_the_package(tmp_path):
    model = tiny_model()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    DSeqJEPAImageProcessor.from_model_config(model.config).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_dseqjepa.DSeqJEPAModel"
    pixels = torch.rand(2, 3, 32, 32)
    torch.save(pixels, tmp_path / "pixels.pt")
    with torch.no_grad():
        expected = model(pixels).last_hidden_state
    script = textwrap.dedent(f"""
        import sys
        sys.modules["dseqjepa_hub"] = None  # the package must not be importable
        import torch
        from transformers import AutoImageProcessor, AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(processor).__name__ == "DSeqJEPAImageProcessor", type(processor).__name__
        pixels = torch.load({str(tmp_path / "pixels.pt")!r}, weights_only=True)
        with torch.no_grad():
            torch.save(model(pixels).last_hidden_state, {str(tmp_path / "out.pt")!r})
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, timeout=300)
    assert torch.equal(torch.load(tmp_path / "out.pt", weights_only=True), expected)


def test_image_feature_extraction_pipeline(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    DSeqJEPAImageProcessor.from_model_config(model.config).save_pretrained(tmp_path)
    extractor = pipeline("image-feature-extraction", model=str(tmp_path))
    image = Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8))
    tokens = np.asarray(extractor(image))
    pooled = np.asarray(extractor(image, pool=True))
    assert tokens.shape == (1, 17, 64) and pooled.shape == (1, 64)
    np.testing.assert_allclose(pooled[0], tokens[0, 1:].mean(axis=0), atol=1e-5)


def test_auto_model_resolves_registered_classes(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)) is DSeqJEPAModel


@pytest.mark.parametrize("pooling", ["mean", "cls", "cls+mean"])
def test_classification_head_pooling_and_losses(pooling):
    config = DSeqJEPAConfig(**TINY, num_labels=3, classifier_pooling=pooling, classifier_batchnorm=True)
    model = DSeqJEPAForImageClassification(config)
    pixels = torch.randn(4, 3, 32, 32)
    out = model(pixels, labels=torch.tensor([0, 1, 2, 0]))
    assert out.logits.shape == (4, 3) and out.loss.ndim == 0
    assert model.classifier.in_features == (128 if pooling == "cls+mean" else 64)
    model.config.problem_type = "multi_label_classification"
    assert model(pixels, labels=torch.ones(4, 3)).loss.ndim == 0
    assert list(model.state_dict())[0].startswith("dseqjepa.")


def test_frozen_backbone_trains_only_the_head():
    config = DSeqJEPAConfig(**TINY, num_labels=2, freeze_backbone=True, classifier_batchnorm=True)
    model = DSeqJEPAForImageClassification(config).train()
    model(torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    assert all(p.grad is None for p in model.dseqjepa.parameters())
    assert model.classifier.weight.grad is not None


def test_presets_have_ijepa_sizes():
    base = DSeqJEPAModel(DSeqJEPAConfig.from_preset("vit_base_patch16_224"))
    # timm's vit_base_patch16_224 (86,567,656) less its 1000-class head (769,000) and its position
    # embedding (197 x 768, a fixed buffer here)
    assert sum(p.numel() for p in base.parameters()) == 86_567_656 - 769_000 - 197 * 768
    expected = {
        "vit_tiny_patch16_224": (192, 12, 3, 16, 224), "vit_small_patch16_224": (384, 12, 6, 16, 224),
        "vit_large_patch16_224": (1024, 24, 16, 16, 224), "vit_huge_patch14_224": (1280, 32, 16, 14, 224),
        "vit_huge_patch16_448": (1280, 32, 16, 16, 448), "vit_giant_patch16_224": (1408, 40, 16, 16, 224),
    }
    for name, (width, depth, heads, patch, size) in expected.items():
        config = DSeqJEPAConfig.from_preset(name)
        assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (width, depth, heads)
        assert (config.patch_size, config.image_size, config.saliency_layer) == (patch, size, depth - 2)
    assert DSeqJEPAConfig.from_preset("vit_giant_patch16_224").intermediate_size == 6144  # mlp ratio 48/11
    assert set(expected) | {"vit_base_patch16_224"} <= set(PRESETS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=60, num_attention_heads=8), r"hidden_size \(60\) must be divisible by num_attention_heads \(8\)"),
        (dict(image_size=30, patch_size=8), r"image_size \(30\) must be divisible by patch_size \(8\)"),
        (dict(hidden_size="64"), r"Field 'hidden_size' expected int, got str \(value: '64'\)"),
        (dict(hidden_size=0), r"field 'hidden_size':\n.*expected a positive int, found 0"),
        (dict(min_region_fraction=-0.1), r"field 'min_region_fraction':\n.*expected a number in \[0, 1\], found -0.1"),
        (dict(layer_norm_eps=0.0), r"field 'layer_norm_eps':\n.*expected a finite number > 0, found 0.0"),
        (dict(num_regions=True), r"Field 'num_regions' expected int, got bool"),
        (dict(use_cls_token="yes"), r"Field 'use_cls_token' expected bool, got str"),
        (dict(layer_norm_eps=1), r"Field 'layer_norm_eps' expected float, got int"),
        (dict(saliency_layer=7), r"saliency_layer: expected a block index in \[0, 2\], found 7"),
        (dict(saliency_layer=-1), r"saliency_layer: expected a block index in \[0, 2\], found -1"),
        (dict(predictor_num_attention_heads=0), r"predictor_num_attention_heads: expected a positive int, found 0"),
        (dict(classifier_pooling="max"), r"classifier_pooling: expected one of \('mean', 'cls', 'cls\+mean'\), found 'max'"),
        (dict(use_cls_token=False, saliency_query="cls_token"), "needs use_cls_token=True"),
    ],
)
def test_inconsistent_config_fields_are_named(kwargs, message):
    with pytest.raises(StrictDataclassError, match=message):
        DSeqJEPAConfig(**{**TINY, **kwargs})


@pytest.mark.parametrize("name", ["layer_norm_eps", "min_region_fraction", "initializer_range"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_floats_are_refused(name, value):
    with pytest.raises(StrictDataclassError, match=rf"field '{name}':\n.*found {value}"):
        DSeqJEPAConfig(**{**TINY, name: value})
    config = DSeqJEPAConfig(**TINY)
    with pytest.raises(StrictDataclassError, match=f"field '{name}'"):  # on assignment too
        setattr(config, name, value)


def test_config_is_a_typed_dataclass_with_derived_defaults():
    config = DSeqJEPAConfig(**TINY, use_cls_token=False)
    assert (config.saliency_layer, config.saliency_query, config.predictor_num_attention_heads) == (1, "mean_patch", 4)
    assert config.grid_size == (4, 4)
    assert not {"image_mean", "image_std"} & set(config.to_dict())  # preprocessing: the image processor's
    types = {field.name: field.type for field in dataclasses.fields(DSeqJEPAConfig)}
    assert types["hidden_size"] is int and types["layer_norm_eps"] is float  # real types: `strict` checks them
    with pytest.raises(StrictDataclassError, match="Field 'num_hidden_layers' expected int"):
        config.num_hidden_layers = 3.0
    reloaded = DSeqJEPAConfig.from_dict(config.to_dict())
    assert reloaded.to_dict() == config.to_dict()


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="Unknown DSeq-JEPA preset 'vit_mega'.*vit_base_patch16_224"):
        DSeqJEPAConfig.from_preset("vit_mega")


def test_bad_config_json_is_named(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in saved.items() if k != "hidden_size"}))
    with pytest.raises(ModelLoadError, match=r"missing required field\(s\) \['hidden_size'\]"):
        DSeqJEPAModel.from_pretrained(tmp_path)
    path.write_text(json.dumps({**saved, "num_hidden_layers": "three"}))
    with pytest.raises(ModelLoadError, match=r"Field 'num_hidden_layers' expected int, got str \(value: 'three'\)") as raised:
        DSeqJEPAModel.from_pretrained(tmp_path)
    assert isinstance(raised.value.__cause__, StrictDataclassError)  # the original, chained
    path.write_text(json.dumps({**saved, "layer_norm_eps": float("nan")}))
    with pytest.raises(ModelLoadError, match=r"field 'layer_norm_eps': .*found nan"):
        DSeqJEPAModel.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((1, 1, 32, 32), {}, r"1 channel\(s\) but the model expects 3"),
        ((1, 4, 32, 32), {}, r"4 channel\(s\) but the model expects 3"),
        ((1, 3, 30, 32), {"interpolate_pos_encoding": True}, "30x32 is not a multiple of the patch size 8"),
        ((3, 32, 32), {}, r"must be a \(batch, channels, height, width\) tensor, found \(3, 32, 32\)"),
    ],
)
def test_bad_pixel_values_are_explained(shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model()(torch.zeros(shape), **kwargs)


def test_image_processor_modes_and_crop_box(tmp_path):
    config = DSeqJEPAConfig(**TINY)
    processor = DSeqJEPAImageProcessor.from_model_config(config)
    images = [
        Image.new("L", (50, 40), 128),
        Image.new("RGBA", (20, 60)),
        np.zeros((33, 45, 3), np.uint8),
        torch.zeros(3, 40, 40, dtype=torch.uint8),
    ]
    batch = processor(images, return_tensors="pt")
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert processor.crop_box((40, 50)) == (0, 0, 50, 40)
    cropping = DSeqJEPAImageProcessor.from_model_config(config, center_crop=True)
    assert cropping(images[0], return_tensors="pt")["pixel_values"].shape == (1, 3, 32, 32)
    # shorter side 40 -> 37 (32 * 8/7), longer 50 -> 46; a centred 32x32 crop covers x 7..39, y 2..34 there
    assert cropping.crop_box((40, 50)) == (8, 2, 42, 37)
    cropping.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["do_center_crop"] is True
    assert DSeqJEPAImageProcessor.from_pretrained(tmp_path).crop_box((40, 50)) == (8, 2, 42, 37)


# ----------------------------------------------------------------------------- the pretraining predictor


def tiny_predictor() -> DSeqJEPAPredictor:
    torch.manual_seed(0)
    config = DSeqJEPAPredictorConfig.from_encoder_config(DSeqJEPAConfig(**TINY, predictor_hidden_size=16))
    predictor = DSeqJEPAPredictor(config).eval()
    with torch.no_grad():  # non-trivial biases and norms, so that a wrong copy shows
        for name, param in predictor.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return predictor


def predictor_inputs(seed: int = 3) -> tuple[torch.Tensor, ...]:
    """3 sequences: CLS + 5 context tokens of a 4 x 4 grid, 4 target queries (some padding)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(3, 6, 64, generator=generator), torch.randint(0, 16, (3, 5), generator=generator),
            torch.rand(3, 6, generator=generator) > 0.2, torch.randint(0, 16, (3, 4), generator=generator),
            torch.tensor([[True] * 4, [True] * 3 + [False], [True, True, False, False]]))


def test_predictor_config_follows_the_encoder_and_is_checked():
    encoder = DSeqJEPAConfig(**TINY, predictor_hidden_size=16, predictor_num_hidden_layers=2, layer_norm_eps=1e-5)
    config = DSeqJEPAPredictorConfig.from_encoder_config(encoder)
    assert (config.encoder_hidden_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        64, 16, 2, 4)  # the head count defaults to the encoder's
    assert config.intermediate_size == 64 and config.grid_size == (4, 4) and config.layer_norm_eps == 1e-5
    with pytest.raises(StrictDataclassError, match=r"hidden_size \(18\) must be divisible by num_attention_heads \(4\)"):
        DSeqJEPAPredictorConfig(hidden_size=18, num_attention_heads=4)
    with pytest.raises(StrictDataclassError, match=r"hidden_size \(6\) must be divisible by 4"):
        DSeqJEPAPredictorConfig(hidden_size=6, num_attention_heads=3)
    with pytest.raises(StrictDataclassError, match=r"field 'num_hidden_layers':\n.*expected a positive int, found 0"):
        DSeqJEPAPredictorConfig(num_hidden_layers=0)
    saved = {k: v for k, v in config.to_dict().items() if k != "encoder_hidden_size"}
    with pytest.raises(ModelLoadError, match=r"missing required field\(s\) \['encoder_hidden_size'\]"):
        DSeqJEPAPredictorConfig.from_dict(saved)


@torch.no_grad()
def test_predictor_init_is_ijepas():
    """Truncated-normal linears and mask token (std initializer_range), zero biases, unit norms, sin-cos positions."""
    torch.manual_seed(0)
    predictor = DSeqJEPAPredictor(DSeqJEPAPredictorConfig.from_encoder_config(DSeqJEPAConfig(**TINY)))
    height, width = predictor.config.grid_size
    assert torch.equal(predictor.predictor_pos_embed[0], sincos_pos_embed_2d(192, height, width))
    for name, param in predictor.named_parameters():
        if "norm" in name:
            assert torch.equal(param, torch.ones_like(param) if name.endswith("weight") else torch.zeros_like(param))
        elif name.endswith("bias"):
            assert not param.any(), name
        else:
            assert 0.015 < float(param.std()) < 0.025 and abs(float(param.mean())) < 0.005, name


def test_predictor_saves_and_loads_with_automodel_and_remote_code(tmp_path):
    predictor = tiny_predictor()
    folder = tmp_path / "predictor"
    predictor.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "dseqjepa_predictor"
    assert config["auto_map"] == {"AutoConfig": "configuration_dseqjepa.DSeqJEPAPredictorConfig",
                                  "AutoModel": "modeling_dseqjepa.DSeqJEPAPredictor"}
    reloaded = AutoModel.from_pretrained(folder).eval()
    assert type(reloaded) is DSeqJEPAPredictor
    inputs = predictor_inputs()
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = predictor(*inputs)
        assert expected.shape == (3, 4, 64) and torch.equal(reloaded(*inputs), expected)
        assert not torch.equal(predictor(*inputs, mask_token=False), expected)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["dseqjepa_hub"] = None  # the package must not be importable
        import torch
        from transformers import AutoModel
        predictor = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(predictor).__module__.startswith("transformers_modules"), type(predictor).__module__
        with torch.no_grad():
            torch.save(predictor(*torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)), {str(tmp_path / "out.pt")!r})
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, timeout=300)
    assert torch.equal(torch.load(tmp_path / "out.pt", weights_only=True), expected)


def test_library_calls_are_silent_and_a_dropped_head_is_one_line(tmp_path, capfd):
    """No weight-loading or shard-writing bar, no LOAD REPORT: an encoder loaded from a classifier's folder
    (AutoModel, the saliency pipeline) says in one line that the head was left out; the rest says nothing."""
    from dseqjepa_hub import DSeqJEPAForImageClassification

    config = DSeqJEPAConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, num_labels=3, classifier_batchnorm=True)
    DSeqJEPAForImageClassification(config).save_pretrained(tmp_path / "classifier")
    DSeqJEPAModel(config).save_pretrained(tmp_path / "encoder")
    DSeqJEPAForImageClassification.from_pretrained(tmp_path / "classifier")
    DSeqJEPAModel.from_pretrained(tmp_path / "encoder")
    pipeline("saliency-ranking", model=tmp_path / "encoder")
    quiet = capfd.readouterr()
    assert quiet.err == "" and quiet.out == ""
    from transformers.testing_utils import CaptureLogger

    from dseqjepa_hub import modeling_dseqjepa

    with CaptureLogger(modeling_dseqjepa.logger) as captured:
        encoder = AutoModel.from_pretrained(tmp_path / "classifier")
        pipeline("saliency-ranking", model=tmp_path / "classifier")
    assert capfd.readouterr().err == ""
    assert captured.out.splitlines() == [f"DSeqJEPAModel from {tmp_path / 'classifier'}: its classification head was left out (an encoder "
                     "was asked for; DSeqJEPAForImageClassification loads the head)"] * 2
    assert type(encoder) is DSeqJEPAModel
