"""engine.runtime: the runtime choice per (model precision, CPU class), OpenVINO sessions, bf16, and
the runtime path's imports.

The oracle for vectors is sentence-transformers' own output on tiny random models. bf16 itself
runs only on CPUs with bf16 units: there its vectors are compared with sentence-transformers fp32
(skipped elsewhere, with the reason); everywhere, bf16's plumbing (export, gate, fingerprint,
cache folder, graph of standard ops) runs with OpenVINO's bf16 kernels swapped for f32 ones.
The OpenVINO tests skip without the openvino extra.

The runtime path imports only onnxruntime, tokenizers, numba and numpy (shared DESIGN.md, "Heavy
imports"): a fresh interpreter builds Embedders for models the parent test exported, and encodes
with them, while an import hook refuses the export tools as a plain install (no ``export`` extra)
lacks them; it reports every refused import and every heavy module loaded, and its vectors must
equal the parent's (tests/models/test_export.py runs old exports through the same child, without onnx).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from engine import Embedder
from engine import runtime as rt
from engine.errors import InputError, UnsupportedModelError
from engine.models.export import load_or_export
from engine.precisions import MODEL_PRECISIONS
from tests.conftest import SENTENCES, minilm_folder

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="the openvino extra is not installed"
)

BF16_HERE = rt.cpu_class() in rt.BF16_CLASSES
TEXTS = [*SENTENCES, "a longer text about runtimes and kernels " * 6, "x"]


def _cos(a, b):
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# -- the choice table ---------------------------------------------------------------------------
@needs_openvino
@pytest.mark.parametrize("cls", rt.CPU_CLASSES)
def test_the_table_resolves_for_every_cpu_class(cls):
    assert rt.choose_runtime("fp32", cls=cls) == "onnxruntime"
    # int8 runs OpenVINO's static int8 where measured faster (and its extras are here), else onnxruntime's
    want_int8 = rt.RUNTIME_CHOICE["int8"][cls][0] if rt._openvino_available() else "onnxruntime"
    assert rt.choose_runtime("int8", cls=cls) == want_int8
    assert rt.choose_runtime("fp32", runtime="openvino", cls=cls) == "openvino"
    assert rt.choose_runtime("int8", runtime="openvino", cls=cls) == "openvino"
    if cls in rt.BF16_CLASSES:
        assert rt.choose_runtime("bf16", cls=cls) == "openvino"
    else:
        with pytest.raises(InputError, match="bf16 units"):
            rt.choose_runtime("bf16", cls=cls)
    for precision, cells in rt.RUNTIME_CHOICE.items():  # every cell names a runtime and its evidence
        assert precision in MODEL_PRECISIONS
        for runtime, why in cells.values():
            assert runtime in rt.RUNTIMES and why


@needs_openvino
def test_int8_falls_back_to_onnxruntime_without_the_openvino_extras(monkeypatch, caplog):
    """Where the table picks OpenVINO for int8, a plain install still runs int8 (on onnxruntime), says so once,
    and names the extras; a forced runtime='openvino' is not downgraded."""
    monkeypatch.setattr(rt, "_openvino_available", lambda: False)
    monkeypatch.setattr(rt, "_WARNED", set())
    assert rt.RUNTIME_CHOICE["int8"]["avx512_bf16"][0] == "openvino"
    with caplog.at_level("WARNING", logger="engine.runtime"):
        assert rt.choose_runtime("int8", cls="avx512_bf16") == "onnxruntime"
        assert rt.choose_runtime("int8", cls="avx512_bf16") == "onnxruntime"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "pip install 'embed-engine[openvino]'" in warned[0]
    assert rt.choose_runtime("int8", runtime="openvino", cls="avx512_bf16") == "openvino"
    assert rt.choose_runtime("int8", cls="avx2") == "onnxruntime"  # the table's own choice: no warning
    assert len(caplog.records) == 1


def test_measured_cells_link_to_a_section_of_the_notes():
    """Every measured cell's evidence names the section of bench/experiments/runtime_choice.md behind it."""
    import re
    from pathlib import Path

    notes = Path(rt.__file__).resolve().parents[1] / "bench" / "experiments" / "runtime_choice.md"
    if not notes.is_file():
        pytest.skip("not a source checkout: no bench/experiments notes")
    sections = {line[3:].strip() for line in notes.read_text(encoding="utf-8").splitlines() if line.startswith("## ")}
    linked = {
        m.group(1)
        for cells in rt.RUNTIME_CHOICE.values()
        for _, why in cells.values()
        if (m := re.search(r"runtime_choice\.md#(\w+)", why))
    }
    assert linked and linked <= sections, linked - sections


