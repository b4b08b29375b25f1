"""Vector index: ``Index`` (vectors, ids, search) and its on-disk format (``engine.index.format``)."""
from .index import Index

__all__ = ["Index"]
