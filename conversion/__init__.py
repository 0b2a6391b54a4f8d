"""Checkpoint conversion: one reader per source format, one numerical check they all pass, timm and ONNX export.

Folder `conversion/`, import name `dseqjepa_convert` (pyproject.toml maps one to the other).
"""

from .convert import READERS, ConversionResult, convert
from .loading import ConversionError
from .onnx_export import export_onnx
from .timm_checkpoint import export_timm

__all__ = ["READERS", "ConversionError", "ConversionResult", "convert", "export_onnx", "export_timm"]
