"""Embedder: fidelity to sentence-transformers (the oracle), batching, truncation, bad input, prompt
names and weightedmean pooling with left padding on tiny families (tests/st_tiny.py), cached graphs
it cannot feed.

Its sentence-transformers API (every encode keyword, similarity, prompts, settable attributes)
is checked against ``SentenceTransformer`` in tests/test_embedder_parity.py; the batch planner
itself in tests/test_batching.py; resolving model names, folders and hub ids in
tests/models/test_fetch.py; the tokenizer in tests/test_tokenize.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from engine import Embedder, InputError
from engine.batching import pad_batch
from engine.errors import ExportError, UnsupportedModelError
from tests.conftest import TINY_MAX_LEN, minilm_folder, shared_data
from tests.models.folders import family_folder

VARIED = [
    "",
    "   ",
    "\t\n",
    "a",
    "Hello, world!",
    "héllo wörld café naïve 日本語 テキスト 🙂 emoji",
    "the quick brown fox jumps over the lazy dog " * 30,  # far past max_seq_length
    "numba compiles python loops",
    "UPPER case and lower case",
    "x" * 500,  # one very long word
]


def _st(folder, **kwargs):
    """The oracle: ``SentenceTransformer`` on ``folder``, on the CPU."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", **kwargs)


def _assert_parity(ours: np.ndarray, ref: np.ndarray):
    cos = np.sum(ours * ref, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.99999, f"min cosine {cos.min()} at text {int(cos.argmin())}"
    assert np.abs(ours - ref).max() <= 1e-4


# -- tiny model: export, pooling, batching, the truncation trap ------------------------------
def test_tiny_matches_sentence_transformers(tiny_model_dir, tiny_embedder):
    texts = VARIED + [f"document number {i} " * (i % 7 + 1) for i in range(40)]
    ref = _st(tiny_model_dir).encode(texts, batch_size=8, normalize_embeddings=True)
    _assert_parity(tiny_embedder.encode(texts, batch_size=5), ref)


def test_truncates_at_max_seq_length_not_tokenizer_json(tiny_model_dir, tiny_embedder):
    # tokenizer.json says 8, sentence_bert_config.json says 16: sentence-transformers uses 16.
    ids = tiny_embedder.tokenize(["word " * 100, "short"])
    assert len(ids[0]) == TINY_MAX_LEN
    assert len(ids[1]) < 8
    assert tiny_embedder.max_seq_length == TINY_MAX_LEN


def test_batching_restores_input_order(tiny_embedder):
    texts = [("long text " * (i % 9)) + str(i) for i in range(60)]
    base = tiny_embedder.encode(texts, batch_size=1)
    for bs, budget in [(7, None), (64, None), (32, 40)]:
        np.testing.assert_allclose(tiny_embedder.encode(texts, batch_size=bs, max_tokens=budget), base, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(tiny_embedder.encode([texts[i] for i in perm], batch_size=16), base[perm], atol=1e-5)


def test_default_cpu_batches_give_the_same_vectors(tiny_embedder):
    """The CPU's attention-cell cap changes only how texts are grouped, not the vectors."""
    texts = ["word " * n for n in (3, 40, 7, 60, 1, 25, 60, 2)]
    assert tiny_embedder.max_cells is not None  # CPU default
    capped = tiny_embedder.encode(texts)
    uncapped = tiny_embedder.encode(texts, max_tokens=10**6)
    np.testing.assert_allclose(capped, uncapped, atol=1e-5)


@pytest.mark.parametrize(
    "attr, bad",
    [("max_cells", 0), ("max_cells", 2.5), ("batch_workers", 0), ("batch_workers", "2"), ("batch_workers", None)],
)
def test_cpu_tuning_attributes_refuse_bad_values(tiny_embedder, attr, bad):
    before = getattr(tiny_embedder, attr)
    with pytest.raises(InputError, match=attr):
        setattr(tiny_embedder, attr, bad)
    assert getattr(tiny_embedder, attr) == before


def test_batch_workers_give_the_same_vectors(tiny_embedder):
    texts = ["word " * n for n in range(1, 40)]
    before = tiny_embedder.batch_workers
    try:
        tiny_embedder.batch_workers = 1
        one = tiny_embedder.encode(texts, batch_size=4)
        tiny_embedder.batch_workers = 3
        many = tiny_embedder.encode(texts, batch_size=4)
    finally:
        tiny_embedder.batch_workers = before
    np.testing.assert_allclose(many, one, atol=1e-6)


def test_shapes_follow_sentence_transformers_conventions(tiny_embedder):
    one = tiny_embedder.encode("just one")
    assert one.shape == (tiny_embedder.dim,) and one.dtype == np.float32
    np.testing.assert_allclose(one, tiny_embedder.encode(["just one"])[0], atol=1e-6)
    empty = tiny_embedder.encode([])
    assert empty.shape == (0, tiny_embedder.dim)
    assert np.allclose(np.linalg.norm(tiny_embedder.encode(VARIED), axis=1), 1.0, atol=1e-5)


def test_truncate_dim_renormalizes_when_asked(tiny_embedder):
    """sentence-transformers' order: truncate, then normalize only with normalize_embeddings=True."""
    full = tiny_embedder.encode(VARIED, normalize=False)
    cut = tiny_embedder.encode(VARIED, truncate_dim=8, normalize_embeddings=True)
    ref = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, ref, atol=1e-6)
    for raw in (
        tiny_embedder.encode(VARIED, truncate_dim=8, normalize=False),
        tiny_embedder.encode(VARIED, truncate_dim=8),
    ):  # the default: no re-normalization
        np.testing.assert_allclose(raw, full[:, :8], atol=1e-6)


def test_megabyte_string_is_truncated_like_any_text(tiny_embedder):
    words = ("alpha beta gamma delta epsilon " * 40000)[: 1 << 20]
    tok = tiny_embedder._tokenizer
    head = tok._prefix(words)
    assert len(head) < 10_000, "the 1 MB string must be cut before tokenization"
    full_ids = tok._probe.encode(words).ids  # oracle: tokenize everything, then truncate
    oracle = [*full_ids[: TINY_MAX_LEN - 1], full_ids[-1]]
    assert tiny_embedder.tokenize([words])[0].tolist() == oracle
    np.testing.assert_allclose(tiny_embedder.encode(words), tiny_embedder.encode(words[:2000]), atol=1e-6)


def test_fingerprint_is_stable_and_distinguishes_models(tiny_model_dir, tiny_cache, tiny_embedder, tmp_path):
    again = Embedder(str(tiny_model_dir), cache_dir=tiny_cache)
    assert again.fingerprint == tiny_embedder.fingerprint
    assert tiny_embedder.fingerprint.startswith("tiny-bert/fp32/32/")
    from tests.conftest import build_tiny_model

    other = Embedder(str(build_tiny_model(tmp_path / "tiny-bert", seed=1)), cache_dir=tmp_path / "cache")
    assert other.fingerprint != tiny_embedder.fingerprint


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, match",
    [
        (None, "None"),
        ([1, "a"], r"texts\[0\] is int"),
        (["a", None], r"texts\[1\] is NoneType"),
        (b"abc", "bytes"),
        (42, "string"),
    ],
    ids=["none", "int-item", "none-item", "bytes", "int"],
)
def test_bad_texts_raise_clear_errors(tiny_embedder, bad, match):
    with pytest.raises(InputError, match=match):
        tiny_embedder.encode(bad)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"truncate_dim": 0}, {"truncate_dim": 10_000}])
