"""models/fetch.py: a name, folder or hub id resolved to verified local files, or an error that says why.

Weights are verified by sha256 and hashed at most once per load. Hub failures are huggingface_hub's
exceptions, monkeypatched: nothing here reaches the network.
"""

from __future__ import annotations

import json
import shutil

import pytest

from engine import Embedder, ModelNotFoundError, WeightsVerificationError
from engine.errors import UnsupportedModelError
from tests.conftest import minilm_folder
from tests.models.folders import TEXTS, edit_json, family_folder, onnx_folder, refused, rel_diff, st_model

# -- local folders ---------------------------------------------------------------------------------


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="holds no model weights"):
        Embedder(str(tmp_path), cache_dir=tmp_path / "cache")


def test_missing_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Embedder(str(tmp_path / "nope"))


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_truncation_without_sentence_bert_max_seq_length(transformers_dir, st_cache, tmp_path, family):
    """No max_seq_length: the tokenizer's model_max_length (512) capped by max_position_embeddings (64;
    GPT-2's config names it n_positions)."""
    folder = family_folder(transformers_dir, tmp_path, family, max_seq_length=None)
    emb = Embedder(str(folder), cache_dir=st_cache)
    st = st_model(folder)
    assert emb.max_seq_length == st.max_seq_length == 64
    long = ["the quick brown fox jumps over the lazy dog " * 30, "short"]
    assert next(len(x) for x in emb.tokenize(long)) == 64
    assert rel_diff(emb.encode(long, normalize=False), st.encode(long)) <= 1e-4


def test_remote_code_needs_opt_in(bert_folder, tmp_path):
    edit_json(bert_folder / "config.json", auto_map={"AutoModel": "modeling_custom.CustomModel"})
    with pytest.raises(UnsupportedModelError, match="trust_remote_code=True"):
        Embedder(str(bert_folder), cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("where", ["outside", "absolute", "missing"])
def test_onnx_external_data_outside_the_folder_is_refused_by_name(base_folder, tmp_path, where):
    folder = onnx_folder(base_folder, tmp_path, "weights.bin")
    data = folder / "weights.bin"
    if where != "missing":
        outside = tmp_path / "outside.bin"
        shutil.move(data, outside)
        import onnx

        m = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        loc = str(outside) if where == "absolute" else "../outside.bin"
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = loc
        onnx.save(m, str(folder / "model.onnx"))
    else:
        data.unlink()
        loc = "weights.bin"
    refused(
        folder,
        tmp_path / "cache",
        rf"model\.onnx: tensor .* keeps its data in '{loc}', which is not a file "
        r"inside the model folder",
    )


# -- weights: verified by sha256, hashed once ------------------------------------------------------


def test_corrupted_weights_fail_sha256(tiny_model_dir, tmp_path):
    import dataclasses

    from engine.models.export import load_or_export
    from engine.models.fetch import ResolvedModel, spec_from_folder

    spec = dataclasses.replace(spec_from_folder(tiny_model_dir), sha256=(("model.safetensors", "0" * 64),))
    resolved = ResolvedModel(spec, tiny_model_dir, "test", True)
    with pytest.raises(WeightsVerificationError, match="sha256"):
        load_or_export(resolved, cache_dir=tmp_path)
    assert not list((tmp_path / "onnx").glob("*/model.onnx")), "nothing may be exported from bad weights"


@pytest.fixture
def count_hashes(monkeypatch):
    """Counts sha256_file calls in engine.models.fetch (where resolve and verify_weights hash)."""
    from engine.models import fetch

    calls = []
    real = fetch.sha256_file
    monkeypatch.setattr(fetch, "sha256_file", lambda path, *a: calls.append(path.name) or real(path, *a))
    return calls


def test_a_model_folder_is_hashed_at_most_once(tiny_model_dir, tmp_path, count_hashes):
    import hashlib

    from engine.models.fetch import resolve, verify_weights

    want = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    # no catalogued model has this hidden size: resolving hashes nothing, verifying once
    tiny = resolve(tiny_model_dir)
    assert not tiny.catalogued and count_hashes == []
    assert verify_weights(tiny) == {"model.safetensors": want} and count_hashes == ["model.safetensors"]
    # MiniLM's hidden size, other weights: one hash while resolving, reused by verify_weights
    count_hashes.clear()
    fake = shutil.copytree(tiny_model_dir, tmp_path / "fake-384")
    config = json.loads((fake / "config.json").read_text())
    (fake / "config.json").write_text(json.dumps({**config, "hidden_size": 384}))
    resolved = resolve(fake)
    assert not resolved.catalogued and resolved.spec.dim == 384
    assert verify_weights(resolved) == {"model.safetensors": want} and count_hashes == ["model.safetensors"]


def test_a_folder_with_catalogued_weights_is_that_model_hashed_once(count_hashes):
    from engine.models.fetch import resolve, verify_weights

    resolved = resolve(minilm_folder())
    assert resolved.catalogued and resolved.spec.name == "all-MiniLM-L6-v2"
    assert verify_weights(resolved) == resolved.spec.weight_digests
    assert count_hashes == ["model.safetensors"]


# -- hub ids ---------------------------------------------------------------------------------------


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

    folder = family_folder(transformers_dir, tmp_path, "bert", pooling="cls")
    calls = []
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", lambda repo, **kw: calls.append((repo, kw)) or str(folder)
    )
    emb = Embedder("org/tiny-bert", cache_dir=st_cache)
    assert calls[0][0] == "org/tiny-bert" and calls[0][1]["allow_patterns"] == HUB_PATTERNS
    assert emb.name == "org/tiny-bert" and emb._exported.meta["source"] == "hub:org/tiny-bert"
    assert rel_diff(emb.encode(TEXTS, normalize=False), st_model(folder).encode(TEXTS)) <= 1e-4


def test_unknown_bare_name_still_lists_the_catalogue():
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'nope'.*all-MiniLM-L6-v2"):
        Embedder("nope")


def test_unknown_model_lists_known():
    with pytest.raises(ModelNotFoundError, match="all-MiniLM-L6-v2"):
        Embedder("no-such-model")