@pytest.mark.parametrize("threads", [0, -1, True, 1.5, "2"])
def test_session_threads_must_be_a_positive_integer(threads, tiny_model_dir, tiny_cache):
    graph = load_or_export(str(tiny_model_dir), cache_dir=tiny_cache).graph_path("cpu")
    with pytest.raises(InputError, match="threads must be a positive integer or None"):
        rt.Session(graph, threads=threads)


def test_cpu_class_from_flags():
    assert rt.cpu_class({"avx2", "fma"}) == "avx2"
    zen4 = {"avx2", "fma", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16"}
    assert rt.cpu_class(zen4) == "avx512_bf16"
    assert rt.cpu_class(zen4 - {"avx512_bf16"}) == "avx512_vnni"
    assert rt.cpu_class(zen4 | {"amx_tile", "amx_int8", "amx_bf16"}) == "amx_bf16"
    assert rt.cpu_class(set()) == "other"


@needs_openvino
@pytest.mark.parametrize(
    "precision, runtime, device, match",
    [
        ("bf16", None, "cuda", "bf16 units; on CUDA"),
        ("fp32", "openvino", "cuda", "on CUDA the runtime is onnxruntime"),
        ("int8", "openvino", "cuda", "on CUDA the runtime is onnxruntime"),
        ("bf16", "onnxruntime", "cpu", "onnxruntime has no bf16"),
        ("fp16", None, "cpu", "does not run on the CPU"),
        ("fp32", "tensorrt", "cpu", "runtime must be one of"),
    ],
)
def test_impossible_choices_are_refused_by_name(precision, runtime, device, match):
    with pytest.raises(InputError, match=match):
        rt.choose_runtime(precision, device, runtime, cls="avx512_bf16")


@needs_openvino
def test_a_missing_extra_names_itself(monkeypatch, tiny_model_dir, tiny_cache):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match=r"openvino.*'openvino' extra"):
        Embedder(str(tiny_model_dir), cache_dir=tiny_cache, runtime="openvino")


@needs_openvino
@pytest.mark.skipif(BF16_HERE, reason="this CPU has bf16 units")
def test_bf16_is_refused_on_a_cpu_without_bf16_units(tiny_model_dir, tmp_path):
    with pytest.raises(InputError, match="needs a CPU with bf16 units"):
        Embedder(str(tiny_model_dir), cache_dir=tmp_path, model_precision="bf16")
    assert not (tmp_path / "onnx").exists()  # refused before anything was exported


