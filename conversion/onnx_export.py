"""ONNX export of the encoder with its saliency: `dseqjepa export onnx MODEL --out FILE.onnx`.

The graph takes `pixel_values` (B, C, H, W), normalised as the model's image processor does, and
returns three outputs from one pass:
  pooler_output      (B, D)          mean of the final-norm patch tokens
  last_hidden_state  (B, [1] + N, D) final-norm tokens, CLS first
  saliency           (B, h, w)       CLS-similarity saliency (docs/METHOD.md section 1)
and, for a fine-tuned classifier (DSeqJEPAForImageClassification), a fourth:
  logits             (B, num_labels) the head's, from the same tokens
With `dynamic`, B, H and W are free (H and W multiples of the patch size): the 2-D sin-cos position
embeddings are computed inside the graph from the patch grid, so every size gets I-JEPA's formula;
without it the graph is fixed to one image of the model's size.

The file is exported into a hidden folder beside the output, run with onnxruntime (CPU) against
the torch model on seeded random images (with `dynamic`: batch 1 and 2, at the model's size and
at a larger non-square one), and moved into place only when every output is within `tolerance`
(max abs difference, fp32). Models above 1.5 GB of weights keep them in `FILE.onnx.data` beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dseqjepa_hub.application.atomic import OutputWriteError
from dseqjepa_hub.application.loading import is_preset, load_model
from dseqjepa_hub.modeling_dseqjepa import (
    DSeqJEPAForImageClassification,
    DSeqJEPAModel,
    DSeqJEPAPreTrainedModel,
    sincos_pos_embed_2d,
)
from dseqjepa_options import ONNX_TOLERANCE as TOLERANCE  # max abs difference per output, fp32

from .loading import ConversionError

INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("pooler_output", "last_hidden_state", "saliency")
HEAD_OUTPUT = "logits"  # a classifier's fourth output
DEFAULT_OPSET = 18
MIN_OPSET = 18  # the torch.export-based exporter's lowest
MAX_GRID_SIDE = 1024  # patches per side the dynamic graph is declared for
EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf's limit is 2 GB


class OnnxExportError(ConversionError):
    """The ONNX exporter or runtime is missing, the model cannot be exported, or the graph disagrees with torch."""


@dataclass
class OnnxExportResult:
    path: Path
    opset: int
    dynamic: bool
    # one entry per checked input: (batch, height, width) -> {output name: max abs difference}
    checks: dict[tuple[int, int, int], dict[str, float]] = field(default_factory=dict)

    @property
    def max_abs_difference(self) -> float:
        return max(value for check in self.checks.values() for value in check.values())


class _EncoderWithSaliency(nn.Module):
    """The graph's function: pixels -> (pooler_output, last_hidden_state, saliency[, logits])."""

    def __init__(self, model: DSeqJEPAPreTrainedModel):
        super().__init__()
        self.model = model.base_model
        self.classifier = model if isinstance(model, DSeqJEPAForImageClassification) and model.num_labels else None
        self.output_names = OUTPUT_NAMES + ((HEAD_OUTPUT,) if self.classifier is not None else ())

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values, output_saliency=True, return_dict=True)
        encoded = (outputs.pooler_output, outputs.last_hidden_state, outputs.saliency)
        return encoded if self.classifier is None else (*encoded, self.classifier.classify(outputs.last_hidden_state))


def _onnx_runtime():
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)
    except ImportError as error:
        raise OnnxExportError(
            f"ONNX export needs onnx, onnxscript and onnxruntime ({error}): pip install 'dseqjepa-hub[onnx]'"
        ) from None
    return onnx, onnxruntime


def check_sizes(model: DSeqJEPAModel, dynamic: bool) -> list[tuple[int, int, int]]:
    """(batch, height, width) of the inputs the exported graph is checked on."""
    side, patch = model.config.image_size, model.config.patch_size
    if not dynamic:
        return [(1, side, side)]
    other = (side + 2 * patch, side + patch)  # another grid, not square
    return [(1, side, side), (2, side, side), (1, *other), (2, *other)]


def _check_fixed_sincos(model: DSeqJEPAModel) -> None:
    """A dynamic graph computes sin-cos embeddings; refuse a model whose `pos_embed` holds anything else."""
    height, width = model.config.grid_size
    expected = sincos_pos_embed_2d(model.config.hidden_size, height, width)[None]
    difference = (model.pos_embed.detach().float().cpu() - expected).abs().max().item()
    if not difference <= 1e-4:
        raise OnnxExportError(
            f"the model's pos_embed is not the fixed 2-D sin-cos embedding (max abs difference {difference:.3g}; "
            "learned position embeddings?), so a graph with a dynamic image size would compute different ones: "
            "export without --dynamic"
        )


