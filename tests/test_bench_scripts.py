"""The bench/ scripts stay runnable: each one parses ``--help`` (its imports and argument set-up
work on a clean install), and the recipe override the per-ISA scripts use changes and restores
the int8 recipe. They measure, so nothing here times anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("bench", "bench/experiments", "bench/gpu", "bench/isa_emulation")
SCRIPTS = sorted(p for d in FOLDERS for p in (ROOT / d).glob("*.py") if "__main__" in p.read_text(encoding="utf-8"))


def test_the_scripts_are_found():
    names = {p.name for p in SCRIPTS}
    assert {"int8_speed.py", "int8_quality.py", "isa_report.py", "search_bench.py", "graph_ab.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_help(script):
    r = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "usage:" in r.stdout


def test_recipe_override_changes_and_restores(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from recipe_override import int8_recipe_as

    from engine.models import quantize

    own = quantize.int8_recipe()
    other = "rr" if own != "rr" else "vnni"
    with int8_recipe_as(other):
        assert quantize.int8_recipe() == other and quantize.int8_recipe("amx_int8") == other
    assert quantize.int8_recipe() == own
    with int8_recipe_as(None):
        assert quantize.int8_recipe() == own
    with pytest.raises(SystemExit, match="unknown int8 recipe 'fp8'"), int8_recipe_as("fp8"):
        pass
    assert quantize.int8_recipe() == own
