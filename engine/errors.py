"""Exceptions. Every message says what was wrong and what to do instead."""
from __future__ import annotations


class EngineError(Exception):
    """Base class of the engine's own errors."""


class InputError(EngineError, ValueError):
    """The caller passed something the engine cannot use (wrong type, shape, NaN, ...)."""


class ModelNotFoundError(EngineError, LookupError):
    """A model name/path could not be resolved to weights."""


class WeightsVerificationError(EngineError):
    """A weight file's sha256 does not match the catalogue."""


class ProviderError(EngineError, RuntimeError):
    """An onnxruntime execution provider was requested but is not available."""


class ExportError(EngineError, RuntimeError):
    """Exporting a model to ONNX failed or needs an optional extra."""


class ModelMismatchError(EngineError, ValueError):
    """Vectors from one model were used against an index built by another."""


class IndexFormatError(EngineError, ValueError):
    """An index file is truncated, corrupt, or of an unknown format version."""


def missing_extra(package: str, extra: str) -> ImportError:
    """The ImportError raised when an optional dependency is absent, with the install command."""
    return ImportError(
        f"{package} is not installed; it comes with the '{extra}' extra: "
        f"pip install 'embed-engine[{extra}]' (or: pip install {package})"
    )
