"""Vector index: ``Index`` (vectors, ids, search), its codec per precision (``engine.index.codecs``) and
its on-disk format (``engine.index.format``)."""

from .index import DEFAULT_OVERSAMPLE, DEFAULT_OVERSAMPLE_BINARY, Index

__all__ = ["DEFAULT_OVERSAMPLE", "DEFAULT_OVERSAMPLE_BINARY", "Index"]