# -- OpenVINO fp32: sentence-transformers' vectors ------------------------------------------------
@pytest.fixture(scope="module")
def st_reference(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu").encode(TEXTS, convert_to_numpy=True)


@needs_openvino
def test_openvino_fp32_equals_sentence_transformers(tiny_model_dir, tiny_cache, st_reference):
    ov = Embedder(str(tiny_model_dir), cache_dir=tiny_cache, runtime="openvino")
    ort = Embedder(str(tiny_model_dir), cache_dir=tiny_cache)
    assert (ov.runtime, ort.runtime) == ("openvino", "onnxruntime")
    assert ov.fingerprint == ort.fingerprint  # fp32 is exact on both: interchangeable vectors
    for batch_size in (2, 64):  # batch workers (OpenVINO streams) and one batch on every thread
        got = ov.encode(TEXTS, batch_size=batch_size)
        np.testing.assert_allclose(got, st_reference, atol=1e-5)
        assert _cos(got, st_reference).min() >= 0.99999


@needs_openvino
@pytest.mark.parametrize("family", ["roberta", "qwen2", "modernbert"])
def test_openvino_fp32_on_more_families(family, tmp_path):
    from sentence_transformers import SentenceTransformer

    from tests.st_tiny import build_transformer, write_stack

    folder = build_transformer(tmp_path / family, family)
    write_stack(folder)
    want = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    got = Embedder(str(folder), cache_dir=tmp_path / "cache", runtime="openvino").encode(TEXTS)
    assert _cos(got, want).min() >= 0.99999
    np.testing.assert_allclose(got, want, atol=1e-4)


# -- bf16 -------------------------------------------------------------------------------------
@pytest.fixture
def bf16_as_f32(monkeypatch):
    """A CPU with bf16 units whose OpenVINO runs the bf16 model in f32: bf16's plumbing, anywhere."""
    monkeypatch.setattr(rt, "cpu_class", lambda flags=None: "avx512_bf16")
    monkeypatch.setitem(rt._OV_PRECISION, "bf16", "f32")
    monkeypatch.setattr(rt, "_ov_capabilities", lambda core: ["FP32", "BF16"])


@needs_openvino
def test_bf16_export_plumbing(bf16_as_f32, tiny_model_dir, tmp_path, st_reference):
    import onnx

    bf16 = Embedder(str(tiny_model_dir), cache_dir=tmp_path, model_precision="bf16")
    fp32 = Embedder(str(tiny_model_dir), cache_dir=tmp_path)
    assert bf16.runtime == "openvino" and bf16.model_precision == "bf16"
    assert bf16.fingerprint.split("/")[1] == "bf16" and bf16.fingerprint != fp32.fingerprint
    meta = bf16._exported.meta
    assert meta["export"]["runtime"] == {"name": "openvino", "inference_precision": "bf16"}
    assert meta["bf16_calibration_cosine"]["min"] >= 0.9999
    assert meta["graphs"] == {"cpu": "model.onnx"}
    assert "-bf16-" in bf16._exported.folder.name and bf16._exported.folder != fp32._exported.folder
    graph = onnx.load(str(bf16._exported.folder / "model.onnx"), load_external_data=False)
    assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}  # standard ops only: any runtime reads it
    assert _cos(bf16.encode(TEXTS), st_reference).min() >= 0.9999
    again = Embedder(str(tiny_model_dir), cache_dir=tmp_path, model_precision="bf16")  # from the cache
    assert again.fingerprint == bf16.fingerprint


@needs_openvino
def test_bf16_gate_refuses_a_model_that_drifts(bf16_as_f32, tiny_model_dir, tmp_path, monkeypatch):
    from engine.models import quantize

    monkeypatch.setattr(quantize, "MIN_BF16_COSINE", 1.01)  # no model can pass: the gate must refuse
    with pytest.raises(UnsupportedModelError, match="does not run near-exactly in bf16"):
        Embedder(str(tiny_model_dir), cache_dir=tmp_path, model_precision="bf16")
    folders = list((tmp_path / "onnx").glob("*bf16*"))
    assert not [f for f in folders if (f / "meta.json").is_file()]  # nothing cached


@needs_openvino
@pytest.mark.skipif(not BF16_HERE, reason=f"no bf16 units on this CPU (class {rt.cpu_class()})")
@pytest.mark.parametrize(
    "family",
    ["bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "qwen2", "llama", "modernbert", "t5", "gemma3_text"],
)
def test_bf16_vectors_are_near_exact(family, tmp_path):
    from sentence_transformers import SentenceTransformer

    from tests.st_tiny import build_transformer, write_stack

    folder = build_transformer(tmp_path / family, family)
    write_stack(folder)
    want = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    try:
        got = Embedder(str(folder), cache_dir=tmp_path / "cache", model_precision="bf16").encode(TEXTS)
    except UnsupportedModelError as e:  # refused by name at export: allowed, and said
        assert "near-exactly in bf16" in str(e)
        return
    # The gate holds min cosine >= 0.9999 on its calibration texts; held-out text on a random-weight
    # model (a new one each run: build_transformer is not bit-reproducible across processes) lands
    # within 1e-4 of that floor (worst seen 0.99988; the real MiniLM gives 0.99996 on 2,500 texts).
    assert _cos(got, want).min() >= 0.9998


# -- the runtime path without export tools --------------------------------------------------------
HEAVY = ("torch", "onnx", "transformers", "optimum", "onnxruntime.transformers", "sentence_transformers", "nncf")
CHILD_TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "",
    "héllo wörld café naïve 日本語",
    "numba compiles python loops to machine code " * 12,
] + [f"document number {i} about onnx runtime graphs " * (i % 5 + 1) for i in range(16)]

