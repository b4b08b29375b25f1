"""Any sentence-transformers model, checked against sentence-transformers itself (the oracle).

Tiny random-weight folders of every supported family (tests/st_tiny.py: BERT, RoBERTa,
XLM-RoBERTa, DistilBERT, MPNet; Qwen2, LLaMA, Mistral decoders) with module stacks covering every
pooling mode, Dense with and without Normalize, LayerNorm, prompts with and without
include_prompt, a decoder with an instruction prompt, left padding, truncation and empty strings;
more families (ELECTRA, ALBERT, DeBERTa-v2, CamemBERT, ModernBERT, T5, mT5, BART, mBART; Qwen3,
Gemma 1-3, Phi-3, GPT-2, GPT-Neo, GPT-NeoX, BLOOM) with mean pooling, or last-token for decoders.
For each: ``Embedder(folder).encode(texts)`` equals
``SentenceTransformer(folder).encode(texts)`` within 1e-4 relative, and so do encode_query /
encode_document. Unsupported modules and options are refused by name; fingerprints follow content;
hub failures say why (huggingface_hub's exceptions, monkeypatched: no network).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine import Embedder, InputError, ModelNotFoundError
from engine.errors import UnsupportedModelError
from tests.st_tiny import (
    DECODERS,
    ENCODERS,
    FAMILIES,
    MORE_DECODERS,
    MORE_ENCODERS,
    NO_SPECIAL_TOKENS,
    build_transformer,
    write_stack,
)

TEXTS = [
    "",
    "a",
    "Hello, world!",
    "héllo wörld café naïve 日本語 テキスト 🙂",
    "the quick brown fox jumps over the lazy dog " * 12,  # past max_seq_length (24)
    "query: what compiles python loops",
    "x" * 300,
    "https://example.com/a/b?c=d&e=f" * 8,
    "   ",
]
INSTRUCT = {"query": "Instruct: Given a web search query, retrieve relevant passages\nQuery: "}
GELU, TANH, IDENTITY = (
    "torch.nn.modules.activation.GELU",
    "torch.nn.modules.activation.Tanh",
    "torch.nn.modules.linear.Identity",
)

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
LEFT_PADDED = ("llama", "mistral")  # weightedmean is refused there (test_weightedmean_with_left_padding_is_refused)


def _for(family: str, kw: dict) -> dict:
    return {**kw, "pooling": "mean"} if family in LEFT_PADDED and kw.get("pooling") == "weightedmean" else kw


PARAMS = [pytest.param(fam, _for(fam, kw), id=f"{fam}-{cid}") for cid, fams, kw in CASES for fam in fams]


def _st(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def _rel(ours, ref) -> float:
    assert ours.shape == ref.shape
    assert np.isfinite(ref).all()
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


@pytest.fixture(scope="module")
def transformers_dir(tmp_path_factory):
    """One tiny Transformer per family, built once; each case copies it and writes its own stack."""
    root = tmp_path_factory.mktemp("st-families")
    built = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_transformer(root / family, family)
        return built[family]

    return get


@pytest.fixture(scope="module")
def st_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("st-cache")


def _model(transformers_dir, tmp_path, family, **stack) -> Path:
    folder = shutil.copytree(transformers_dir(family), tmp_path / family)
    return write_stack(folder, **stack)


@pytest.mark.parametrize("family,stack", PARAMS)
def test_matches_sentence_transformers(transformers_dir, st_cache, tmp_path, family, stack):
    folder = _model(transformers_dir, tmp_path, family, **stack)
    emb = Embedder(str(folder), cache_dir=st_cache)
    # onnxruntime's fusions run for the first encoder families (and are verified here), never for decoders
    assert bool(emb._exported.meta["export"]["fusions"]) == (family in ENCODERS)
    st = _st(folder)
    assert emb.dim == st.get_embedding_dimension()
    assert emb.max_seq_length == st.max_seq_length == 24
    assert emb.prompts == st.prompts and emb.default_prompt_name == st.default_prompt_name
    assert emb.similarity_fn_name == st.similarity_fn_name
    texts = [t for t in TEXTS if t] if family in NO_SPECIAL_TOKENS else TEXTS  # "": test_text_without_tokens
    for call in ("encode", "encode_query", "encode_document"):
        ref = getattr(st, call)(texts, batch_size=4)
        ours = getattr(emb, call)(texts, batch_size=3)  # the defaults are sentence-transformers'
        assert _rel(ours, ref) <= 1e-4, (call, _rel(ours, ref))
    raw = st.encode(texts)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert _rel(emb.encode(texts, normalize=False), raw) <= 1e-4
    np.testing.assert_allclose(emb.encode(texts, normalize=True), unit, atol=1e-5)
    np.testing.assert_allclose(
        emb.encode(texts, normalize_embeddings=True), st.encode(texts, normalize_embeddings=True), atol=1e-5
    )
    one = emb.encode(TEXTS[4], prompt="passage: ", normalize=False)
    np.testing.assert_allclose(one, st.encode(TEXTS[4], prompt="passage: "), atol=1e-4 * np.abs(one).max())


def test_left_padding_and_decoder_inputs(transformers_dir, st_cache, tmp_path):
    """LLaMA pads on the left and its graph takes position_ids; batches of mixed lengths match."""
    folder = _model(transformers_dir, tmp_path, "llama", pooling="lasttoken")
    emb = Embedder(str(folder), cache_dir=st_cache)
    assert emb._left_pad and "position_ids" in emb._session.input_names
    assert "token_type_ids" not in emb._session.input_names
    ref = _st(folder).encode(TEXTS, batch_size=len(TEXTS))
    for bs in (1, 2, len(TEXTS)):
        assert _rel(emb.encode(TEXTS, batch_size=bs, normalize=False), ref) <= 1e-4


def test_dense_without_activation_key_is_tanh(transformers_dir, st_cache, tmp_path):
    folder = _model(transformers_dir, tmp_path, "bert", dense=[(16, GELU, True)], normalize=False)
    cfg_path = folder / "2_Dense" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["activation_function"]  # sentence-transformers' default: Tanh
    cfg_path.write_text(json.dumps(cfg))
    emb = Embedder(str(folder), cache_dir=st_cache)
    assert emb.stack.head[0].activation == "tanh"
    assert _rel(emb.encode(TEXTS, normalize=False), _st(folder).encode(TEXTS)) <= 1e-4


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_truncation_without_sentence_bert_max_seq_length(transformers_dir, st_cache, tmp_path, family):
    """No max_seq_length: the tokenizer's model_max_length (512) capped by max_position_embeddings (64;
    GPT-2's config names it n_positions)."""
    folder = _model(transformers_dir, tmp_path, family, max_seq_length=None)
    emb = Embedder(str(folder), cache_dir=st_cache)
    st = _st(folder)
    assert emb.max_seq_length == st.max_seq_length == 64
    long = ["the quick brown fox jumps over the lazy dog " * 30, "short"]
    assert next(len(x) for x in emb.tokenize(long)) == 64
    assert _rel(emb.encode(long, normalize=False), st.encode(long)) <= 1e-4


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_do_lower_case(transformers_dir, st_cache, tmp_path, family):
    folder = _model(transformers_dir, tmp_path, family)
    _edit(folder / "sentence_bert_config.json", do_lower_case=True)
    emb = Embedder(str(folder), cache_dir=st_cache)
    texts = ["HELLO World Paris", "Hello World Paris", "İstanbul ÉCOLE"]
    ref = _st(folder).encode(texts)
    assert _rel(emb.encode(texts, normalize=False), ref) <= 1e-4
    np.testing.assert_allclose(ref[0], ref[1], atol=1e-6)  # lowercased: the same text


