"""The model loads and runs as a transformers 5 model does: `dtype="auto"`, `device_map`,
`attn_implementation=`, `torch.compile(fullgraph=True)` of the encoder forward with its saliency.
(Gradient checkpointing: tests/test_model.py.)"""

import pytest
import torch
from transformers import AutoModel

from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAForImageClassification, DSeqJEPAModel

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    DSeqJEPAModel(DSeqJEPAConfig(**TINY)).save_pretrained(path)
    return path


def pixels(height=32, width=32):
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))


def test_dtype_auto_loads_the_saved_dtype(tmp_path, folder):
    DSeqJEPAModel.from_pretrained(folder).to(torch.bfloat16).save_pretrained(tmp_path)
    auto = DSeqJEPAModel.from_pretrained(tmp_path, dtype="auto").eval()
    assert {p.dtype for p in auto.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        outputs = auto(pixels(48, 40), output_saliency=True)  # a non-native size regenerates the positions
    assert outputs.last_hidden_state.dtype == torch.bfloat16
    assert torch.isfinite(outputs.saliency).all()
    asked = DSeqJEPAModel.from_pretrained(tmp_path, dtype=torch.float32)
    assert {p.dtype for p in asked.parameters()} == {torch.float32}


@pytest.mark.parametrize("device_map", ["cpu", "auto", {"": "cpu"}])
def test_device_map(folder, device_map):
    model = DSeqJEPAModel.from_pretrained(folder, device_map=device_map).eval()
    assert {tensor.device.type for tensor in model.state_dict().values()} == {"cpu"}
    plain = DSeqJEPAModel.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(model(pixels()).last_hidden_state, plain(pixels()).last_hidden_state)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attn_implementation_at_loading(folder, implementation):
    for model in (
        DSeqJEPAModel.from_pretrained(folder, attn_implementation=implementation),
        AutoModel.from_pretrained(folder, attn_implementation=implementation),
        DSeqJEPAForImageClassification.from_pretrained(folder, attn_implementation=implementation, num_labels=3),
    ):
        assert model.config._attn_implementation == implementation


def test_the_encoder_forward_compiles_to_one_graph(folder):
    """fullgraph=True raises at the first graph break, whatever the backend; aot_eager traces through
    dynamo and AOTAutograd as inductor does, without inductor's C++ build (half a minute on a CPU)."""
    model = DSeqJEPAModel.from_pretrained(folder).eval()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for height, width in ((32, 32), (48, 40)):
        with torch.no_grad():
            expected = model(pixels(height, width), output_saliency=True)
            outputs = compiled(pixels(height, width), output_saliency=True)
        torch.testing.assert_close(outputs.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=0)
        torch.testing.assert_close(outputs.saliency, expected.saliency, atol=1e-5, rtol=0)
    assert model._can_compile_fullgraph
