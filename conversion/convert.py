"""`convert`: read a checkpoint, build the DSeq-JEPA model, check it against the source, write a Hub folder.

The folder is written into a temporary sibling of `--out` (`atomic_directory`), reloaded from there
and checked against the source; only then is it renamed to `--out`. Any failure leaves `--out` as it
was. conversion.json records the source and what the model card says about it (`dseqjepa push`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from dseqjepa_hub.application.atomic import atomic_directory, check_empty_folder, remove_stale_temporaries
from dseqjepa_hub.configuration_dseqjepa import DSeqJEPAPredictorConfig
from dseqjepa_hub.image_processing_dseqjepa import DSeqJEPAImageProcessor
from dseqjepa_hub.modeling_dseqjepa import DSeqJEPAModel, DSeqJEPAPredictor
from dseqjepa_hub.pipeline_saliency_ranking import save_pretrained_with_pipeline

from .hf_ijepa import read_hf_ijepa
from .layout import check_tensors
from .loading import ConversionError
from .release import read_dseq_release, read_ijepa_release
from .timm_checkpoint import read_timm
from .training_checkpoint import read_training
from .verify import TOLERANCE, verify

READERS = {
    "training": read_training,
    "dseq-release": read_dseq_release,
    "ijepa-release": read_ijepa_release,
    "hf-ijepa": read_hf_ijepa,
    "timm": read_timm,
}
PREDICTOR_FILE = "predictor.safetensors"
PROVENANCE_FILE = "conversion.json"  # read by `dseqjepa push` for the model card
NO_CLS_NOTE = "no CLS token: regions are ranked with the 'mean_patch' saliency query"


@dataclass
class ConversionResult:
    out: Path
    max_abs_difference: float
    notes: list[str]


def convert(
    src: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike,
    *,
    encoder: str = "target",
    preset: str | None = None,
    num_heads: int | None = None,
    with_predictor: bool = False,
    base_model: str | None = None,
    license: str | None = None,
    tolerance: float = TOLERANCE,
    log=print,
) -> ConversionResult:
    """Convert `src` (format `fmt`, one of READERS) into a DSeq-JEPA Hub folder at `out`."""
    out = Path(out)
    check_empty_folder(out)  # before reading anything
    remove_stale_temporaries(out.parent)  # left by a killed convert; never outputs
    if fmt not in READERS:
        raise ConversionError(f"unknown --format {fmt!r}; expected one of {sorted(READERS)}")
    source = READERS[fmt](src, encoder=encoder, num_heads=num_heads, preset=preset, with_predictor=with_predictor)
    if with_predictor and source.predictor is None:
        raise ConversionError(f"{src}: --with-predictor: a {fmt} checkpoint holds no JEPA predictor")
    config = source.layout.config(**source.config_overrides)
    notes = source.notes + ([] if config.use_cls_token else [NO_CLS_NOTE])
    model = DSeqJEPAModel(config).eval()
    check_tensors(source.encoder, model.state_dict(), str(src))
    model.load_state_dict(source.encoder, strict=True)
    if source.predictor is not None:  # saved for continued pretraining: it must load into DSeqJEPAPredictor
        with torch.device("meta"):  # shapes only
            expected = DSeqJEPAPredictor(DSeqJEPAPredictorConfig.from_encoder_config(config)).state_dict()
        check_tensors(source.predictor, expected, f"{src} (predictor)")

    with atomic_directory(out) as staging:
        save_pretrained_with_pipeline(model, DSeqJEPAImageProcessor.from_model_config(config), staging)
        if source.predictor is not None:
            save_file({name: tensor.contiguous() for name, tensor in source.predictor.items()}, staging / PREDICTOR_FILE)
        difference = verify(source.reference, DSeqJEPAModel.from_pretrained(staging), tolerance)
        provenance = {
            "format": fmt,
            **source.provenance,
            "base_model": base_model,
            "license": license or source.license,
            "converted_from": source.converted_from,
            "training_text": source.training_text,
            "max_abs_difference": difference,
            "tolerance": tolerance,
            "notes": notes,
        }
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    for note in notes:
        log(f"note: {note}")
    log(f"converted {src} ({fmt}) -> {out}: max abs difference {difference:.2e} (tolerance {tolerance:g}, fp32)")
    return ConversionResult(out=out, max_abs_difference=difference, notes=notes)