def test_unknown_prompt_name_and_bad_prompt(transformers_dir, st_cache, tmp_path):
    folder = _model(transformers_dir, tmp_path, "bert", prompts={"query": "q: "})
    emb = Embedder(str(folder), cache_dir=st_cache)
    with pytest.raises(InputError, match=r"prompt_name 'nope'.*document.*query"):
        emb.encode(["a"], prompt_name="nope")
    with pytest.raises(InputError, match="prompt must be a string"):
        emb.encode(["a"], prompt=3)


# -- refusals --------------------------------------------------------------------------------
def _edit(path: Path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def bert_folder(transformers_dir, tmp_path):
    return _model(transformers_dir, tmp_path, "bert", dense=[(16, GELU, True)])


@pytest.mark.parametrize(
    "edit,match",
    [
        (
            lambda f: _edit(f / "2_Dense" / "config.json", activation_function="torch.nn.modules.activation.Softsign"),
            r"Dense \(2_Dense/config.json\).*activation function 'torch.nn.modules.activation.Softsign'",
        ),
        (
            lambda f: _edit(f / "2_Dense" / "config.json", activation_function="my_pkg.Swish"),
            r"activation function 'my_pkg.Swish'",
        ),
        (
            lambda f: _edit(f / "2_Dense" / "config.json", module_input_name="token_embeddings"),
            r"Dense.*module_input_name='token_embeddings'",
        ),
        (lambda f: _edit(f / "1_Pooling" / "config.json", pooling_mode="median"), r"Pooling.*pooling mode 'median'"),
        (lambda f: _edit(f / "1_Pooling" / "config.json", frobnicate=True), r"Pooling.*frobnicate"),
        (lambda f: _edit(f / "sentence_bert_config.json", transformer_task="text-generation"), r"transformer_task"),
        (lambda f: _edit(f / "sentence_bert_config.json", model_args={"torch_dtype": "bfloat16"}), r"model_args"),
        (lambda f: _edit(f / "config_sentence_transformers.json", similarity_fn_name="jaccard"), r"similarity_fn_name"),
        (lambda f: _edit(f / "config_sentence_transformers.json", model_type="SparseEncoder"), r"SparseEncoder"),
    ],
    ids=[
        "activation",
        "custom-activation",
        "dense-on-tokens",
        "pooling-mode",
        "pooling-option",
        "task",
        "dtype",
        "similarity",
        "sparse",
    ],
)
def test_unsupported_options_are_refused_by_name(bert_folder, tmp_path, edit, match):
    edit(bert_folder)
    with pytest.raises(UnsupportedModelError, match=match) as e:
        Embedder(str(bert_folder), cache_dir=tmp_path / "cache")
    assert str(bert_folder) in str(e.value)
    assert not (tmp_path / "cache" / "onnx").exists() or not list((tmp_path / "cache" / "onnx").iterdir())


@pytest.mark.parametrize(
    "module_type,match",
    [
        ("sentence_transformers.models.WeightedLayerPooling", "module type WeightedLayerPooling"),
        ("sentence_transformers.models.CNN", "module type CNN"),
        ("my_package.modules.CustomPooling", "custom module class"),
    ],
)
def test_unsupported_modules_are_refused_by_name(bert_folder, tmp_path, module_type, match):
    modules = json.loads((bert_folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "x", "path": "x", "type": module_type})
    for i, m in enumerate(modules):
        m["idx"] = i
    (bert_folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsupportedModelError, match=match):
        Embedder(str(bert_folder), cache_dir=tmp_path / "cache")


def test_remote_code_needs_opt_in(bert_folder, tmp_path):
    _edit(bert_folder / "config.json", auto_map={"AutoModel": "modeling_custom.CustomModel"})
    with pytest.raises(UnsupportedModelError, match="trust_remote_code=True"):
        Embedder(str(bert_folder), cache_dir=tmp_path / "cache")


def test_model_type_optimum_cannot_export_is_refused(transformers_dir, tmp_path):
    """ERNIE: transformers has it, optimum has no ONNX export of it; refused by name before any export."""
    folder = _model(transformers_dir, tmp_path, "ernie")
    with pytest.raises(UnsupportedModelError, match=r"model_type 'ernie' is not supported: optimum-onnx .* no ONNX"):
        Embedder(str(folder), cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.onnx"))


def test_unverified_encoder_decoder_is_refused(transformers_dir, tmp_path):
    """An encoder-decoder type optimum exports but the engine has not verified (here the BART folder
    relabelled Pegasus, whose config reads the same keys): refused, never exported the wrong way."""
    folder = _model(transformers_dir, tmp_path, "bart")
    _edit(folder / "config.json", model_type="pegasus", architectures=["PegasusModel"])
    with pytest.raises(UnsupportedModelError, match="model_type 'pegasus' is not supported: it is an encoder-decoder"):
        Embedder(str(folder), cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.onnx"))


@pytest.mark.parametrize("family", NO_SPECIAL_TOKENS)
def test_text_without_tokens_is_refused(transformers_dir, st_cache, tmp_path, family):
    """A tokenizer that adds no special tokens gives "" no tokens: sentence-transformers fails on it,
    the engine refuses it by its index; with a prompt it has tokens and matches."""
    folder = _model(transformers_dir, tmp_path, family, prompts={"query": "query: "})
    emb = Embedder(str(folder), cache_dir=st_cache)
    st = _st(folder)
    with pytest.raises(Exception):  # noqa: B017  (torch's reshape error: no vector to compare with)
        st.encode([""])
    with pytest.raises(InputError, match=r"text 1 \(''\) has no tokens.*no special tokens"):
        emb.encode(["a", "", "b"])
    assert _rel(emb.encode_query(["", "a"], normalize=False), st.encode_query(["", "a"])) <= 1e-4


def test_weightedmean_with_left_padding_is_refused(transformers_dir, st_cache, tmp_path):
    folder = _model(transformers_dir, tmp_path, "llama", pooling="weightedmean")
    with pytest.raises(UnsupportedModelError, match=r"weightedmean.*left"):
        Embedder(str(folder), cache_dir=st_cache)


# -- fingerprints ----------------------------------------------------------------------------
def test_fingerprint_follows_content_not_path(transformers_dir, tmp_path):
    base = _model(transformers_dir, tmp_path, "bert", dense=[(16, GELU, True)], prompts={"query": "q: "})
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
        "tokenizer-lowercase": lambda f: _edit(
            f / "tokenizer.json",
            normalizer={**json.loads((f / "tokenizer.json").read_text())["normalizer"], "lowercase": False},
        ),
        "prompt": lambda f: _edit(f / "config_sentence_transformers.json", prompts={"query": "query: "}),
        "max-seq-length": lambda f: _edit(f / "sentence_bert_config.json", max_seq_length=20),
        "pooling": lambda f: _edit(f / "1_Pooling" / "config.json", pooling_mode="cls"),
        "similarity": lambda f: _edit(f / "config_sentence_transformers.json", similarity_fn_name="dot"),
        "config": lambda f: _edit(f / "config.json", layer_norm_eps=1e-6),
    }
    fps = {name: variant(name, change) for name, change in changed.items()}
    assert ref not in fps.values(), fps
    assert len(set(fps.values())) == len(fps), fps


def test_dense_weights_are_in_the_fingerprint(transformers_dir, tmp_path):
    a = _model(transformers_dir, tmp_path / "a", "bert", dense=[(16, GELU, True)], seed=0)
    b = _model(transformers_dir, tmp_path / "b", "bert", dense=[(16, GELU, True)], seed=1)
    fa, fb = (Embedder(str(f), cache_dir=tmp_path / "c").fingerprint for f in (a, b))
    assert fa != fb


def test_edited_folder_is_exported_again(transformers_dir, tmp_path):
    """The cache key of a local folder covers its configs and tokenizer: an edit is never served stale."""
    folder = _model(transformers_dir, tmp_path, "bert", prompts={"query": "q: "})
    before = Embedder(str(folder), cache_dir=tmp_path / "c")
    _edit(folder / "config_sentence_transformers.json", prompts={"query": "query: "})
    after = Embedder(str(folder), cache_dir=tmp_path / "c")
    assert after.prompts["query"] == "query: " and after.fingerprint != before.fingerprint


# -- hub ids ---------------------------------------------------------------------------------
def _raise(exc):
    def fake(*args, **kwargs):
        raise exc

    return fake


def _hub_errors():
    from huggingface_hub import errors

    return [
        (errors.LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder"), "offline"),
        (errors.OfflineModeIsEnabled("offline mode is enabled"), "offline"),
        (ConnectionError("Max retries exceeded"), "offline"),
        (errors.RepositoryNotFoundError("404 Client Error. Repository Not Found"), "not found"),
        (errors.RevisionNotFoundError("404 Client Error. Revision Not Found"), "not found"),
        (errors.GatedRepoError("403 Client Error. Cannot access gated repo"), "gated"),
    ]


@pytest.mark.parametrize(
    "case", range(6), ids=["local-entry", "offline-mode", "connection", "repo", "revision", "gated"]
)
def test_hub_failures_say_why(monkeypatch, tmp_path, case):
    import huggingface_hub

    exc, reason = _hub_errors()[case]
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _raise(exc))
    with pytest.raises(ModelNotFoundError, match=f"BAAI/bge-small-en-v1.5: {reason}"):
        Embedder("BAAI/bge-small-en-v1.5", cache_dir=tmp_path)


def test_hub_repo_without_sentence_transformers_config(monkeypatch, transformers_dir, tmp_path):
    import huggingface_hub

    bare = shutil.copytree(transformers_dir("bert"), tmp_path / "snapshot")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(bare))
    with pytest.raises(ModelNotFoundError, match="no sentence-transformers config"):
        Embedder("org/plain-bert", cache_dir=tmp_path / "cache")


def test_hub_id_downloads_only_what_it_needs(monkeypatch, transformers_dir, st_cache, tmp_path):
    import huggingface_hub

    from engine.models.fetch import HUB_PATTERNS

    folder = _model(transformers_dir, tmp_path, "bert", pooling="cls")
    calls = []
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", lambda repo, **kw: calls.append((repo, kw)) or str(folder)
    )
    emb = Embedder("org/tiny-bert", cache_dir=st_cache)
    assert calls[0][0] == "org/tiny-bert" and calls[0][1]["allow_patterns"] == HUB_PATTERNS
    assert emb.name == "org/tiny-bert" and emb._exported.meta["source"] == "hub:org/tiny-bert"
    assert _rel(emb.encode(TEXTS, normalize=False), _st(folder).encode(TEXTS)) <= 1e-4