def test_bad_options(tiny_embedder, kwargs):
    with pytest.raises(InputError):
        tiny_embedder.encode(["a"], **kwargs)


# -- any sentence-transformers model: prompt names, left padding (tiny families) -------------------


def test_unknown_prompt_name_and_bad_prompt(transformers_dir, st_cache, tmp_path):
    folder = family_folder(transformers_dir, tmp_path, "bert", prompts={"query": "q: "})
    emb = Embedder(str(folder), cache_dir=st_cache)
    with pytest.raises(InputError, match=r"prompt_name 'nope'.*document.*query"):
        emb.encode(["a"], prompt_name="nope")
    with pytest.raises(InputError, match="prompt must be a string"):
        emb.encode(["a"], prompt=3)


def test_weightedmean_with_left_padding_is_refused(transformers_dir, st_cache, tmp_path):
    folder = family_folder(transformers_dir, tmp_path, "llama", pooling="weightedmean")
    with pytest.raises(UnsupportedModelError, match=r"weightedmean.*left"):
        Embedder(str(folder), cache_dir=st_cache)


# -- the session: cached graphs, providers, imports ---------------------------------------------
def test_a_cached_graph_with_inputs_the_engine_does_not_feed_is_refused(
    tiny_embedder, tiny_model_dir, tiny_cache, tmp_path
):
    """An export from an older engine (T5/BART exported whole took decoder_input_ids) or another tool: the
    Embedder names the inputs and the folder to delete, instead of onnxruntime failing on every batch."""
    import onnx
    from onnx import helper

    cache = shutil.copytree(tiny_cache, tmp_path / "cache")
    folder = cache / tiny_embedder._exported.folder.relative_to(tiny_cache)
    cpu_file = folder / tiny_embedder._exported.meta["graphs"]["cpu"]
    m = onnx.load(str(cpu_file))
    m.graph.input.append(helper.make_tensor_value_info("decoder_input_ids", onnx.TensorProto.INT64, ["b", "t"]))
    onnx.save(m, str(cpu_file))
    with pytest.raises(ExportError, match=r"decoder_input_ids.*Delete .*" + folder.name):
        Embedder(str(tiny_model_dir), cache_dir=cache)


