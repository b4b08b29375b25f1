"""models/export.py: every supported family exported as sentence-transformers runs it, fingerprints, the cache.

Tiny random-weight folders of every supported family (tests/st_tiny.py: BERT, RoBERTa,
XLM-RoBERTa, DistilBERT, MPNet; Qwen2, LLaMA, Mistral decoders) with module stacks covering every
pooling mode, Dense with and without Normalize, LayerNorm, prompts with and without
include_prompt, a decoder with an instruction prompt, left padding, truncation and empty strings;
more families (ELECTRA, ALBERT, DeBERTa-v2, CamemBERT, ModernBERT, T5, mT5, BART, mBART; Qwen3,
Gemma 1-3, Phi-3, GPT-2, GPT-Neo, GPT-NeoX, BLOOM) with mean pooling, or last-token for decoders.
For each: ``Embedder(folder).encode(texts)`` equals ``SentenceTransformer(folder).encode(texts)``
within 1e-4 relative, and so do encode_query / encode_document. Model types the engine cannot
export are refused by name; fingerprints follow content; the export cache stays consistent, with one
int8 folder per recipe. Exports from before the runtime graphs were written at export time are
completed in place once (with onnx), or refused with the fix (without it: a child process of
tests/test_runtime.py that refuses the export tools).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import Embedder
from engine.errors import ExportError, UnsupportedModelError
from engine.models import export, quantize
from engine.models.catalog import ModelSpec
from engine.models.export import _keep_token_output, _version_tag, load_or_export
from tests.models.folders import (
    FOLDER_TEXTS,
    GELU,
    IDENTITY,
    TANH,
    TEXTS,
    edit_json,
    family_folder,
    onnx_folder,
    rel_diff,
    st_model,
)
from tests.st_tiny import DECODERS, ENCODERS, FAMILIES, MORE_DECODERS, MORE_ENCODERS, NO_SPECIAL_TOKENS
from tests.test_runtime import CHILD_TEXTS, _child, embed

INSTRUCT = {"query": "Instruct: Given a web search query, retrieve relevant passages\nQuery: "}

# (id, families, write_stack kwargs): together every pooling mode, head and prompt variant
CASES = [
    ("plain", ENCODERS + MORE_ENCODERS, dict(pooling="mean")),
    ("lasttoken-instruct", DECODERS + MORE_DECODERS, dict(pooling="lasttoken", prompts=INSTRUCT)),
    (
        "multi-dense-ln",
        FAMILIES,
        dict(
            pooling=("cls", "max", "mean_sqrt_len_tokens"),
            dense=[(24, GELU, True), (16, IDENTITY, False)],
            layer_norm=True,
            normalize=False,
        ),
    ),
    (
        "prompts-no-include",
        FAMILIES,
        dict(
            pooling="weightedmean",
            include_prompt=False,
            normalize=False,
            prompts={"query": "query: ", "passage": "passage: "},
            similarity_fn_name="dot",
            dense=[(16, TANH, True)],
        ),
    ),
    (
        "lasttoken-exclude-prompt",
        ("bert", "qwen2"),
        dict(
            pooling=("lasttoken", "cls"),
            include_prompt=False,
            prompts={"query": "query: "},
            default_prompt_name="query",
        ),
    ),
]
# weightedmean is refused there (tests/test_embedder.py::test_weightedmean_with_left_padding_is_refused)
LEFT_PADDED = ("llama", "mistral")


def _for(family: str, kw: dict) -> dict:
    return {**kw, "pooling": "mean"} if family in LEFT_PADDED and kw.get("pooling") == "weightedmean" else kw


PARAMS = [pytest.param(fam, _for(fam, kw), id=f"{fam}-{cid}") for cid, fams, kw in CASES for fam in fams]


# -- every family, as sentence-transformers runs it ------------------------------------------------


@pytest.mark.parametrize("family,stack", PARAMS)
def test_matches_sentence_transformers(transformers_dir, st_cache, tmp_path, family, stack):
    folder = family_folder(transformers_dir, tmp_path, family, **stack)
    emb = Embedder(str(folder), cache_dir=st_cache)
    # onnxruntime's fusions run for the first encoder families (and are verified here), never for decoders
    assert bool(emb._exported.meta["export"]["fusions"]) == (family in ENCODERS)
    st = st_model(folder)
    assert emb.dim == st.get_embedding_dimension()
    assert emb.max_seq_length == st.max_seq_length == 24
    assert emb.prompts == st.prompts and emb.default_prompt_name == st.default_prompt_name
    assert emb.similarity_fn_name == st.similarity_fn_name
    texts = [t for t in TEXTS if t] if family in NO_SPECIAL_TOKENS else TEXTS  # "": tests/test_embedder.py
    for call in ("encode", "encode_query", "encode_document"):
        ref = getattr(st, call)(texts, batch_size=4)
        ours = getattr(emb, call)(texts, batch_size=3)  # the defaults are sentence-transformers'
        assert rel_diff(ours, ref) <= 1e-4, (call, rel_diff(ours, ref))
    raw = st.encode(texts)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert rel_diff(emb.encode(texts, normalize=False), raw) <= 1e-4
    np.testing.assert_allclose(emb.encode(texts, normalize=True), unit, atol=1e-5)
    np.testing.assert_allclose(
        emb.encode(texts, normalize_embeddings=True), st.encode(texts, normalize_embeddings=True), atol=1e-5
    )
    one = emb.encode(TEXTS[4], prompt="passage: ", normalize=False)
    np.testing.assert_allclose(one, st.encode(TEXTS[4], prompt="passage: "), atol=1e-4 * np.abs(one).max())


def test_left_padding_and_decoder_inputs(transformers_dir, st_cache, tmp_path):
    """LLaMA pads on the left and its graph takes position_ids; batches of mixed lengths match."""
    folder = family_folder(transformers_dir, tmp_path, "llama", pooling="lasttoken")
    emb = Embedder(str(folder), cache_dir=st_cache)
    assert emb._left_pad and "position_ids" in emb._session.input_names
    assert "token_type_ids" not in emb._session.input_names
    ref = st_model(folder).encode(TEXTS, batch_size=len(TEXTS))
    for bs in (1, 2, len(TEXTS)):
        assert rel_diff(emb.encode(TEXTS, batch_size=bs, normalize=False), ref) <= 1e-4


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_do_lower_case(transformers_dir, st_cache, tmp_path, family):
    folder = family_folder(transformers_dir, tmp_path, family)
    edit_json(folder / "sentence_bert_config.json", do_lower_case=True)
    emb = Embedder(str(folder), cache_dir=st_cache)
    texts = ["HELLO World Paris", "Hello World Paris", "İstanbul ÉCOLE"]
    ref = st_model(folder).encode(texts)
    assert rel_diff(emb.encode(texts, normalize=False), ref) <= 1e-4
    np.testing.assert_allclose(ref[0], ref[1], atol=1e-6)  # lowercased: the same text


def test_model_type_optimum_cannot_export_is_refused(transformers_dir, tmp_path):
    """ERNIE: transformers has it, optimum has no ONNX export of it; refused by name before any export."""
    folder = family_folder(transformers_dir, tmp_path, "ernie")
    with pytest.raises(UnsupportedModelError, match=r"model_type 'ernie' is not supported: optimum-onnx .* no ONNX"):
        Embedder(str(folder), cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.onnx"))


def test_unverified_encoder_decoder_is_refused(transformers_dir, tmp_path):
    """An encoder-decoder type optimum exports but the engine has not verified (here the BART folder
    relabelled Pegasus, whose config reads the same keys): refused, never exported the wrong way."""
    folder = family_folder(transformers_dir, tmp_path, "bart")
    edit_json(folder / "config.json", model_type="pegasus", architectures=["PegasusModel"])
    with pytest.raises(UnsupportedModelError, match="model_type 'pegasus' is not supported: it is an encoder-decoder"):
        Embedder(str(folder), cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.onnx"))


# -- fingerprints ----------------------------------------------------------------------------------


def test_fingerprint_follows_content_not_path(transformers_dir, tmp_path):
    base = family_folder(transformers_dir, tmp_path, "bert", dense=[(16, GELU, True)], prompts={"query": "q: "})
    cache = tmp_path / "cache"

    def fp(folder) -> str:
        return Embedder(str(folder), cache_dir=cache).fingerprint

    def variant(name, change):
        f = shutil.copytree(base, tmp_path / name / "bert")
        change(f)
        return fp(f)

    ref = fp(base)
    assert variant("copy", lambda f: None) == ref, "same content at another path: same fingerprint"
    changed = {
        "tokenizer-lowercase": lambda f: edit_json(
            f / "tokenizer.json",
            normalizer={**json.loads((f / "tokenizer.json").read_text())["normalizer"], "lowercase": False},
        ),
        "prompt": lambda f: edit_json(f / "config_sentence_transformers.json", prompts={"query": "query: "}),
        "max-seq-length": lambda f: edit_json(f / "sentence_bert_config.json", max_seq_length=20),
        "pooling": lambda f: edit_json(f / "1_Pooling" / "config.json", pooling_mode="cls"),
        "similarity": lambda f: edit_json(f / "config_sentence_transformers.json", similarity_fn_name="dot"),
        "config": lambda f: edit_json(f / "config.json", layer_norm_eps=1e-6),
    }
    fps = {name: variant(name, change) for name, change in changed.items()}
    assert ref not in fps.values(), fps
    assert len(set(fps.values())) == len(fps), fps


def test_dense_weights_are_in_the_fingerprint(transformers_dir, tmp_path):
    a = family_folder(transformers_dir, tmp_path / "a", "bert", dense=[(16, GELU, True)], seed=0)
    b = family_folder(transformers_dir, tmp_path / "b", "bert", dense=[(16, GELU, True)], seed=1)
    fa, fb = (Embedder(str(f), cache_dir=tmp_path / "c").fingerprint for f in (a, b))
    assert fa != fb


def test_edited_folder_is_exported_again(transformers_dir, tmp_path):
    """The cache key of a local folder covers its configs and tokenizer: an edit is never served stale."""
    folder = family_folder(transformers_dir, tmp_path, "bert", prompts={"query": "q: "})
    before = Embedder(str(folder), cache_dir=tmp_path / "c")
    edit_json(folder / "config_sentence_transformers.json", prompts={"query": "query: "})
    after = Embedder(str(folder), cache_dir=tmp_path / "c")
    assert after.prompts["query"] == "query: " and after.fingerprint != before.fingerprint


# -- shipped ONNX graphs ---------------------------------------------------------------------------


def _pipeline_graph(path, hidden=4):
    """input_ids -> Gather(table) = tokens (b,s,h); outputs: ids passthrough, tokens, mean over s."""
    table = numpy_helper.from_array(np.arange(10 * hidden, dtype=np.float32).reshape(10, hidden), "table")
    nodes = [
        helper.make_node("Identity", ["input_ids"], ["ids_out"]),
        helper.make_node("Gather", ["table", "input_ids"], ["tok"]),
        helper.make_node("ReduceMean", ["tok"], ["pooled"], axes=[1], keepdims=0),
    ]
    g = helper.make_graph(
        nodes,
        "pipe",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [
            helper.make_tensor_value_info("ids_out", TensorProto.INT64, ["b", "s"]),
            helper.make_tensor_value_info("tok", TensorProto.FLOAT, ["b", "s", hidden]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["b", hidden]),
        ],
        [table],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_keep_token_output(tmp_path):
    import onnxruntime as ort

    p = tmp_path / "m.onnx"
    _pipeline_graph(p)
    spec = ModelSpec(name="t", dim=4, hidden_size=4, num_heads=1, max_seq_length=8)
    assert _keep_token_output(p, spec) == "tok"
    m = onnx.load(str(p))
    assert [o.name for o in m.graph.output] == ["last_hidden_state"]
    assert [n.op_type for n in m.graph.node] == ["Gather"]
    ids = np.array([[1, 2, 3]], dtype=np.int64)
    out = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]
    np.testing.assert_array_equal(out[0], np.arange(40, dtype=np.float32).reshape(10, 4)[[1, 2, 3]])


def test_keep_token_output_refuses_graph_without_one(tmp_path):
    p = tmp_path / "m.onnx"
    _pipeline_graph(p, hidden=4)
    with pytest.raises(ExportError, match="no \\(batch, sequence, 8\\)"):
        _keep_token_output(p, ModelSpec(name="t", dim=8, hidden_size=8, num_heads=1, max_seq_length=8))


def test_onnx_with_external_data_loads_and_is_fingerprinted(base_folder, tmp_path):
    """Before: onnx's ValidationError traceback (the data file was not copied with the graph). Now
    the graph's own model.onnx_data is used (vectors match sentence-transformers on the folder the
    graph came from) and is in the fingerprint: other data, another fingerprint."""
    folder = onnx_folder(base_folder, tmp_path)
    emb = Embedder(str(folder), cache_dir=tmp_path / "cache")
    assert "model.onnx_data" in emb._exported.meta["weights_sha256"]
    assert np.abs(emb.encode(FOLDER_TEXTS) - st_model(base_folder).encode(FOLDER_TEXTS)).max() <= 1e-4
    data = bytearray((folder / "model.onnx_data").read_bytes())
    data[-4:] = b"\x00\x00\x80\x3f"  # one weight changed, same size
    (folder / "model.onnx_data").write_bytes(bytes(data))
    assert Embedder(str(folder), cache_dir=tmp_path / "cache").fingerprint != emb.fingerprint


def test_onnx_only_folder_keeps_its_tokenizer(transformers_dir, tmp_path):
    """The catalogue's ONNX-only path (a bare graph + a donor tokenizer.json, no configs): mean pooling
    as sentence-transformers computes it for the folder the graph came from; no paths in the fingerprint."""
    from engine.models.fetch import ResolvedModel

    src = family_folder(transformers_dir, tmp_path, "bert", normalize=False, max_seq_length=16)
    ref = st_model(src).encode(TEXTS)
    exported = load_or_export(str(src), cache_dir=tmp_path / "c1")
    spec = ModelSpec(
        name="onnx-only",
        dim=32,
        max_seq_length=16,
        hidden_size=32,
        num_heads=2,
        normalize=False,
        onnx_only=True,
        sha256=(("model.onnx", "0" * 64),),
    )
    fps = []
    for where in ("a", "b"):
        bare = tmp_path / where / "onnx-only"
        bare.mkdir(parents=True)
        shutil.copy2(exported.onnx_path, bare / "model.onnx")
        shutil.copy2(src / "tokenizer.json", bare / "tokenizer.json")
        (bare / "SOURCE.txt").write_text(f"model.onnx: {bare}\n")
        digest = hashlib.sha256((bare / "model.onnx").read_bytes()).hexdigest()
        resolved = ResolvedModel(dataclasses.replace(spec, sha256=(("model.onnx", digest),)), bare, "pypi:x", True)
        ex = load_or_export(resolved, cache_dir=tmp_path / f"c-{where}")
        assert ex.tokenizer_info["padding_side"] == "right" and ex.stack.max_seq_length == 16
        fps.append(ex.fingerprint)
    emb = Embedder(resolved, cache_dir=tmp_path / "c-b")  # a ResolvedModel: no catalogue entry needed
    assert rel_diff(emb.encode(TEXTS, normalize=False), ref) <= 1e-4
    assert fps[0] == fps[1]


# -- the export cache ------------------------------------------------------------------------------


def test_stale_export_temp_folders_are_removed_by_the_next_export(base_folder, tmp_path):
    """Before: a kill -9 during an export left its ``*.tmp-*`` folder in the cache forever. Now the
    next export removes the folders whose exporter is gone (its pid on this host has exited, or,
    with no owner recorded, older than a day) and keeps a live exporter's."""
    import socket
    import subprocess
    import sys
    import time

    onnx = tmp_path / "cache" / "onnx"
    onnx.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    folders = {}
    for name, owner, age in (
        ("killed", {"host": host, "pid": int(dead.stdout)}, 0),
        ("live", {"host": host, "pid": os.getpid()}, 0),
        ("other-host-old", {"host": host + "-x", "pid": 1}, 2 * 86400),
        ("other-host-recent", {"host": host + "-x", "pid": 1}, 60),
        ("no-owner-old", None, 2 * 86400),
    ):
        f = onnx / f"some-model-fp32-v2.tmp-{name}"
        (f / "raw").mkdir(parents=True)
        (f / "raw" / "model.onnx").write_bytes(b"half written")
        if owner is not None:
            (f / ".owner.json").write_text(json.dumps(owner))
        os.utime(f, (time.time() - age, time.time() - age))
        folders[name] = f
    emb = Embedder(str(base_folder), cache_dir=tmp_path / "cache")
    left = sorted(p.name.rsplit("tmp-", 1)[1] for p in onnx.glob("*.tmp-*"))
    assert left == ["live", "other-host-recent"]
    assert not (emb._exported.folder / ".owner.json").exists()


