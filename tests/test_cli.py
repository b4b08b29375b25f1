"""The `embed` command's conventions: --version, -v/-q on the command and on every subcommand, logging."""

from __future__ import annotations

import logging

import pytest

from engine import cli
from engine.cli import build_parser, configure_logging, main


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"embed {version('embed-engine')}"


@pytest.mark.parametrize("argv", [["-q", "models"], ["models", "-q"], ["-v", "models"], ["models", "-vv"]])
def test_verbosity_before_or_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert bool(getattr(args, "quiet", False)) == ("-q" in argv)
    assert (getattr(args, "verbose", 0) or 0) == sum(a.count("v") for a in argv if a.startswith("-v"))


def test_every_subcommand_takes_v_and_q():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        opts = {s for a in p._actions for s in a.option_strings}
        assert {"-v", "-q"} <= opts, name


@pytest.mark.parametrize(
    "verbose, quiet, level", [(0, False, logging.INFO), (1, False, logging.DEBUG), (0, True, logging.WARNING)]
)
def test_configure_logging_levels_and_one_handler(verbose, quiet, level):
    log = logging.getLogger("engine")
    before = list(log.handlers)
    try:
        configure_logging(verbose, quiet)
        configure_logging(verbose, quiet)  # twice: still one CLI handler
        assert log.level == level
        assert sum(isinstance(h, cli._StderrHandler) for h in log.handlers) == 1
    finally:
        log.handlers[:] = before
        log.setLevel(logging.NOTSET)


def test_cli_log_lines_follow_the_current_stderr(capsys):
    """The handler must not keep a stream that a later caller (pytest, a redirect) has closed."""
    log = logging.getLogger("engine")
    before = list(log.handlers)
    try:
        configure_logging()
        logging.getLogger("engine.test").info("first")
        assert "embed: first" in capsys.readouterr().err
        logging.getLogger("engine.test").info("second")  # capsys swapped sys.stderr's buffer in between
        assert "embed: second" in capsys.readouterr().err
    finally:
        log.handlers[:] = before
        log.setLevel(logging.NOTSET)
