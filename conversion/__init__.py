"""Checkpoint conversion: one reader per source format, one numerical check they all pass, timm export."""

from .convert import READERS, ConversionResult, convert
from .loading import ConversionError
from .timm_checkpoint import export_timm

__all__ = ["READERS", "ConversionError", "ConversionResult", "convert", "export_timm"]
