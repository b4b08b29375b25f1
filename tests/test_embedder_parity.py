"""Code written for sentence-transformers runs unchanged on ``Embedder``: sentence-transformers is the oracle.

Every encode keyword (normalize_embeddings, precision, truncate_dim, prompts, convert_to_tensor /
convert_to_numpy, positional order), similarity with all four functions, the embedding dimension and
a settable max_seq_length are compared with ``SentenceTransformer`` on the same tiny folders. Bad
arguments, unordered inputs and lone surrogates are refused, one test per kind. ``embed`` streams.
The first export logs two lines and leaves stderr empty.
"""

from __future__ import annotations

import itertools
import logging
import shutil

import numpy as np
import pytest

from engine import Embedder, InputError
from engine.embedder import CHUNK
from tests.st_tiny import build_transformer, write_stack
from tests.test_embedder import _st

TEXTS = [
    "",
    "a",
    "Hello, world!",
    "héllo wörld café naïve 日本語 テキスト",
    "the quick brown fox jumps over the lazy dog " * 12,  # past max_seq_length
    "embeddings map text to vectors of numbers",
    "x" * 300,
    "cosine similarity compares two unit vectors",
] + [f"document number {i} " * (i % 7 + 1) for i in range(24)]
PRECISIONS = ("int8", "uint8", "binary", "ubinary")


def _close(ours, ref, rel=1e-4):
    ref = np.asarray(ref)
    assert np.shape(ours) == ref.shape
    assert np.abs(np.asarray(ours) - ref).max() <= rel * max(np.abs(ref).max(), 1e-12)


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    """A BERT without a Normalize module, similarity "dot", query/document prompts: normalization shows."""
    folder = build_transformer(tmp_path_factory.mktemp("st-compat") / "raw-bert", "bert")
    return write_stack(
        folder,
        pooling="mean",
        normalize=False,
        similarity_fn_name="dot",
        prompts={"query": "query: ", "document": "passage: "},
    )


@pytest.fixture(scope="module")
def compat_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("st-compat-cache")


@pytest.fixture(scope="module")
def raw(raw_dir, compat_cache):
    return Embedder(str(raw_dir), cache_dir=compat_cache), _st(raw_dir)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tiny_embedder):
    return tiny_embedder, _st(tiny_model_dir)


@pytest.fixture(params=["raw", "tiny"])
def pair(request, raw, tiny):
    return raw if request.param == "raw" else tiny


# -- encode keywords against the oracle ------------------------------------------------------
@pytest.mark.parametrize("normalize_embeddings", [True, False])
def test_normalize_embeddings(pair, normalize_embeddings):
    emb, st = pair
    ref = st.encode(TEXTS, normalize_embeddings=normalize_embeddings)
    _close(emb.encode(TEXTS, normalize_embeddings=normalize_embeddings, batch_size=5), ref)
    # the engine's own name means the same; both names together must agree
    _close(emb.encode(TEXTS, normalize=normalize_embeddings), ref)
    _close(emb.encode(TEXTS, normalize=normalize_embeddings, normalize_embeddings=normalize_embeddings), ref)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_is_sentence_transformers_quantization(pair, precision):
    """Bit-identical to sentence-transformers' quantize_embeddings on the same float vectors (int8/uint8
    calibrated on the call's own vectors, as its encode does), and to its encode within float noise."""
    from sentence_transformers.quantization import quantize_embeddings as st_quantize

    emb, st = pair
    floats = emb.encode(TEXTS, normalize_embeddings=True)
    ours = emb.encode(TEXTS, normalize_embeddings=True, precision=precision)
    want = st_quantize(floats, precision=precision)
    assert ours.dtype == want.dtype and ours.shape == want.shape
    np.testing.assert_array_equal(ours, want)
    ref = st.encode(TEXTS, normalize_embeddings=True, precision=precision)
    assert ref.dtype == ours.dtype and ref.shape == ours.shape
    if precision in ("int8", "uint8"):  # ranges from slightly different floats: a bucket apart at most
        assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    else:  # every sign agrees where the value is not float noise around 0
        st_floats = st.encode(TEXTS, normalize_embeddings=True)
        firm = np.abs(st_floats) > 1e-4
        bits = np.unpackbits(ours.view(np.uint8), axis=1)[:, : emb.dim]
        ref_bits = np.unpackbits(ref.view(np.uint8), axis=1)[:, : emb.dim]
        assert (bits == ref_bits)[firm].all()
    # one string: quantized as a batch of one, then unwrapped (sentence-transformers' shapes)
    one = emb.encode(TEXTS[2], precision=precision)
    assert one.shape == st.encode(TEXTS[2], precision=precision).shape


@pytest.mark.parametrize("normalize_embeddings", [True, False])
def test_truncate_dim(pair, normalize_embeddings):
    emb, st = pair
    ref = st.encode(TEXTS, truncate_dim=8, normalize_embeddings=normalize_embeddings)
    _close(emb.encode(TEXTS, truncate_dim=8, normalize_embeddings=normalize_embeddings), ref)
    _close(
        emb.encode(TEXTS, truncate_dim=emb.dim, normalize_embeddings=normalize_embeddings),
        st.encode(TEXTS, normalize_embeddings=normalize_embeddings),
    )


