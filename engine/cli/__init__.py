"""The ``embed`` command (also ``python -m engine``).

Each subcommand lives in its own module here and exposes ``register(subparsers)``, which adds
its parser and sets ``func``; the command holds no logic the library lacks.

Messages: the library logs through the ``engine`` logger (``logging.getLogger("engine.<module>")``)
and never prints; the command shows INFO and above on stderr, ``-v`` adds DEBUG, ``-q`` shows
warnings and errors only (and, on ``embed encode``, hides the progress bar). Results go to stdout.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import EngineError

# module name -> registers one or more subcommands
SUBCOMMANDS = ["demo", "models", "bench", "encode", "eval"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embed", description="Text embeddings on onnxruntime: encode, search, benchmark, evaluate."
    )
    _add_verbosity(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    for p in sub.choices.values():  # -v/-q after the subcommand too (`embed encode ... -q`)
        _add_verbosity(p, argparse.SUPPRESS)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    taken = {s for a in parser._actions for s in a.option_strings}
    if "-v" not in taken:
        parser.add_argument("-v", "--verbose", action="count", default=default, help="more messages (debug)")
    if "-q" not in taken:
        parser.add_argument("-q", "--quiet", action="store_true", default=default,
                            help="only warnings and errors")


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """The command's log output: ``engine`` messages on stderr, ``embed: message`` style."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger("engine")
    root.setLevel(level)
    if not any(getattr(h, "_embed_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("embed: %(message)s"))
        handler._embed_cli = True
        root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", 0) or 0, bool(getattr(args, "quiet", False)))
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