# Runs in the child: refuse the export tools, embed, report. {heavy} is filled in by the parent.
CHILD = """
import importlib.abc, json, sys

HEAVY = {heavy!r}
refused = []


def heavy(name):
    return any(name == h or name.startswith(h + ".") for h in HEAVY)


class NoExportTools(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if heavy(name):
            refused.append(name)
            message = f"No module named {{name!r}} (refused: a plain install has no export tools)"
            raise ModuleNotFoundError(message, name=name)
        return None


sys.meta_path.insert(0, NoExportTools())
import numpy as np

from engine import Embedder

args = json.loads(sys.argv[1])
out, error = {{}}, None
try:
    for precision in args["precisions"]:
        out.update({{f"{{precision}}_{{k}}": v for k, v in embed(Embedder, args, precision).items()}})
except Exception as e:
    error = f"{{type(e).__name__}}: {{e}}"
np.savez(args["out"], **out)
print(json.dumps({{"refused": refused, "loaded": sorted(m for m in sys.modules if heavy(m)), "error": error}}))
"""


def embed(embedder_cls, args: dict, precision: str) -> dict:
    """What parent and child both compute: several batches (batch workers on the single-threaded
    session) and one batch (the main session)."""
    emb = embedder_cls(
        args["model"], model_precision=precision, cache_dir=args["cache"], threads=2, runtime=args.get("runtime")
    )
    return {"batched": emb.encode(args["texts"], batch_size=4), "one": emb.encode(args["texts"][:3])}


def _child(model: str, cache, precisions, tmp_path, runtime=None) -> tuple[dict, dict]:
    import inspect

    out = tmp_path / "child.npz"
    args = {
        "model": model,
        "cache": None if cache is None else str(cache),
        "precisions": list(precisions),
        "texts": CHILD_TEXTS,
        "out": str(out),
        "runtime": runtime,
    }
    code = inspect.getsource(embed) + CHILD.format(heavy=HEAVY)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, cwd=tmp_path, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report, dict(np.load(out))


def _check_runtime_path(model: str, cache, tmp_path):
    for precision in ("fp32", "int8"):  # exported here, in the parent (the child cannot export), for the
        load_or_export(model, precision, cache_dir=cache, runtime=rt.choose_runtime(precision))  # default runtime
    report, got = _child(model, cache, ("fp32", "int8"), tmp_path)
    assert report == {"refused": [], "loaded": [], "error": None}
    args = {"model": model, "cache": cache, "texts": CHILD_TEXTS}
    for precision in ("fp32", "int8"):
        for key, want in embed(Embedder, args, precision).items():
            np.testing.assert_allclose(got[f"{precision}_{key}"], want, rtol=0, atol=1e-6, err_msg=f"{precision} {key}")
    assert not np.allclose(got["fp32_batched"], got["int8_batched"], atol=1e-6)  # really two graphs


def test_tiny_model_runs_without_export_tools(tiny_model_dir, tiny_cache, tmp_path):
    _check_runtime_path(str(tiny_model_dir), tiny_cache, tmp_path)


def test_openvino_runs_without_export_tools(tiny_model_dir, tiny_cache, tmp_path):
    """The openvino extra's runtime path (fp32, and int8's static IR) needs no export tools (nncf included),
    and gives the parent's vectors."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    pytest.importorskip("nncf", reason="nncf (the export extra) builds the int8 IR here, in the parent")
    for precision in ("fp32", "int8"):
        load_or_export(str(tiny_model_dir), precision, cache_dir=tiny_cache, runtime="openvino")
    report, got = _child(str(tiny_model_dir), tiny_cache, ("fp32", "int8"), tmp_path, runtime="openvino")
    assert report == {"refused": [], "loaded": [], "error": None}
    args = {"model": str(tiny_model_dir), "cache": tiny_cache, "texts": CHILD_TEXTS, "runtime": "openvino"}
    for precision in ("fp32", "int8"):
        for key, want in embed(Embedder, args, precision).items():
            np.testing.assert_allclose(got[f"{precision}_{key}"], want, rtol=0, atol=1e-6, err_msg=f"{precision} {key}")


def test_minilm_runs_without_export_tools(tmp_path):
    minilm_folder()
    _check_runtime_path("all-MiniLM-L6-v2", None, tmp_path)  # the default cache, as tests/test_embedder.py
