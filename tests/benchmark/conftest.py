"""The benchmark tests' shared fixture: one tiny real ``embed bench`` run, end to end through the CLI."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, tiny_cache, tmp_path_factory):
    """The output folder of ``embed bench`` on the tiny model: CPU (and CUDA, skipped where absent),
    batch sizes 1 and 4, short texts, 8 texts, 2 repeats, no baselines, 1 thread."""
    from engine.cli import main

    out = tmp_path_factory.mktemp("bench-out")
    rc = main(
        [
            "bench",
            "--model",
            str(tiny_model_dir),
            "--cache-dir",
            str(tiny_cache),
            "--device",
            "cpu,cuda",
            "--batch-sizes",
            "1,4",
            "--lengths",
            "short",
            "--n-texts",
            "8",
            "--repeats",
            "2",
            "--baselines",
            "none",
            "--threads",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    return out
