"""engine/cli/bench.py: flags become a BenchConfig, bad flags are refused, saved runs are compared,
and importing the command and the harness stays light."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.benchmark.test_results import _doc


def _args(*argv):
    from engine.cli import build_parser

    return build_parser().parse_args(["bench", *argv])


def test_cli_flags_become_a_config():
    from engine.cli.bench import config_from_args

    c = config_from_args(
        _args(
            "--model",
            "a,b",
            "--model",
            "c",
            "--batch-sizes",
            "1, 8",
            "--baselines",
            "none",
            "--precision",
            "fp32,int8",
            "--device",
            "cpu",
        )
    )
    assert c.models == ("a", "b", "c") and c.batch_sizes == (1, 8) and c.baselines == ()
    assert c.precisions == ("fp32", "int8") and c.devices == ("cpu",)
    assert c.lengths == ("short", "medium", "long") and c.n_texts == 256 and c.repeats == 3
    q = config_from_args(_args("--quick", "--repeats", "5"))
    assert q.batch_sizes == (1, 8, 32) and q.lengths == ("short", "medium") and q.n_texts == 64
    assert q.repeats == 5  # an explicit flag wins over --quick
    assert q.baselines == ("st-torch", "st-onnx", "st-openvino") and q.models == ("all-MiniLM-L6-v2",)


def test_cli_rejects_bad_batch_sizes(capsys):
    from engine.cli import main

    assert main(["bench", "--batch-sizes", "1,eight"]) == 1
    assert "comma list of integers" in capsys.readouterr().err


def test_cli_compares_two_saved_runs(tmp_path, capsys):
    from engine.cli import main

    row = [("m", "cpu", "short", 1, "engine", "fp32", 100.0)]
    for name, doc in (
        ("old", _doc(row)),
        ("new", _doc([(*row[0][:-1], 120.0)])),
        ("other", _doc(row, fingerprints={"m": {"fp32": "m/fp32/8/ffff"}})),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(doc))
    assert main(["bench", "--compare", str(tmp_path / "old"), "--input", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "+20.0%" in out and "100.0" in out and "120.0" in out
    assert main(["bench", "--compare", str(tmp_path / "old"), "--input", str(tmp_path / "other")]) == 1
    assert "different model exports" in capsys.readouterr().err
    assert main(["bench", "--compare", str(tmp_path / "old"), "--input", str(tmp_path / "other"), "--force"]) == 0
    assert "+0.0%" in capsys.readouterr().out
    assert main(["bench", "--compare", str(tmp_path / "missing")]) == 1  # checked before anything runs
    assert "does not exist" in capsys.readouterr().err


def test_import_stays_light():
    code = (
        "import sys, engine.cli.bench, engine.benchmark, engine.benchmark.chip, engine.benchmark.clock, "
        "engine.benchmark.contenders, engine.benchmark.data, engine.benchmark.grid, engine.benchmark.measure, "
        "engine.benchmark.plot, engine.benchmark.results; "
        "bad = [m for m in ('torch', 'matplotlib', 'sentence_transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