def test_prompts_and_positional_order(raw):
    emb, st = raw
    for kwargs in (
        {"prompt_name": "query"},
        {"prompt_name": "document"},
        {"prompt": "search: "},
        {"prompt": "search: ", "prompt_name": "query"},
    ):
        _close(emb.encode(TEXTS, **kwargs), st.encode(TEXTS, **kwargs))
    _close(emb.encode_query(TEXTS, batch_size=4), st.encode_query(TEXTS))
    _close(emb.encode_document(TEXTS, normalize_embeddings=True), st.encode_document(TEXTS, normalize_embeddings=True))
    # sentence-transformers' positional order: (inputs, prompt_name, prompt, batch_size, ...)
    _close(emb.encode(TEXTS, "query", None, 4), st.encode(TEXTS, "query", None, 4))
    # its keyword names for the texts
    _close(emb.encode(sentences=TEXTS), st.encode(TEXTS))
    _close(emb.encode(inputs=TEXTS[:3], prompt_name="query"), st.encode(TEXTS[:3], prompt_name="query"))
    _close(emb.encode(TEXTS, task="query"), st.encode(TEXTS))  # accepted and ignored, as there


def test_show_progress_bar(tiny_embedder, capsys):
    ref = tiny_embedder.encode(TEXTS)
    np.testing.assert_array_equal(tiny_embedder.encode(TEXTS, show_progress_bar=True), ref)
    assert "encode" in capsys.readouterr().err  # tqdm's bar
    np.testing.assert_array_equal(tiny_embedder.encode(TEXTS, show_progress_bar=False, show_progress=False), ref)


def test_convert_to_tensor_and_numpy(pair):
    import torch

    emb, st = pair
    ours, ref = emb.encode(TEXTS, convert_to_tensor=True), st.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(ours, torch.Tensor) and ours.dtype == ref.dtype == torch.float32
    _close(ours.numpy(), ref.numpy())
    one = emb.encode(TEXTS[3], convert_to_tensor=True)
    assert isinstance(one, torch.Tensor) and one.shape == st.encode(TEXTS[3], convert_to_tensor=True).shape
    rows, ref_rows = emb.encode(TEXTS, convert_to_numpy=False), st.encode(TEXTS, convert_to_numpy=False)
    assert isinstance(rows, list) and isinstance(ref_rows, list) and len(rows) == len(ref_rows)
    assert all(isinstance(r, torch.Tensor) and r.shape == q.shape for r, q in zip(rows, ref_rows))
    _close(torch.stack(rows).numpy(), torch.stack(ref_rows).numpy())
    packed = emb.encode(TEXTS, precision="ubinary", convert_to_tensor=True)
    ref_packed = st.encode(TEXTS, precision="ubinary", convert_to_tensor=True)
    assert packed.dtype == ref_packed.dtype == torch.uint8 and packed.shape == ref_packed.shape


def test_convert_to_tensor_without_torch_names_the_extra(tiny_embedder, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    for kwargs in ({"convert_to_tensor": True}, {"convert_to_numpy": False}):
        with pytest.raises(ImportError, match=r"embed-engine\[export\]"):
            tiny_embedder.encode(["a"], **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pool": None},
        {"chunk_size": None},
        {"chunk_size": 4},  # ST's defaults, passed explicitly by wrappers
        {"convert_to_numpy": None},
        {"convert_to_tensor": None},  # falsy, as there
        {"convert_to_numpy": True, "convert_to_tensor": True},  # the tensor wins, as there
        {"device": "cpu"},
        {"device": "cpu:0"},
        {"device": "torch-cpu"},
        {"precision": None},  # float32, as there
    ],
    ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()),
)
def test_keywords_wrappers_pass_mean_what_they_mean_there(raw, kwargs):
    import torch

    emb, st = raw
    if kwargs.get("device") == "torch-cpu":
        kwargs = {"device": torch.device("cpu")}
    ours, ref = emb.encode(TEXTS, **kwargs), st.encode(TEXTS, **kwargs)
    assert type(ours) is type(ref)
    if isinstance(ref, list):  # convert_to_numpy falsy: a list of 1-d tensors
        assert all(isinstance(r, torch.Tensor) and r.shape == q.shape for r, q in zip(ours, ref))
        ours, ref = torch.stack(ours), torch.stack(ref)
    assert ours.dtype == ref.dtype
    _close(np.asarray(ours), np.asarray(ref))


