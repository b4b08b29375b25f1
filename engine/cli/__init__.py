"""The ``embed`` command (also ``python -m engine``).

Each subcommand lives in its own module here and exposes ``register(subparsers)``, which adds
its parser and sets ``func``; the command holds no logic the library lacks.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import EngineError

# module name -> registers one or more subcommands
SUBCOMMANDS = ["demo", "models", "bench", "encode", "eval"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embed", description="Text embeddings on onnxruntime: encode, search, benchmark, evaluate."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (EngineError, ImportError, FileNotFoundError) as e:
        print(f"embed {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