def export_onnx(
    model: str | os.PathLike | DSeqJEPAPreTrainedModel | None,
    out_file: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = False,
    tolerance: float = TOLERANCE,
    log=print,
) -> OnnxExportResult:
    """Export `model` (a folder, training run, Hub id, a loaded model, or None or `default` for the bundled model)
    to `out_file`, checked with onnxruntime against torch; nothing is written unless every check passes. A
    classifier's graph gives its logits beside the encoder's outputs."""
    out_file = Path(out_file)
    if out_file.suffix != ".onnx":
        raise OnnxExportError(f"{out_file}: the output file name must end in .onnx")
    data_file = out_file.with_name(out_file.name + ".data")
    for path in (out_file, data_file):
        if path.exists():
            raise OnnxExportError(f"{path} already exists; choose a new file name")
    if opset < MIN_OPSET:
        raise OnnxExportError(f"--opset {opset}: the exporter (torch.onnx, dynamo) writes opset {MIN_OPSET} or newer")
    onnx, onnxruntime = _onnx_runtime()
    if not isinstance(model, DSeqJEPAPreTrainedModel):
        model = load_model(model, as_saved=not is_preset(model)).model
    graph = _EncoderWithSaliency(model.float().eval()).eval()
    encoder = graph.model
    if dynamic:
        _check_fixed_sincos(encoder)
    sizes = check_sizes(encoder, dynamic)

    out_file.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_file.name}.partial-{os.getpid()}-", dir=out_file.parent))
    try:
        staged = work / out_file.name
        _export(graph, staged, opset=opset, dynamic=dynamic)
        try:
            onnx.checker.check_model(str(staged))
        except Exception as error:  # noqa: BLE001 - any checker failure means: do not keep the file
            raise OnnxExportError(f"the exported graph does not pass onnx.checker: {error}") from None
        result = OnnxExportResult(path=out_file, opset=opset, dynamic=dynamic)
        session = onnxruntime.InferenceSession(str(staged), providers=["CPUExecutionProvider"])
        for batch, height, width in sizes:
            differences = _compare(session, graph, (batch, encoder.config.num_channels, height, width))
            result.checks[(batch, height, width)] = differences
            worst = max(differences.values())
            details = ", ".join(f"{name} {value:.2e}" for name, value in differences.items())
            log(f"onnxruntime vs torch, batch {batch} at {height}x{width}: max abs difference {worst:.2e} ({details})")
            if not worst <= tolerance:  # also catches NaN
                raise OnnxExportError(
                    f"the ONNX graph differs from the torch model by {worst:.3g} (max abs, fp32) on batch {batch} at "
                    f"{height}x{width}, above the tolerance {tolerance:g}: nothing was written"
                )
        del session
        try:  # the weights first, so that the graph never points at a missing file
            if (work / data_file.name).exists():
                os.replace(work / data_file.name, data_file)
            os.replace(staged, out_file)
        except OSError as error:
            data_file.unlink(missing_ok=True)
            raise OutputWriteError(f"{out_file}: cannot write it ({error.strerror or error}); nothing was left") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shape = f"dynamic batch and image size (multiples of {encoder.config.patch_size} px)" if dynamic else (
        f"fixed input (1, {encoder.config.num_channels}, {encoder.config.image_size}, {encoder.config.image_size})"
    )
    log(f"wrote {out_file} (opset {opset}, {shape}; outputs {', '.join(graph.output_names)}; "
        f"max abs difference {result.max_abs_difference:.2e} <= {tolerance:g})")
    return result


def _export(graph: _EncoderWithSaliency, path: Path, *, opset: int, dynamic: bool) -> None:
    encoder = graph.model
    config = encoder.config
    example = torch.randn(2 if dynamic else 1, config.num_channels, config.image_size, config.image_size)
    dynamic_shapes = None
    if dynamic:
        rows = torch.export.Dim("grid_height", min=1, max=MAX_GRID_SIDE)
        cols = torch.export.Dim("grid_width", min=1, max=MAX_GRID_SIDE)
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        # multiples of the patch size, so that the size check in the model holds for every input
        dynamic_shapes = {INPUT_NAME: {0: batch, 2: config.patch_size * rows, 3: config.patch_size * cols}}
    external = sum(p.numel() * p.element_size() for p in graph.parameters()) > EXTERNAL_DATA_BYTES
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                graph,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(graph.output_names),
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                optimize=True,
                verbose=False,
                external_data=external,
            )
        program.save(str(path), external_data=external)
    except OSError as error:
        raise OutputWriteError(f"{path.parent}: cannot write the exported graph ({error.strerror or error})") from None
    except Exception as error:  # noqa: BLE001 - the exporter's errors are many and deep; name the step
        message = " ".join(str(error).split())[:500]
        raise OnnxExportError(f"torch.onnx.export failed at opset {opset}: {type(error).__name__}: {message}") from None


@torch.no_grad()
def _compare(session, graph: _EncoderWithSaliency, shape: tuple[int, int, int, int]) -> dict[str, float]:
    generator = torch.Generator().manual_seed(shape[0] * 1000 + shape[2] * 10 + shape[3])
    pixels = torch.randn(*shape, generator=generator)
    expected = graph(pixels)
    found = session.run(list(graph.output_names), {INPUT_NAME: pixels.numpy()})
    differences = {}
    for name, reference, value in zip(graph.output_names, expected, found):
        if tuple(value.shape) != tuple(reference.shape):
            raise OnnxExportError(
                f"the ONNX graph's {name} has shape {tuple(value.shape)} for input {shape}, torch's {tuple(reference.shape)}"
            )
        differences[name] = float((torch.from_numpy(value).float() - reference.float()).abs().max())
    return differences