def test_text_containers_give_the_lists_vectors(raw):
    """pandas and Arrow columns embed as the list of their strings does (sentence-transformers 5.7 refuses
    them: its oracle is its encode of the list); an Arrow null is named by its index, a table is refused."""
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    emb, st = raw
    ref = st.encode(TEXTS)
    for texts in (
        pd.Series(TEXTS, index=range(100, 100 + len(TEXTS))),
        pd.Series(TEXTS, dtype="string[pyarrow]"),
        pd.Index(TEXTS),
        pa.array(TEXTS),
        pa.chunked_array([TEXTS[:5], TEXTS[5:]]),
        np.array(TEXTS, dtype=object),
    ):
        got = emb.encode(texts)
        assert got.dtype == ref.dtype, type(texts)
        _close(got, ref)
    with pytest.raises(InputError, match=r"texts\[1\] is NoneType \(None\), not str"):
        emb.encode(pa.array(["a", None]))
    with pytest.raises(InputError, match=r"texts\[1\] is float \(nan\), not str"):
        emb.encode(pd.Series(["a", np.nan]))  # a missing value in a pandas column
    with pytest.raises(InputError, match=r"pyarrow Table, not a column of texts; pass one column, e.g. table\["):
        emb.encode(pa.table({"text": TEXTS}))


@pytest.mark.parametrize(
    "texts, match, st_takes_it",
    [
        (["a", None], r"texts\[1\] is NoneType", False),
        (["a", 3], r"texts\[1\] is int \(3\)", False),
        (["a", b"b"], r"texts\[1\] is bytes", False),
        (b"abc", r"texts is bytes; decode it first", False),
        (None, "texts is None", False),
        (5, "got int", False),
        ([("a", "b")], r"texts\[0\] is tuple", True),  # a text pair: sentence-transformers embeds it, we refuse
    ],
    ids=["None", "int", "bytes-item", "bytes", "none", "int-texts", "pair"],
)
def test_non_text_inputs_are_input_errors(raw, texts, match, st_takes_it):
    """Where sentence-transformers raises its own ValueError, ours is an InputError naming the item."""
    emb, st = raw
    if st_takes_it:
        st.encode(texts)
    else:
        with pytest.raises((ValueError, TypeError)):
            st.encode(texts)
    with pytest.raises(InputError, match=match):
        emb.encode(texts)


def test_similarity_of_python_lists_is_float32_as_there(raw):
    emb, st = raw
    a, b = emb.encode(TEXTS[:3]).tolist(), emb.encode(TEXTS[3:6]).tolist()
    ours, ref = emb.similarity(a, b), st.similarity(a, b)
    assert ours.dtype == np.float32 and str(ref.dtype) == "torch.float32"
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fn", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_all_functions(raw, fn):
    import torch

    emb, st = raw
    a, b = emb.encode(TEXTS[:6]), emb.encode(TEXTS[6:15])
    before = emb.similarity_fn_name, st.similarity_fn_name
    try:
        emb.similarity_fn_name = st.similarity_fn_name = fn
        ref = st.similarity(a, b).numpy()
        got = emb.similarity(a, b)
        assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (6, 9)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(emb.similarity(a[0], b), st.similarity(a[0], b).numpy(), rtol=1e-5, atol=1e-4)
        pair_ref = st.similarity_pairwise(a, b[:6]).numpy()
        np.testing.assert_allclose(emb.similarity_pairwise(a, b[:6]), pair_ref, rtol=1e-5, atol=1e-4)
        t = emb.similarity(torch.from_numpy(a), torch.from_numpy(b))  # tensors in, a tensor out
        assert isinstance(t, torch.Tensor)
        np.testing.assert_allclose(t.numpy(), ref, rtol=1e-5, atol=1e-4)
        if fn == "euclidean":  # a row against itself is 0, not float noise
            assert np.abs(np.diag(emb.similarity(a, a))).max() < 1e-6
    finally:
        emb.similarity_fn_name, st.similarity_fn_name = before


def test_similarity_fn_name_is_the_models_and_checked(raw, tiny):
    assert raw[0].similarity_fn_name == raw[1].similarity_fn_name == "dot"
    assert tiny[0].similarity_fn_name == tiny[1].similarity_fn_name == "cosine"
    with pytest.raises(InputError, match="similarity_fn_name must be one of"):
        raw[0].similarity_fn_name = "hamming"
    with pytest.raises(InputError, match="different dimensions"):
        raw[0].similarity(np.ones((2, 4)), np.ones((2, 5)))
    emb, st = raw
    try:  # None: cosine, as there
        emb.similarity_fn_name = st.similarity_fn_name = None
        assert emb.similarity_fn_name == st.similarity_fn_name == "cosine"
    finally:
        emb.similarity_fn_name = st.similarity_fn_name = "dot"


def test_embedding_dimension(pair):
    emb, st = pair
    assert emb.get_sentence_embedding_dimension() == emb.get_embedding_dimension() == st.get_embedding_dimension()
    assert emb.encode(TEXTS[:2]).shape[1] == emb.get_sentence_embedding_dimension()


