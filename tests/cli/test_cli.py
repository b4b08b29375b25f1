"""The ``embed`` command (engine.cli): --version, -v/-q on the command and on every subcommand,
logging; and an OSError on an output path: one clear line and exit 1, no traceback."""

from __future__ import annotations

import errno
import logging

import pytest

from engine import cli
from engine.cli import build_parser, configure_logging, main, os_error_message
from tests.conftest import write_beir


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


# -- an OSError on an output path ------------------------------------------------------------------
@pytest.fixture
def blocker(tmp_path):
    """A regular file where the commands below expect a folder."""
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    return f


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"embed {command}: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def says_cannot_write(line: str, path, reason: str) -> bool:
    """``cannot write <path>: <reason>`` (a library OutputError may word the rest of its line)."""
    return f"cannot write {path}" in line and reason in line


def test_encode_out_under_a_file(tmp_path, blocker, tiny_model_dir, tiny_cache, monkeypatch, capsys):
    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    src = tmp_path / "c.jsonl"
    src.write_text('{"_id": "a", "text": "hello"}\n')
    out = blocker / "out"
    assert main(["encode", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--no-cache", "-q"]) == 1
    assert says_cannot_write(one_error_line(capsys, "encode"), out, "Not a directory")


def test_encode_disk_full(tmp_path, tiny_model_dir, tiny_cache, monkeypatch, capsys):
    """ENOSPC from a write names no file: the message names the output folder."""
    import engine.corpus.shards as shards

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    monkeypatch.setattr(shards, "atomic_write", full)
    src = tmp_path / "c.jsonl"
    src.write_text('{"_id": "a", "text": "hello"}\n')
    out = tmp_path / "out"
    assert main(["encode", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--no-cache", "-q"]) == 1
    assert one_error_line(capsys, "encode") == f"embed encode: error: cannot write {out}: No space left on device"


def test_bench_out_under_a_file(blocker, tiny_model_dir, tiny_cache, capsys):
    out = blocker / "bench"
    assert (
        main(
            [
                "bench",
                "--model",
                str(tiny_model_dir),
                "--cache-dir",
                str(tiny_cache),
                "--device",
                "cpu",
                "--batch-sizes",
                "1",
                "--lengths",
                "short",
                "--n-texts",
                "2",
                "--repeats",
                "1",
                "--baselines",
                "none",
                "--threads",
                "1",
                "--no-progress",
                "--no-plots",
                "--out",
                str(out),
            ]
        )
        == 1
    )
    assert says_cannot_write(one_error_line(capsys, "bench"), out, "Not a directory")


def test_select_out_under_a_file(tmp_path, blocker, tiny_model_dir, tiny_cache, monkeypatch, capsys):
    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    docs = [{"_id": f"d{i}", "title": "", "text": f"document {i} about topic {i % 3}"} for i in range(12)]
    queries = [{"_id": f"q{t}", "text": f"topic {t}"} for t in range(3)]
    root = write_beir(tmp_path / "ds", docs, queries, [(f"q{i % 3}", f"d{i}", 1) for i in range(12)])
    out = blocker / "sel"
    assert (
        main(
            [
                "select",
                "--beir",
                str(root),
                "--models",
                str(tiny_model_dir),
                "--precisions",
                "fp32",
                "--index-precisions",
                "fp32",
                "--dims",
                "full",
                "--speed-docs",
                "4",
                "--out",
                str(out),
            ]
        )
        == 1
    )
    assert says_cannot_write(one_error_line(capsys, "select"), out, "Not a directory")


def test_eval_out_is_a_folder(tmp_path, tiny_model_dir, tiny_cache, monkeypatch, capsys):
    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    docs = [{"_id": "d0", "text": "alpha"}, {"_id": "d1", "text": "beta"}]
    root = write_beir(tmp_path / "ds", docs, [{"_id": "q", "text": "alpha"}], [("q", "d0", 1)])
    out = tmp_path / "results"
    out.mkdir()
    assert main(["eval", "--beir", str(root), "--model", str(tiny_model_dir), "--out", str(out)]) == 1
    assert says_cannot_write(one_error_line(capsys, "eval"), out, "Is a directory")


@pytest.mark.parametrize(
    "error, out, want",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "o", "cannot write o: No space left on device"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/x"), None, "cannot write /ro/x: Read-only file system"),
        (
            OSError(errno.EACCES, "Permission denied", "/data/in.jsonl"),
            "o",
            "cannot access /data/in.jsonl: Permission denied",
        ),
        (
            OSError(errno.EACCES, "Permission denied", "o/shard-00000.npy"),
            "o",
            "cannot write o/shard-00000.npy: Permission denied",
        ),
        (
            OSError(errno.EXDEV, "Invalid cross-device link", "o/a.tmp", None, "o/a"),
            "o",
            "cannot write o/a: Invalid cross-device link",
        ),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), None, "Broken pipe"),
    ],
    ids=["disk-full-no-file", "read-only", "input-unreadable", "output-unwritable", "rename", "no-path"],
)
def test_os_error_message(error, out, want):
    assert os_error_message(error, out) == want
