"""ONNX export with the saliency: the graph run by onnxruntime against the torch model at two sizes
and two batch sizes, region extraction on its saliency, a failed check writes nothing, the CLI."""

import numpy as np
import pytest
import torch
from PIL import Image

from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAImageProcessorPil, DSeqJEPAModel, default_model_path, extract_regions
from dseqjepa_hub.regions import rank_regions

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx_export = pytest.importorskip("dseqjepa_convert.onnx_export")

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
EXAMPLE = default_model_path().parents[1] / "examples" / "images" / "chelsea.jpg"


def tiny_model(**overrides) -> DSeqJEPAModel:
    torch.manual_seed(0)
    model = DSeqJEPAModel(DSeqJEPAConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(0.2 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module")
def dynamic_graph(tmp_path_factory):
    model = tiny_model()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    lines = []
    result = onnx_export.export_onnx(model, path, dynamic=True, log=lines.append)
    return model, path, result, lines


def test_dynamic_graph_matches_torch_on_two_sizes_and_two_batches(dynamic_graph):
    """The test's own onnxruntime session, on inputs the exporter never checked (other seeds, a third size)."""
    model, path, result, lines = dynamic_graph
    assert path.is_file() and result.dynamic and result.opset == 18
    assert sorted(result.checks) == [(1, 32, 32), (1, 48, 40), (2, 32, 32), (2, 48, 40)]
    assert result.max_abs_difference <= 1e-4
    assert any("max abs difference" in line for line in lines) and lines[-1].startswith(f"wrote {path}")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    assert [o.name for o in session.get_outputs()] == ["pooler_output", "last_hidden_state", "saliency"]
    generator = torch.Generator().manual_seed(123)
    for batch, height, width in [(1, 32, 32), (3, 32, 32), (1, 64, 24), (3, 64, 24)]:
        pixels = torch.randn(batch, 3, height, width, generator=generator)
        pooled, tokens, saliency = session.run(None, {"pixel_values": pixels.numpy()})
        with torch.no_grad():
            expected = model(pixels, output_saliency=True)
        grid = (height // 8, width // 8)
        assert tokens.shape == (batch, 1 + grid[0] * grid[1], 32) and saliency.shape == (batch, *grid)
        np.testing.assert_allclose(pooled, expected.pooler_output.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(tokens, expected.last_hidden_state.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(saliency, expected.saliency.numpy(), atol=1e-4, rtol=0)


def test_fixed_graph_is_one_image_of_the_model_size(tmp_path):
    path = tmp_path / "fixed.onnx"
    result = onnx_export.export_onnx(tiny_model(), path, log=lambda line: None)
    assert list(result.checks) == [(1, 32, 32)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 32, 32]
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"pixel_values": np.zeros((1, 3, 40, 32), np.float32)})


def test_regions_from_the_exported_saliency_are_the_packages(tmp_path):
    """The README's recipe for onnxruntime users: numpy preprocessing, the graph, then the package's exact
    region extraction on CPU give the regions of `rank_regions` on the torch model."""
    path = tmp_path / "default.onnx"
    onnx_export.export_onnx(None, path, dynamic=True, log=lambda line: None)
    processor = DSeqJEPAImageProcessorPil.from_pretrained(default_model_path())
    pixels = processor(Image.open(EXAMPLE), return_tensors="np")["pixel_values"]
    pooled, tokens, saliency = ort.InferenceSession(str(path)).run(None, {"pixel_values": pixels})
    regions = extract_regions(torch.from_numpy(saliency), min_region_fraction=0.15, num_regions=5)
    model = DSeqJEPAModel.from_pretrained(default_model_path()).eval()
    with torch.no_grad():
        expected = rank_regions(model, torch.from_numpy(pixels))
    assert regions.valid.sum() >= 2
    assert torch.equal(regions.masks, expected["masks"]) and torch.equal(regions.valid, expected["valid"])
    torch.testing.assert_close(regions.scores, expected["scores"], atol=1e-4, rtol=0)


def test_a_failed_check_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "out.onnx"
    with pytest.raises(onnx_export.OnnxExportError, match="above the tolerance 1e-12: nothing was written"):
        onnx_export.export_onnx(tiny_model(), path, tolerance=1e-12, log=lambda line: None)
    assert list(tmp_path.iterdir()) == []
    # A graph that computes something else (here: the torch side changed after export) is caught too.
    real_export = onnx_export._export

    def export_then_break(graph, staged, **kwargs):
        real_export(graph, staged, **kwargs)
        with torch.no_grad():
            graph.model.norm.bias.add_(1e-3)

    monkeypatch.setattr(onnx_export, "_export", export_then_break)
    with pytest.raises(onnx_export.OnnxExportError, match="differs from the torch model"):
        onnx_export.export_onnx(tiny_model(), path, log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_refusals_name_the_problem(tmp_path):
    (tmp_path / "taken.onnx").write_bytes(b"x")
    with pytest.raises(onnx_export.OnnxExportError, match="taken.onnx already exists"):
        onnx_export.export_onnx(tiny_model(), tmp_path / "taken.onnx")
    with pytest.raises(onnx_export.OnnxExportError, match="must end in .onnx"):
        onnx_export.export_onnx(tiny_model(), tmp_path / "model.bin")
    with pytest.raises(onnx_export.OnnxExportError, match="opset 18 or newer"):
        onnx_export.export_onnx(tiny_model(), tmp_path / "old.onnx", opset=13)
    learned = tiny_model()
    with torch.no_grad():
        learned.pos_embed.add_(0.1 * torch.randn_like(learned.pos_embed))
    with pytest.raises(onnx_export.OnnxExportError, match="not the fixed 2-D sin-cos.*without --dynamic"):
        onnx_export.export_onnx(learned, tmp_path / "learned.onnx", dynamic=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]


def test_cli_export_onnx(tmp_path, capsys):
    from dseqjepa_cli import main

    model = tiny_model()
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "model.onnx"
    assert main(["export", "onnx", str(tmp_path / "model"), "--out", str(out), "--opset", "18"]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime vs torch, batch 1 at 32x32: max abs difference" in printed and f"wrote {out}" in printed
    assert main(["export", "onnx", str(tmp_path / "model"), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "onnx", str(tmp_path / "model"), "--out", str(tmp_path / "strict.onnx"), "--atol", "0"]) == 1
    assert "nothing was written" in capsys.readouterr().err and not (tmp_path / "strict.onnx").exists()


def test_a_fine_tuned_classifier_keeps_its_logits(tmp_path, capsys):
    """`export onnx` of a classifier folder: a fourth output, `logits`, checked by the exporter and here by
    the test's own onnxruntime session against the classifier (linear probe's BatchNorm included)."""
    from dseqjepa_cli import main
    from dseqjepa_hub import DSeqJEPAForImageClassification

    torch.manual_seed(2)
    classifier = DSeqJEPAForImageClassification(DSeqJEPAConfig(**TINY, num_labels=4, classifier_batchnorm=True)).eval()
    classifier.batchnorm.running_mean.normal_()
    classifier.batchnorm.running_var.uniform_(0.5, 2.0)
    classifier.save_pretrained(tmp_path / "classifier")
    out = tmp_path / "classifier.onnx"
    assert main(["export", "onnx", str(tmp_path / "classifier"), "--out", str(out), "--dynamic"]) == 0
    assert "outputs pooler_output, last_hidden_state, saliency, logits" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["pooler_output", "last_hidden_state", "saliency", "logits"]
    pixels = torch.randn(3, 3, 40, 56, generator=torch.Generator().manual_seed(7))
    pooled, _, _, logits = session.run(None, {"pixel_values": pixels.numpy()})
    with torch.no_grad():
        expected = classifier(pixel_values=pixels).logits
        encoder = classifier.dseqjepa(pixels)
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(pooled, encoder.pooler_output.numpy(), atol=1e-4, rtol=0)