def test_int8_folder_name_carries_the_recipe(monkeypatch):
    monkeypatch.setattr(quantize, "cpu_isa", lambda: "avx2")
    assert _version_tag("int8") == "v2.2-rr" and _version_tag("fp32") == "v2"
    monkeypatch.setattr(quantize, "cpu_isa", lambda: "amx_int8")
    assert _version_tag("int8") == "v2.2-vnni" and _version_tag("fp32") == "v2"
    monkeypatch.setattr(quantize, "cpu_isa", lambda: "avx512_vnni")
    assert _version_tag("int8") == "v2.2-vnni"


def test_int8_exports_per_recipe(tiny_model_dir, tmp_path, monkeypatch):
    """Each recipe has its own folder and fingerprint; two ISA classes of one recipe share both;
    a folder whose meta names another recipe (copied under this CPU's name) is refused."""
    cache, other_cache = tmp_path / "cache", tmp_path / "other"
    monkeypatch.setattr(quantize, "cpu_isa", lambda: "avx2")
    rr = load_or_export(str(tiny_model_dir), "int8", cache_dir=cache)
    assert rr.folder.name.endswith("-int8-v2.2-rr") and rr.meta["int8_isa"] == "avx2"
    q = rr.meta["export"]["quantization"]
    assert q["recipe"] == "rr" and q["reduce_range"] is True and "cpu_isa" not in q

    monkeypatch.setattr(quantize, "cpu_isa", lambda: "amx_int8")
    amx = load_or_export(str(tiny_model_dir), "int8", cache_dir=cache)
    assert amx.folder.name.endswith("-int8-v2.2-vnni") and amx.meta["int8_isa"] == "amx_int8"
    assert amx.meta["export"]["quantization"]["reduce_range"] is False
    assert amx.fingerprint != rr.fingerprint  # other weights scale: other vectors

    monkeypatch.setattr(quantize, "cpu_isa", lambda: "avx512_vnni")
    again = load_or_export(str(tiny_model_dir), "int8", cache_dir=cache)  # the AMX machine's cache, copied
    assert again.folder == amx.folder and again.fingerprint == amx.fingerprint
    fresh = load_or_export(str(tiny_model_dir), "int8", cache_dir=other_cache)  # exported on this class
    assert fresh.fingerprint == amx.fingerprint and fresh.meta["int8_isa"] == "avx512_vnni"

    # an rr export placed under the vnni folder name (a hand copy) is refused, not run
    shutil.rmtree(fresh.folder)
    shutil.copytree(rr.folder, fresh.folder)
    with pytest.raises(ExportError, match=r"recipe 'rr' on a CPU of ISA class avx2.*needs recipe 'vnni'.*Delete"):
        load_or_export(str(tiny_model_dir), "int8", cache_dir=other_cache)