def test_unknown_bare_name_still_lists_the_catalogue():
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'nope'.*all-MiniLM-L6-v2"):
        Embedder("nope")


# -- the character cut before tokenizing -----------------------------------------------------
LONG_TEXTS = {
    "cjk": "日本語のテキスト中文文本한국어" * 20_000,  # no whitespace at all
    "url": "https://example.com/" + "a1b2c3/" * 40_000 + "?q=x",
    "words": "the quick brown fox jumps over the lazy dog " * 5_000,
    "mixed": ("naïve café, 日本語! emoji 🙂🙂 " + "x" * 50 + " ") * 3_000,
    "one-word": "a" * 300_000,
}


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "qwen2"])
@pytest.mark.parametrize("kind", list(LONG_TEXTS))
def test_cut_before_tokenizing_keeps_the_first_tokens(transformers_dir, family, kind):
    from engine.tokenize import Tokenizer

    tok = Tokenizer(transformers_dir(family) / "tokenizer.json", 24)
    text = LONG_TEXTS[kind]
    oracle = tok._tok.encode(text).ids  # the whole text, truncated by the tokenizer itself
    assert tok.encode([text])[0].tolist() == oracle
    head = tok._prefix(text)
    assert text.startswith(head)
    # a text the pre-tokenizer splits is cut; one single pre-token is tokenized whole (CJK runs are one
    # "word" for byte-level BPE and Metaspace, a URL too for Metaspace; one 300k-letter word for all)
    splits = {"words": True, "mixed": True, "url": family != "xlm-roberta", "cjk": family == "bert", "one-word": False}
    if splits[kind]:
        assert len(head) < 24 * Tokenizer.CHARS_PER_TOKEN_BOUND * 4, (family, kind, len(head))


def test_onnx_only_folder_keeps_its_tokenizer(transformers_dir, tmp_path):
    """The catalogue's ONNX-only path (a bare graph + a donor tokenizer.json, no configs): mean pooling
    as sentence-transformers computes it for the folder the graph came from; no paths in the fingerprint."""
    from engine.models.catalog import ModelSpec
    from engine.models.export import load_or_export
    from engine.models.fetch import ResolvedModel

    src = _model(transformers_dir, tmp_path, "bert", normalize=False, max_seq_length=16)
    ref = _st(src).encode(TEXTS)
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
    assert _rel(emb.encode(TEXTS, normalize=False), ref) <= 1e-4
    assert fps[0] == fps[1]