# -- the defaults are sentence-transformers': no normalize argument, the model's output ----------------
@pytest.fixture(scope="module")
def cos_dir(raw_dir, tmp_path_factory):
    """raw_dir's BERT as a cosine model (the default similarity) without a Normalize module, with prompts:
    its vectors are not unit length, so a default that normalizes cosine models would show."""
    folder = shutil.copytree(raw_dir, tmp_path_factory.mktemp("st-compat-cos") / "cos-bert")
    return write_stack(folder, pooling="mean", normalize=False, prompts={"query": "query: ", "document": "passage: "})


@pytest.fixture(scope="module")
def cos(cos_dir, compat_cache):
    return Embedder(str(cos_dir), cache_dir=compat_cache), _st(cos_dir)


def test_default_is_the_models_output_as_there(cos):
    """``Embedder(folder).encode(texts)`` == ``SentenceTransformer(folder).encode(texts)``, no normalize argument
    on either side, for a cosine model without Normalize; encode_query / encode_document / embed / one string /
    tensors alike; normalize_embeddings=True gives ST's unit vectors."""
    emb, st = cos
    assert emb.similarity_fn_name == st.similarity_fn_name == "cosine" and not emb.stack.normalizes
    ref = st.encode(TEXTS)
    assert np.abs(np.linalg.norm(ref, axis=1) - 1).min() > 0.1  # far from unit length: normalizing would show
    _close(emb.encode(TEXTS), ref)
    for off in ({"normalize_embeddings": False}, {"normalize_embeddings": None}, {"normalize": False}):
        _close(emb.encode(TEXTS, **off), ref)
    _close(emb.encode(TEXTS[2]), st.encode(TEXTS[2]))
    _close(emb.encode(TEXTS, convert_to_tensor=True).numpy(), st.encode(TEXTS, convert_to_tensor=True).numpy())
    _close(np.concatenate(list(emb.embed(iter(TEXTS), batch_size=4))), ref)
    for call in ("encode_query", "encode_document"):
        want = getattr(st, call)(TEXTS)
        assert np.abs(want - ref).max() > 1e-3  # the prompt is there
        _close(getattr(emb, call)(TEXTS), want)
        unit = getattr(st, call)(TEXTS, normalize_embeddings=True)
        _close(getattr(emb, call)(TEXTS, normalize_embeddings=True), unit)
    unit = st.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
    _close(emb.encode(TEXTS, normalize_embeddings=True), unit)
    _close(emb.encode(TEXTS, normalize=True), unit)
    # similarity scores do not depend on it: cosine normalizes, as there
    _close(emb.similarity(emb.encode(TEXTS[:5]), emb.encode(TEXTS[:5])), st.similarity(unit[:5], unit[:5]).numpy())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_default_precision_quantizes_the_models_output(cos, precision):
    """Output quantization comes after (no) normalization, as there: int8 ranges are calibrated on the raw
    vectors of the call."""
    from sentence_transformers.quantization import quantize_embeddings as st_quantize

    emb, st = cos
    ours, ref = emb.encode(TEXTS, precision=precision), st.encode(TEXTS, precision=precision)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, st_quantize(emb.encode(TEXTS), precision=precision))
    if precision in ("int8", "uint8"):  # ranges from slightly different floats: a bucket apart at most
        assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
        assert (ours != emb.encode(TEXTS, precision=precision, normalize_embeddings=True)).any()


@pytest.mark.parametrize(
    "kwargs", [{}, {"normalize_embeddings": False}, {"normalize_embeddings": True}], ids=["default", "false", "true"]
)
def test_truncate_dim_with_and_without_normalize_as_there(cos, tiny, kwargs):
    """sentence-transformers truncates, then normalizes only when normalize_embeddings=True, then quantizes:
    truncate_dim alone never re-normalizes, not even a model ending in Normalize (tiny)."""
    from sentence_transformers.quantization import quantize_embeddings as st_quantize

    for emb, st in (cos, tiny):
        for call in ("encode", "encode_query", "encode_document"):
            want = getattr(st, call)(TEXTS, truncate_dim=8, **kwargs)
            _close(getattr(emb, call)(TEXTS, truncate_dim=8, **kwargs), want)
        ours = emb.encode(TEXTS, truncate_dim=8, **kwargs)
        norms = np.linalg.norm(ours, axis=1)
        if kwargs.get("normalize_embeddings"):
            np.testing.assert_allclose(norms, 1, atol=1e-5)
        else:  # the first 8 of 32 components, never re-normalized (a Normalize model's are shorter than 1)
            _close(ours, emb.encode(TEXTS, **kwargs)[:, :8])
            if emb.stack.normalizes:
                assert norms.max() < 0.999
        with emb.truncate_embeddings(8), st.truncate_embeddings(8):  # the model-level value: the same
            _close(emb.encode(TEXTS, **kwargs), st.encode(TEXTS, **kwargs))
            _close(emb.encode_query(TEXTS, **kwargs), st.encode_query(TEXTS, **kwargs))
        q = emb.encode(TEXTS, truncate_dim=8, precision="int8", **kwargs)
        np.testing.assert_array_equal(q, st_quantize(ours, precision="int8"))
        ref = st.encode(TEXTS, truncate_dim=8, precision="int8", **kwargs)
        assert np.abs(q.astype(int) - ref.astype(int)).max() <= 1


