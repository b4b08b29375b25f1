"""The ``embed`` command (also ``python -m engine``).

Each subcommand lives in its own module here and exposes ``register(subparsers)``, which adds
its parser and sets ``func``; the command holds no logic the library lacks.

Messages: the library logs through the ``engine`` logger (``logging.getLogger("engine.<module>")``)
and never prints; the command shows INFO and above on stderr, ``-v`` adds DEBUG, ``-q`` shows
warnings and errors only (and, on ``embed encode``, hides the progress bar). Results go to stdout.

Errors: the engine's own errors, a missing optional package and an ``OSError`` (a read-only or full
disk, a file where a folder is expected, ...) print one line, ``embed <command>: error: ...``, and
exit 1; an ``OSError`` is shown as ``cannot write <path>: <reason>`` (``cannot access`` when the
path is outside the command's ``--out`` and the reason is not one only writes meet).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

from ..errors import EngineError

# module name -> registers one or more subcommands
SUBCOMMANDS = ["demo", "models", "bench", "encode", "eval"]


def build_parser() -> argparse.ArgumentParser:
    """The ``embed`` parser with every subcommand of ``SUBCOMMANDS`` registered."""
    parser = argparse.ArgumentParser(
        prog="embed", description="Text embeddings on onnxruntime: encode, search, benchmark, evaluate."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_verbosity(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    for p in sub.choices.values():  # -v/-q after the subcommand too (`embed encode ... -q`)
        _add_verbosity(p, argparse.SUPPRESS)
    return parser


def add_model_precision(parser: argparse.ArgumentParser, choices=None, default: str = "fp32") -> None:
    """``--model-precision`` (the precision the model runs in; ``--precision`` is its former name)."""
    from ..precisions import MODEL_PRECISIONS

    parser.add_argument(
        "--model-precision",
        "--precision",
        dest="model_precision",
        default=default,
        choices=list(choices or MODEL_PRECISIONS),
        help=f"the precision the model runs in (default {default}; --precision is the former name)",
    )


def _version() -> str:
    """The installed distribution's version (the package's own when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("embed-engine")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


def _add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    """-v/--verbose and -q/--quiet on ``parser``, unless it has them."""
    taken = {s for a in parser._actions for s in a.option_strings}
    if "-v" not in taken:
        parser.add_argument("-v", "--verbose", action="count", default=default, help="more messages (debug)")
    if "-q" not in taken:
        parser.add_argument("-q", "--quiet", action="store_true", default=default, help="only warnings and errors")


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """The command's log output: ``engine`` messages on stderr, ``embed: message`` style."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger("engine")
    root.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("embed: %(message)s"))
        root.addHandler(handler)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream at set-up
    (``main`` may run many times in one process, e.g. under pytest, which swaps stderr per test)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property decides
        pass


def main(argv: list[str] | None = None) -> int:
    """Run ``embed`` with ``argv`` (default: the command line); returns the exit status.

    0 on success, 1 for an engine error, a missing optional package or an OSError (one line on
    stderr, no traceback), 2 without a subcommand (the help is printed), 130 when interrupted.
    """
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
    except OSError as e:
        print(f"embed {args.command}: error: {os_error_message(e, getattr(args, 'out', None))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # reasons only a write meets


def os_error_message(e: OSError, out: str | None = None) -> str:
    """``cannot write <path>: <reason>`` for an OSError; ``out`` is the command's output path, used
    when the error names no file (a full disk met by ``write``)."""
    path = e.filename2 or e.filename or out
    reason = e.strerror or str(e)
    if path is None:
        return reason
    path = os.fsdecode(path)
    inside = out is not None and _within(path, os.fsdecode(out))
    verb = "write" if inside or e.errno in WRITE_ERRNOS else "access"
    return f"cannot {verb} {path}: {reason}"


def _within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it."""
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
