"""The repository's kernels/ and models/ are importable only as engine.kernels / engine.models."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["kernels", "models"])
def test_no_top_level_name_for_the_root_folders(name):
    if sys.argv and sys.argv[0].endswith("__main__.py") and ("" in sys.path or str(ROOT) in sys.path):
        pytest.skip("run as `pytest` (make test does): `python -m pytest` puts the working directory on sys.path")
    spec = importlib.util.find_spec(name)
    assert spec is None or ROOT / name not in {Path(p) for p in spec.submodule_search_locations or ()}, (
        f"the repository's {name}/ is importable as a top-level '{name}': something put {ROOT} on sys.path"
    )


@pytest.mark.parametrize("name, folder", [("engine.kernels", "kernels"), ("engine.models", "models")])
def test_installed_names_map_to_the_root_folders(name, folder):
    spec = importlib.util.find_spec(name)
    assert Path(spec.origin).resolve().parent == ROOT / folder
