"""Exceptions. Every message says what was wrong and what to do instead."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of the engine's own errors."""


class InputError(EngineError, ValueError):
    """The caller passed something the engine cannot use (wrong type, shape, NaN, ...)."""


class ModelNotFoundError(EngineError, LookupError):
    """A model name/path could not be resolved to weights."""


class UnsupportedModelError(EngineError, ValueError):
    """A model uses a module, option or architecture the engine cannot reproduce exactly."""


class WeightsVerificationError(EngineError):
    """A weight file's sha256 does not match the catalogue."""


class ProviderError(EngineError, RuntimeError):
    """An onnxruntime execution provider was requested but is not available."""


class ExportError(EngineError, RuntimeError):
    """Exporting a model to ONNX failed or needs an optional extra."""


class ModelMismatchError(EngineError, ValueError):
    """Vectors from one model were used against an index built by another."""


class IndexFormatError(EngineError, ValueError):
    """An index file, or a file of an ``embed encode`` output folder, is truncated, corrupt, crafted,
    not a regular file, or of an unknown format version. The message names the file."""


class OutputError(EngineError, OSError):
    """A file could not be written (read-only file system, no space left, a file where a folder
    should be, ...). The message names the path; a file that was there before is left unchanged."""


def missing_extra(package: str, extra: str) -> ImportError:
    """The ImportError raised when an optional dependency is absent, with the install command."""
    return ImportError(
        f"{package} is not installed; it comes with the '{extra}' extra: "
        f"pip install 'embed-engine[{extra}]' (or: pip install {package})"
    )
