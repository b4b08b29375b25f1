"""Model catalogue and the path from weights to a cached, optimized ONNX file.

Installed as ``engine.models`` (the folder sits at the repository root; a top-level package
called ``models`` would collide with other distributions). Nothing here runs inference.
"""

from .catalog import CATALOGUE, DEFAULT_MODEL, HubSource, ModelSpec, PyPISource, known_names, lookup

__all__ = ["CATALOGUE", "DEFAULT_MODEL", "HubSource", "ModelSpec", "PyPISource", "known_names", "lookup"]