# -- sentence-transformers' constructor options and model-level settings -----------------------------
def test_model_level_truncate_dim(raw_dir, compat_cache, raw):
    """SentenceTransformer(folder, truncate_dim=d), model.truncate_dim = d and truncate_embeddings(d): encode's
    default truncation, which a call's own truncate_dim overrides (even upwards); dim follows; so does the
    fingerprint, which comes back with the model's value."""
    plain, st_plain = raw
    emb, st = Embedder(str(raw_dir), cache_dir=compat_cache, truncate_dim=8), _st(raw_dir, truncate_dim=8)
    assert emb.truncate_dim == st.truncate_dim == 8
    assert emb.dim == emb.get_embedding_dimension() == st.get_embedding_dimension() == 8
    for kwargs in (
        {},
        {"normalize_embeddings": True},
        {"truncate_dim": 16},
        {"truncate_dim": 4},
        {"precision": "ubinary"},
        {"convert_to_tensor": True},
    ):
        ours, ref = emb.encode(TEXTS, **kwargs), st.encode(TEXTS, **kwargs)
        assert type(ours) is type(ref) and ours.shape == ref.shape and ours.dtype == ref.dtype
        _close(np.asarray(ours), np.asarray(ref))
    _close(emb.encode(TEXTS[2]), st.encode(TEXTS[2]))
    _close(emb.encode_query(TEXTS), st.encode_query(TEXTS))
    assert emb.fingerprint != plain.fingerprint
    emb.truncate_dim = st.truncate_dim = None
    assert emb.dim == st.get_embedding_dimension() == plain.dim and emb.fingerprint == plain.fingerprint
    _close(emb.encode(TEXTS), st.encode(TEXTS))
    with plain.truncate_embeddings(12), st_plain.truncate_embeddings(12):
        _close(plain.encode(TEXTS), st_plain.encode(TEXTS))
        assert plain.dim == 12 and plain.fingerprint != emb.fingerprint
    assert plain.truncate_dim is None and plain.fingerprint == emb.fingerprint
    for bad in (0, -1, 33, 2.0, True, "8"):  # 33: above the dimension (sentence-transformers keeps all 32)
        with pytest.raises(InputError, match=r"truncate_dim must be an integer in \[1, 32\] or None"):
            emb.truncate_dim = bad
        if bad is not True:
            with pytest.raises(InputError, match=r"truncate_dim must be an integer in \[1, 32\] or None"):
                emb.encode(TEXTS, truncate_dim=bad)
    assert emb.truncate_dim is None


def test_truncate_dim_in_the_models_config(tmp_path, compat_cache):
    """config_sentence_transformers.json's truncate_dim is the model-level default, as there."""
    import json

    folder = write_stack(
        build_transformer(tmp_path / "bert", "bert"), pooling="mean", normalize=False, similarity_fn_name="dot"
    )
    cfg = json.loads((folder / "config_sentence_transformers.json").read_text())
    (folder / "config_sentence_transformers.json").write_text(json.dumps({**cfg, "truncate_dim": 8}))
    emb, st = Embedder(str(folder), cache_dir=compat_cache), _st(folder)
    assert emb.truncate_dim == st.truncate_dim == 8 and emb.dim == st.get_embedding_dimension() == 8
    for kwargs in ({}, {"normalize_embeddings": True}, {"truncate_dim": 20}):
        _close(emb.encode(TEXTS, **kwargs), st.encode(TEXTS, **kwargs))


def test_embed_corpus_with_a_truncated_embedder(raw_dir, compat_cache, tmp_path):
    from engine.corpus import embed_corpus, load_embeddings

    emb = Embedder(str(raw_dir), cache_dir=compat_cache, truncate_dim=8)
    docs = [f"document {i} about " + "vectors " * (i % 5) for i in range(10)]
    src = tmp_path / "docs.txt"
    src.write_text("\n".join(docs) + "\n")
    assert embed_corpus(src, tmp_path / "out", emb, cache=False).docs == 10
    _, vecs = load_embeddings(tmp_path / "out")
    assert vecs.shape == (10, 8)
    _close(vecs, emb.encode_document(docs))