def test_unavailable_provider_lists_available(tiny_model_dir, tiny_cache):
    import onnxruntime as ort

    from engine import ProviderError

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(ProviderError, match=r"CPUExecutionProvider.*onnxruntime-gpu"):
        Embedder(str(tiny_model_dir), device="cuda", cache_dir=tiny_cache)
    with pytest.raises(InputError, match="device"):
        Embedder(str(tiny_model_dir), device="tpu", cache_dir=tiny_cache)
    with pytest.raises(InputError, match="CUDA only"):
        Embedder(str(tiny_model_dir), model_precision="fp16", cache_dir=tiny_cache)


def test_runtime_path_never_imports_torch(tiny_model_dir, tiny_cache, tiny_embedder):
    code = (
        "import sys; from engine import Embedder; "
        f"e = Embedder({str(tiny_model_dir)!r}, cache_dir={str(tiny_cache)!r}); e.encode(['x']); "
        "bad = [m for m in ('torch', 'optimum', 'transformers', 'sentence_transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_import_engine_is_light():
    code = (
        "import sys, engine; "
        "print(sorted(m for m in ('onnxruntime', 'torch', 'numba', 'tokenizers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the real default model ----------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    minilm_folder()
    return Embedder("all-MiniLM-L6-v2")


def _varied_real_texts(n_docs=120, n_sts=100) -> list[str]:
    corpus = shared_data("scifact", "corpus.jsonl")
    docs = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs.append(f"{d['title']} {d['text']}")
            if len(docs) >= n_docs:
                break
    sts = []
    with open(shared_data("stsb", "sts-dev.csv"), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 7:
                sts.append(parts[5])
            if len(sts) >= n_sts:
                break
    return docs + sts + VARIED


def test_minilm_parity_with_sentence_transformers(minilm):
    texts = _varied_real_texts()
    assert len(texts) >= 200
    long_docs = sum(len(ids) >= 256 for ids in minilm.tokenize(texts))
    assert long_docs >= 30, "the set must include documents longer than max_seq_length"
    ref = _st(minilm_folder()).encode(texts, batch_size=32, normalize_embeddings=True)
    _assert_parity(minilm.encode(texts, batch_size=32), ref)


def test_minilm_pinned_reference_vector(minilm):
    # first components from sentence-transformers 5.7 (torch), all-MiniLM-L6-v2
    v = minilm.encode("The quick brown fox jumps over the lazy dog.")
    np.testing.assert_allclose(v[:5], [0.04393, 0.05893, 0.04818, 0.07755, 0.02674], atol=1e-3)
    assert minilm.dim == 384 and minilm.max_seq_length == 256


def test_in_graph_pooling_and_io_binding_match_cpu_path(tiny_embedder, tmp_path):
    """The CUDA path's pieces (pooled graph written at export + IO binding), checked on the CPU provider."""
    from engine.runtime import Session

    texts = VARIED[:6]
    cuda_graph = tiny_embedder._exported.graph_path("cuda")
    assert cuda_graph.name == "model.cuda.onnx"
    pooled = Session(cuda_graph, io_binding=True)
    ref = tiny_embedder.encode(texts, normalize=False, batch_size=3)
    ids = tiny_embedder.tokenize(texts)
    batches = [pad_batch(ids[i : i + 3], 0) for i in (0, 3)]
    out = np.concatenate(
        [pooled.run({"input_ids": b, "attention_mask": m, "token_type_ids": np.zeros_like(b)}) for b, m in batches]
    )
    assert out.shape == ref.shape
    # the tiny model ends in a Normalize module, which encode(normalize=False) runs after pooling
    np.testing.assert_allclose(out / np.linalg.norm(out, axis=1, keepdims=True), ref, atol=1e-5)


def test_settings_change_atomically_while_threads_encode(tiny_model_dir, tiny_cache):
    """max_seq_length, truncate_dim and default_prompt_name set while 4 threads encode: no error
    (before: tokenizers' "RuntimeError: Already borrowed"), and every result equals the
    single-threaded vectors of one of the settings (before: some matched neither); every
    fingerprint read is one of the settings' fingerprints."""
    import itertools
    import threading

    emb = Embedder(str(tiny_model_dir), cache_dir=tiny_cache, prompts={"query": "query: "})
    emb.batch_workers = 1
    texts = [("the quick brown fox jumps over the lazy dog " * (1 + i % 5)) + str(i) for i in range(64)]
    combos = list(itertools.product((TINY_MAX_LEN, 6), (None, 16), (None, "query")))
    refs, fps = [], set()
    for length, dim, prompt in combos:  # the oracle: each setting alone, no threads
        emb.max_seq_length, emb.truncate_dim, emb.default_prompt_name = length, dim, prompt
        full = emb.encode(texts, batch_size=8, truncate_dim=None)
        refs.append(full if dim is None else full[:, :dim])
        fps.add(emb.fingerprint)
    assert len(fps) == 4  # a prompt is not in the fingerprint, the other two are
    stop, errors, results, seen = threading.Event(), [], [], set()

    def encoder():
        try:
            while not stop.is_set():
                results.append(emb.encode(texts, batch_size=8))
        except Exception as e:
            errors.append(e)

    def setter():
        for i in range(300):
            length, dim, prompt = combos[i % len(combos)]
            emb.max_seq_length = length
            emb.truncate_dim = dim
            emb.default_prompt_name = prompt
            seen.add(emb.fingerprint)

    workers = [threading.Thread(target=encoder) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        setter()
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not errors, errors[:3]
    assert seen <= fps
    assert len(results) >= 8
    for got in results:
        assert any(got.shape == r.shape and np.abs(got - r).max() <= 1e-6 for r in refs), (
            "a result computed with a mix of settings"
        )
