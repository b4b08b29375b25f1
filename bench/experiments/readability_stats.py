"""Size figures behind issue 28: library lines per module, module-docstring lines, README bytes.

Run: python bench/experiments/readability_stats.py [--json PATH]
Prints one line per library module (lines, module docstring lines) and the totals; stdlib only.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "kernels", "models")


def module_stats(path: Path) -> dict:
    """Lines, module docstring lines and docstring lines in total for one Python file."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    doc = ast.get_docstring(tree, clean=False) or ""
    all_doc = 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            d = ast.get_docstring(node, clean=False)
            if d:
                all_doc += d.count("\n") + 1
    return {"lines": text.count("\n"), "module_doc": doc.count("\n") + 1 if doc else 0, "doc_lines": all_doc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    rows = {str(p.relative_to(ROOT)): module_stats(p) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    for name, r in rows.items():
        print(f"{r['lines']:5d} {r['module_doc']:4d}  {name}")
    total = {k: sum(r[k] for r in rows.values()) for k in ("lines", "module_doc", "doc_lines")}
    summary = {
        "modules": len(rows),
        **total,
        "max_module_doc": max(r["module_doc"] for r in rows.values()),
        "module_docs_over_25": sorted(n for n, r in rows.items() if r["module_doc"] > 25),
        "readme_bytes": (ROOT / "README.md").stat().st_size,
        "test_files": len(list((ROOT / "tests").glob("test_*.py"))),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"modules": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