def test_constructor_prompts_and_default_prompt_name(raw_dir, compat_cache):
    """prompts= updates the model's own (the given ones win), default_prompt_name= picks one; both
    settable afterwards, and prompts is the live dict, as there."""
    kwargs = {"prompts": {"query": "Q: ", "doc": "D: ", "document": None}, "default_prompt_name": "doc"}
    emb, st = Embedder(str(raw_dir), cache_dir=compat_cache, **kwargs), _st(raw_dir, **kwargs)
    assert emb.prompts == st.prompts == {"query": "Q: ", "document": "passage: ", "doc": "D: "}
    assert emb.default_prompt_name == st.default_prompt_name == "doc"
    for call in ("encode", "encode_query", "encode_document"):
        _close(getattr(emb, call)(TEXTS), getattr(st, call)(TEXTS))
    _close(emb.encode(TEXTS, prompt_name="query"), st.encode(TEXTS, prompt_name="query"))
    emb.prompts["query"] = st.prompts["query"] = "edited: "  # in place
    _close(emb.encode_query(TEXTS), st.encode_query(TEXTS))
    emb.prompts = st.prompts = {"x": "X: "}  # replaced: no query prompt any more
    emb.default_prompt_name = st.default_prompt_name = None
    for call in ("encode", "encode_query", "encode_document"):
        _close(getattr(emb, call)(TEXTS), getattr(st, call)(TEXTS))
    emb.default_prompt_name = st.default_prompt_name = "x"
    _close(emb.encode(TEXTS), st.encode(TEXTS))
    with pytest.raises(InputError, match=r"default_prompt_name 'nope' is not one of the prompts \['x'\]"):
        emb.default_prompt_name = "nope"
    with pytest.raises(InputError, match="default_prompt_name 'nope' is not one of the prompts"):
        Embedder(str(raw_dir), cache_dir=compat_cache, default_prompt_name="nope")
    with pytest.raises(InputError, match="prompts must be a dict"):
        emb.prompts = ["query: "]
    with pytest.raises(InputError, match="prompts must map names"):
        Embedder(str(raw_dir), cache_dir=compat_cache, prompts={"query": 3})
    emb.prompts["y"] = "\ud800"
    with pytest.raises(InputError, match=r"prompts\['y'\] holds a lone surrogate"):
        emb.encode(TEXTS, prompt_name="y")


def test_constructor_similarity_fn_name(raw_dir, compat_cache):
    from sentence_transformers import SimilarityFunction

    emb, st = (
        Embedder(str(raw_dir), cache_dir=compat_cache, similarity_fn_name=SimilarityFunction.MANHATTAN),
        _st(raw_dir, similarity_fn_name="manhattan"),
    )
    assert emb.similarity_fn_name == st.similarity_fn_name == "manhattan"
    a = emb.encode(TEXTS[:5])
    np.testing.assert_allclose(emb.similarity(a, a), st.similarity(a, a).numpy(), rtol=1e-5, atol=1e-4)
    _close(emb.encode(TEXTS), st.encode(TEXTS))  # encode's vectors do not depend on it
    with pytest.raises(InputError, match="similarity_fn_name must be one of"):
        Embedder(str(raw_dir), cache_dir=compat_cache, similarity_fn_name="hamming")


# -- max_seq_length ----------------------------------------------------------------------------
def test_max_seq_length_is_settable_like_sentence_transformers(tiny_model_dir, tiny_cache):
    emb, st = Embedder(str(tiny_model_dir), cache_dir=tiny_cache), _st(tiny_model_dir)
    base_fp = emb.fingerprint
    assert emb._exported.meta["position_limit"] == 64  # max_position_embeddings of the tiny BERT
    for n in (5, 40, 64):
        emb.max_seq_length = st.max_seq_length = n
        assert emb.max_seq_length == n and max(len(x) for x in emb.tokenize(TEXTS)) == n
        _close(emb.encode(TEXTS), st.encode(TEXTS, normalize_embeddings=True))
        assert emb.fingerprint != base_fp and emb.fingerprint.rsplit("/", 1)[0] == base_fp.rsplit("/", 1)[0]
    fps = set()
    for n in (5, 40):
        emb.max_seq_length = n
        fps.add(emb.fingerprint)
    assert len(fps) == 2
    emb.max_seq_length = 16  # the model's own value: the model's own fingerprint
    assert emb.fingerprint == base_fp


@pytest.mark.parametrize("bad", [0, 2, 65, True, 8.0, "8", None])
def test_max_seq_length_refuses_values_out_of_range(tiny_model_dir, tiny_cache, bad):
    emb = Embedder(str(tiny_model_dir), cache_dir=tiny_cache)
    with pytest.raises(InputError, match=r"max_seq_length must be an integer in \[3, 64\]"):
        emb.max_seq_length = bad  # 2: [CLS] + [SEP] alone would truncate nothing
    assert emb.max_seq_length == 16


def test_max_seq_length_of_an_export_without_a_position_limit(tiny_model_dir, tiny_cache):
    """Exports written before position_limit was recorded may lower max_seq_length, not raise it."""
    emb = Embedder(str(tiny_model_dir), cache_dir=tiny_cache)
    del emb._exported.meta["position_limit"]  # this instance's copy of meta.json
    emb.max_seq_length = 8
    assert max(len(x) for x in emb.tokenize(TEXTS)) == 8
    with pytest.raises(InputError, match=r"\[3, 16\]; this export predates .* delete .* to export it again"):
        emb.max_seq_length = 17