def test_runtime_graphs_of_an_export_with_external_data(tiny_embedder, tmp_path):
    """Weights in an external file: the CPU runtime loads model.onnx as it is (as for graphs over
    1 GiB), and the CUDA graph refers to the same external file instead of copying it."""
    from engine.batching import pad_batch
    from engine.models.export import _write_runtime_graphs
    from engine.runtime import Session

    src = tiny_embedder._exported.onnx_path
    onnx.save(
        onnx.load(str(src)),
        str(tmp_path / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    graphs = _write_runtime_graphs(tmp_path, tiny_embedder.spec, "fp32")
    assert graphs == {"cpu": "model.onnx", "cuda": "model.cuda.onnx"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.cuda.onnx", "model.onnx", "model.onnx.data"]
    assert (tmp_path / "model.cuda.onnx").stat().st_size < (tmp_path / "model.onnx.data").stat().st_size / 10
    input_ids, mask = pad_batch(tiny_embedder.tokenize(["a short one", "a somewhat longer sentence", ""]), 0)
    feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
    hidden = Session(src).run(feeds)
    want = (hidden * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    np.testing.assert_allclose(Session(tmp_path / "model.cuda.onnx").run(feeds), want, atol=1e-5)


# -- exports written before the runtime graphs were part of an export -----------------------------
COMPLETE = ["meta.json", "model.cpu.onnx", "model.cuda.onnx", "model.onnx", "tokenizer.json"]  # a complete export


def _old_layout(src, cache):
    """A copy of export folder ``src`` as an earlier version left it: model.onnx only, no meta["graphs"],
    and the pooled variant the CUDA path used to build lazily beside it."""
    old = cache / "onnx" / src.name
    shutil.copytree(src, old)
    for name in set(json.loads((src / "meta.json").read_text())["graphs"].values()) - {"model.onnx"}:
        (old / name).unlink()
    shutil.copy2(src / "model.cuda.onnx", old / "model.pooled.onnx")
    meta = json.loads((old / "meta.json").read_text())
    del meta["graphs"]
    (old / "meta.json").write_text(json.dumps(meta, indent=2))
    return old


@pytest.fixture
def no_reexport(monkeypatch, tiny_model_dir, tiny_cache):
    """``export._export`` refused (an old export is completed, never exported again), once the tiny
    model's fp32 and int8 exports the tests compare with are in ``tiny_cache``."""
    for precision in ("fp32", "int8"):
        load_or_export(str(tiny_model_dir), precision, cache_dir=tiny_cache)

    def refuse(*a, **k):
        raise AssertionError("the old export was exported again instead of completed")

    monkeypatch.setattr(export, "_export", refuse)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_old_layout_export_is_completed_once(tiny_model_dir, tiny_cache, tmp_path, precision, no_reexport):
    """Exports of the layout before runtime graphs (onnxruntime's: int8 pinned to it, whatever this CPU's default)."""
    fresh = Embedder(str(tiny_model_dir), model_precision=precision, cache_dir=tiny_cache, runtime="onnxruntime")
    old = _old_layout(fresh._exported.folder, tmp_path / "cache")
    onnx_before = (old / "model.onnx").stat()
    emb = Embedder(str(tiny_model_dir), model_precision=precision, cache_dir=tmp_path / "cache", runtime="onnxruntime")
    assert emb._exported.folder == old
    assert emb.fingerprint == fresh.fingerprint
    meta = json.loads((old / "meta.json").read_text())
    assert meta["graphs"] == fresh._exported.meta["graphs"] == {"cpu": "model.cpu.onnx", "cuda": "model.cuda.onnx"}
    assert {**meta, "graphs": None} == {**fresh._exported.meta, "graphs": None}  # nothing else changed
    for name in ("model.cpu.onnx", "model.cuda.onnx"):  # the same graphs a fresh export writes
        assert (old / name).read_bytes() == (fresh._exported.folder / name).read_bytes(), name
    assert sorted(p.name for p in old.iterdir()) == COMPLETE
    assert (old / "model.onnx").stat().st_ino == onnx_before.st_ino  # the export itself untouched
    np.testing.assert_allclose(emb.encode(CHILD_TEXTS), fresh.encode(CHILD_TEXTS), rtol=0, atol=1e-6)
    # done once: the next load finds a complete export and writes nothing
    meta_mtime = (old / "meta.json").stat().st_mtime_ns
    Embedder(str(tiny_model_dir), model_precision=precision, cache_dir=tmp_path / "cache", runtime="onnxruntime")
    assert (old / "meta.json").stat().st_mtime_ns == meta_mtime


def test_a_deleted_runtime_graph_is_written_again(tiny_model_dir, tiny_cache, tiny_embedder, tmp_path, no_reexport):
    folder = tmp_path / "cache" / "onnx" / tiny_embedder._exported.folder.name
    shutil.copytree(tiny_embedder._exported.folder, folder)
    (folder / "model.cpu.onnx").unlink()
    emb = Embedder(str(tiny_model_dir), cache_dir=tmp_path / "cache")
    assert (folder / "model.cpu.onnx").read_bytes() == tiny_embedder._graph.read_bytes()
    np.testing.assert_allclose(emb.encode(CHILD_TEXTS), tiny_embedder.encode(CHILD_TEXTS), rtol=0, atol=1e-6)


def test_concurrent_loads_complete_an_old_export_safely(tiny_model_dir, tiny_embedder, tmp_path, no_reexport):
    old = _old_layout(tiny_embedder._exported.folder, tmp_path / "cache")
    results, errors = [], []

    def load():
        try:
            results.append(load_or_export(str(tiny_model_dir), cache_dir=tmp_path / "cache"))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert {r.meta["graphs"]["cpu"] for r in results} == {"model.cpu.onnx"}
    assert (old / "model.cpu.onnx").read_bytes() == tiny_embedder._graph.read_bytes()
    assert sorted(p.name for p in old.iterdir()) == COMPLETE


def test_old_layout_without_onnx_is_a_clear_error(tiny_model_dir, tiny_embedder, tmp_path):
    old = _old_layout(tiny_embedder._exported.folder, tmp_path / "cache")
    report, _ = _child(str(tiny_model_dir), tmp_path / "cache", ("fp32",), tmp_path)
    assert report["refused"] == ["onnx"] and report["loaded"] == []  # it tried onnx, found none, stopped
    error = report["error"]
    assert error.startswith("ExportError: ") and str(old) in error
    assert "pip install 'embed-engine[export]'" in error and "delete" in error
    assert not (old / "model.cpu.onnx").exists() and "graphs" not in json.loads((old / "meta.json").read_text())


def test_without_onnx_a_missing_graph_matters_only_to_its_device(tiny_model_dir, tiny_embedder, tmp_path):
    folder = tmp_path / "cache" / "onnx" / tiny_embedder._exported.folder.name
    shutil.copytree(tiny_embedder._exported.folder, folder)
    (folder / "model.cuda.onnx").unlink()  # the CPU runtime does not need it
    report, got = _child(str(tiny_model_dir), tmp_path / "cache", ("fp32",), tmp_path)
    assert report == {"refused": ["onnx"], "loaded": [], "error": None}
    want = embed(
        Embedder,
        {"model": str(tiny_model_dir), "cache": tiny_embedder._exported.folder.parent.parent, "texts": CHILD_TEXTS},
        "fp32",
    )
    np.testing.assert_allclose(got["fp32_batched"], want["batched"], rtol=0, atol=1e-6)
    (folder / "model.cpu.onnx").unlink()
    report, _ = _child(str(tiny_model_dir), tmp_path / "cache", ("fp32",), tmp_path)
    assert report["error"].startswith("ExportError: ") and str(folder) in report["error"]
    assert "model.cpu.onnx (the cpu graph) is missing" in report["error"]
    assert "pip install 'embed-engine[export]'" in report["error"]


@pytest.mark.parametrize("name", ["../model.onnx", "/etc/passwd", "sub/model.onnx", "..", "", 7])
def test_graph_names_outside_the_folder_are_refused(tiny_model_dir, tiny_embedder, tmp_path, name):
    folder = tmp_path / "cache" / "onnx" / tiny_embedder._exported.folder.name
    shutil.copytree(tiny_embedder._exported.folder, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["graphs"]["cpu"] = name
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match=r"not a file name inside the export folder.*delete"):
        Embedder(str(tiny_model_dir), cache_dir=tmp_path / "cache")
