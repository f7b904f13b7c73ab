"""The converter's one error type."""

from __future__ import annotations


class ConversionError(Exception):
    """The TFLite model uses something this converter does not translate faithfully."""
