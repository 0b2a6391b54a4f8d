"""Every attention implementation transformers' attention interface offers, as this encoder meets it:
those that run on the CPU give the eager outputs (native and other input sizes, saliency, hidden
states, attentions, masked attention in `encode`); the others are refused in one line, whichever
way they are asked for."""

import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAModel
from dseqjepa_hub.errors import ModelLoadError

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
ON_THE_CPU = ("sdpa", "flex_attention")  # besides "eager", the reference
REFUSED = {  # the rest of the interface, and the start of the one line that refuses each
    "flash_attention_2": "DSeqJEPAModel does not support Flash Attention 2",
    "flash_attention_3": "DSeqJEPAModel does not support Flash Attention 3",
    "flash_attention_4": "DSeqJEPAModel does not support Flash Attention 4",
    "paged|eager": "DSeqJEPAModel does not support attn_implementation='paged|eager' (paged attention needs",
}
SIZES = [(32, 32), (48, 40)]  # the native input size, and another one


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    DSeqJEPAModel(DSeqJEPAConfig(**TINY)).save_pretrained(path)
    return path


def test_every_implementation_of_the_interface_is_run_or_refused_here():
    # A new implementation in transformers shows here, to be checked (ON_THE_CPU) or refused (REFUSED).
    assert set(ALL_ATTENTION_FUNCTIONS.valid_keys()) == {*ON_THE_CPU, *REFUSED}


@pytest.mark.parametrize("implementation", ON_THE_CPU)
def test_implementation_gives_the_eager_outputs(folder, implementation):
    eager = DSeqJEPAModel.from_pretrained(folder, attn_implementation="eager").eval()
    model = DSeqJEPAModel.from_pretrained(folder, attn_implementation=implementation).eval()
    assert model.config._attn_implementation == implementation
    torch.manual_seed(1)
    for height, width in SIZES:
        pixels = torch.randn(2, 3, height, width)
        with torch.no_grad():
            expected = eager(pixels, output_saliency=True, output_hidden_states=True)
            outputs = model(pixels, output_saliency=True, output_hidden_states=True)
        assert outputs.saliency.shape == (2, height // 8, width // 8)
        for name in ("last_hidden_state", "pooler_output", "saliency", "hidden_states"):
            torch.testing.assert_close(getattr(outputs, name), getattr(expected, name), atol=1e-5, rtol=0, msg=name)
    with torch.no_grad():  # attentions: computed eagerly whatever the implementation, as the weights ask
        attentions = model(pixels, output_attentions=True).attentions
        expected = eager(pixels, output_attentions=True).attentions
    assert len(attentions) == 2 and attentions[0].shape == (2, 2, 31, 31)
    torch.testing.assert_close(attentions, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("implementation", sorted(REFUSED))
def test_implementation_is_refused_in_one_line(folder, implementation):
    config = DSeqJEPAConfig(**TINY)
    model = DSeqJEPAModel(config)
    for attempt in (
        lambda: DSeqJEPAModel.from_pretrained(folder, attn_implementation=implementation),
        lambda: DSeqJEPAModel(DSeqJEPAConfig(**TINY, attn_implementation=implementation)),
        lambda: model.set_attn_implementation(implementation),
    ):
        with pytest.raises((ValueError, ModelLoadError)) as refusal:  # from_pretrained: the one loading error
            attempt()
        assert REFUSED[implementation] in str(refusal.value) and "\n" not in str(refusal.value)
    assert model.config._attn_implementation == "sdpa"  # unchanged by the refusal


def test_masked_attention_gives_the_eager_outputs_or_is_refused(folder):
    """`encode` with a key mask or a query-key mask (pretraining's masked context): SDPA as eager;
    flex_attention refused (transformers' dense-mask path reads out of bounds, on the CPU it corrupts memory)."""
    eager = DSeqJEPAModel.from_pretrained(folder, attn_implementation="eager").eval()
    sdpa = DSeqJEPAModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    tokens, _ = eager.embed(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    generator = torch.Generator().manual_seed(2)
    keys = torch.rand(2, 17, generator=generator) > 0.4
    pairs = (torch.rand(2, 17, 17, generator=generator) > 0.4) | torch.eye(17, dtype=torch.bool)
    with torch.no_grad():
        for mask in (keys, pairs):
            torch.testing.assert_close(sdpa.encode(tokens, mask), eager.encode(tokens, mask), atol=1e-5, rtol=0)
        assert not torch.allclose(eager.encode(tokens, keys), eager.encode(tokens))  # the mask matters
    flex = DSeqJEPAModel.from_pretrained(folder, attn_implementation="flex_attention")
    with pytest.raises(ValueError, match="^DSeqJEPAModel.encode: an attention_mask needs attn_implementation 'sdpa'"):
        flex.encode(tokens, keys)