def test_max_seq_length_limit_of_roberta_positions(tmp_path, compat_cache):
    """RoBERTa's positions start at padding_idx + 1: 66 position embeddings hold 64 tokens."""
    folder = write_stack(build_transformer(tmp_path / "roberta", "roberta"), pooling="mean")
    emb, st = Embedder(str(folder), cache_dir=compat_cache), _st(folder)
    emb.max_seq_length = st.max_seq_length = 64
    _close(emb.encode(TEXTS, normalize=False), st.encode(TEXTS))
    with pytest.raises(InputError, match=r"\[3, 64\]"):
        emb.max_seq_length = 65


# -- bad arguments: one test per kind ------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"foo": 1}, r"unexpected keyword argument\(s\) foo; encode takes: prompt_name, prompt, batch_size"),
        ({"pool": {}}, r"pool=\{\}: multi-process pools are not needed.*batch_workers.*pass pool=None"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer or None"),
        ({"processing_kwargs": {"text": {"max_length": 8}}}, "set Embedder.max_seq_length"),
        ({"output_value": "token_embeddings"}, "sentence embeddings only"),
        ({"output_value": None}, "sentence embeddings only"),
        ({"precision": "fp16"}, r"model precision.*model_precision='fp16'"),
        ({"precision": "int4"}, "the output quantization"),
        ({"device": "cuda"}, r"runs on 'cpu'.*Embedder\(model, device='cuda'\)"),
        ({"device": ["cpu", "cpu"]}, "several devices"),
        ({"normalize": True, "normalize_embeddings": False}, "disagree"),
        ({"show_progress": True, "show_progress_bar": False}, "disagree"),
        ({"normalize_embeddings": "yes"}, "normalize_embeddings must be True, False or None"),
        ({"convert_to_numpy": "yes"}, "convert_to_numpy must be True or False"),
        ({"truncate_dim": True}, "truncate_dim must be an integer"),
        ({"truncate_dim": 2.0}, "truncate_dim must be an integer"),
        ({"batch_size": True}, "batch_size must be a positive integer"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"max_tokens": -5}, "max_tokens must be a positive integer"),
        ({"max_tokens": True}, "max_tokens must be a positive integer"),
        ({"prompt_name": "nope"}, "not one of the model's prompts"),
        ({"prompt": "\ud800: "}, "prompt holds a lone surrogate"),
        ({"sentences": ["b"]}, "given twice"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 3 else None,
)
def test_bad_keyword_arguments(tiny_embedder, kwargs, match):
    with pytest.raises(InputError, match=match):
        tiny_embedder.encode(["a"], **kwargs)
    with pytest.raises(InputError, match=match):  # the same checks everywhere
        tiny_embedder.encode_query(["a"], **kwargs)


def _unordered_inputs():
    d = {"b": "bee", "a": "ay"}
    out = [
        pytest.param(set(d.values()), "set, whose order", id="set"),
        pytest.param(frozenset(d.values()), "frozenset, whose order", id="frozenset"),
        pytest.param(d, r"dict: iterating it gives its keys", id="dict"),
        pytest.param(d.keys(), "dict_keys, whose order", id="dict-keys"),
        pytest.param(d.values(), "dict_values, whose order", id="dict-values"),
        pytest.param(d.items(), "dict_items, whose order", id="dict-items"),
        pytest.param(np.array("a text"), r"0-d array.*texts\.item\(\)", id="0d-array"),
    ]
    try:
        import pandas as pd

        out.append(pytest.param(pd.DataFrame({"text": ["a", "b"]}), "DataFrame", id="dataframe"))
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("texts, match", _unordered_inputs())
def test_unordered_or_not_text_inputs_are_refused(tiny_embedder, texts, match):
    with pytest.raises(InputError, match=match):
        tiny_embedder.encode(texts)
    with pytest.raises(InputError, match=match):
        tiny_embedder.embed(texts)


def test_ordered_inputs_still_work(tiny_embedder):
    ref = tiny_embedder.encode(["a", "b c"])
    np.testing.assert_array_equal(tiny_embedder.encode(("a", "b c")), ref)
    np.testing.assert_array_equal(tiny_embedder.encode(np.array(["a", "b c"])), ref)
    np.testing.assert_array_equal(tiny_embedder.encode(t for t in ["a", "b c"]), ref)


@pytest.mark.parametrize(
    "texts, match",
    [
        (["fine", "a\ud800b"], r"texts\[1\] holds a lone surrogate \('\\ud800' at character 1\), not text; remove it"),
        ("lone \udc80", r"the text holds a lone surrogate \('\\udc80' at character 5\)"),
        (["\ud83d\ude00"], r"texts\[0\] holds a lone surrogate"),  # a surrogate pair as two code points
    ],
    ids=["list", "single", "pair"],
)
def test_lone_surrogates_are_input_errors(tiny_embedder, texts, match):
    with pytest.raises(InputError, match=match):
        tiny_embedder.encode(texts)
    assert tiny_embedder.encode(["héllo 🙂"]).shape == (1, tiny_embedder.dim)  # real non-ASCII is fine


# -- the constructor's model precision vs encode's output precision -----------------------------
def test_model_precision_and_its_former_name(tiny_model_dir, tiny_cache, tiny_embedder):
    assert tiny_embedder.model_precision == tiny_embedder.precision == "fp32"
    with pytest.warns(DeprecationWarning, match="model_precision"):
        old = Embedder(str(tiny_model_dir), precision="fp32", cache_dir=tiny_cache)
    assert old.model_precision == "fp32" and old.fingerprint == tiny_embedder.fingerprint
    assert "model_precision='fp32'" in repr(old)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"precision": "binary"}, r"now named model_precision=; 'binary' quantizes output vectors.*encode"),
        ({"model_precision": "int4"}, r"model_precision must be 'fp32', 'bf16' \(CPUs with bf16 units.*'int8'"),
        ({"model_precision": "float32"}, r"encode\(texts, precision='float32'\)"),
        ({"model_precision": "int8", "precision": "fp16"}, "disagree"),
    ],
    ids=["output-name", "unknown", "output-value", "both"],
)
def test_model_precision_errors(tiny_model_dir, tiny_cache, kwargs, match):
    with pytest.raises(InputError, match=match):
        Embedder(str(tiny_model_dir), cache_dir=tiny_cache, **kwargs)


# -- streaming ---------------------------------------------------------------------------------
def test_embed_streams_a_generator_lazily(tiny_embedder):
    n, consumed = 10_000, [0]

    def texts():
        for i in range(n):
            consumed[0] = i + 1
            yield f"text {i} " + "word " * (i % 13)

    stream = tiny_embedder.embed(texts(), batch_size=64)
    assert consumed[0] == 0  # nothing read before the first batch is asked for
    first = next(stream)
    assert consumed[0] <= CHUNK, "the first batch must come out after one chunk, not the whole input"
    batches = [first, *stream]
    assert consumed[0] == n
    assert all(b.dtype == np.float32 and 1 <= len(b) <= 64 for b in batches)
    ref = tiny_embedder.encode([f"text {i} " + "word " * (i % 13) for i in range(n)], batch_size=64)
    np.testing.assert_allclose(np.concatenate(batches), ref, atol=1e-6)


def test_embed_options_and_errors(tiny_embedder):
    texts = [f"line {i}" for i in range(10)]
    got = list(tiny_embedder.embed(iter(texts), batch_size=4, precision="ubinary", truncate_dim=16))
    assert [len(b) for b in got] == [4, 4, 2]
    ref = tiny_embedder.encode(texts, precision="ubinary", truncate_dim=16)
    np.testing.assert_array_equal(np.concatenate(got), ref)
    assert [b.shape for b in tiny_embedder.embed("one text")] == [(1, tiny_embedder.dim)]
    with pytest.raises(InputError, match="quantize_embeddings"):
        tiny_embedder.embed(texts, precision="int8")
    with pytest.raises(InputError, match="batch_size"):
        tiny_embedder.embed(texts, batch_size=0)
    bad = itertools.chain(texts, [None])
    with pytest.raises(InputError, match=r"texts\[10\] is NoneType"):
        list(tiny_embedder.embed(bad))


# -- export: one line, no noise ------------------------------------------------------------------
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_export_logs_two_lines_and_keeps_stderr_clean(runtime, tiny_model_dir, tmp_path, capfd, caplog, monkeypatch):
    """int8 on either runtime: onnxruntime's quantizer, or NNCF's (its progress bars must stay quiet)."""
    if runtime == "openvino":
        pytest.importorskip("openvino", reason="the openvino extra is not installed")
        pytest.importorskip("nncf", reason="nncf (the export extra) is not installed")
    folder = shutil.copytree(tiny_model_dir, tmp_path / "tiny-bert")
    # a CLI test's configure_logging may have left a handler on "engine" writing to a closed capture stream
    monkeypatch.setattr(logging.getLogger("engine"), "handlers", [])
    root_handlers = list(logging.getLogger().handlers)
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="engine.models.export"):
        Embedder(str(folder), model_precision="int8", cache_dir=tmp_path / "cache", runtime=runtime)
    out, err = capfd.readouterr()
    assert err.strip() == "", f"the export wrote to stderr:\n{err}"
    assert out.strip() == "", f"the export wrote to stdout:\n{out}"
    ours = [r for r in caplog.records if r.name == "engine.models.export"]
    info = [r.getMessage() for r in ours if r.levelno >= logging.INFO]
    assert len(info) == 2, info
    variant = "int8" if runtime == "onnxruntime" else "int8-openvino"
    assert info[0].startswith(f"exporting tiny-bert ({variant}) to ") and info[0].endswith(" ...")
    assert str(tmp_path / "cache") in info[0]
    assert info[1].startswith("done in ") and info[1].endswith(" s")
    assert any(r.levelno == logging.DEBUG for r in ours), "third-party warnings are kept at DEBUG"
    assert not [
        r
        for r in caplog.records
        if r.name.split(".")[0] in ("transformers", "optimum", "root") and r.levelno >= logging.WARNING
    ]
    assert list(logging.getLogger().handlers) == root_handlers  # no basicConfig, nothing left behind
