"""Ray: the same shards and vectors as the local path, on a local Ray cluster started in the test.

The corpus is a synthetic file (repeated texts, empty titles) followed by SciFact when the shared
data is present. Both paths embed it with the tiny model; the Ray output must hold the same ids in
the same shards and order, vectors within 1e-6, and load into ``embed search`` unchanged. A
killed actor must not change the output; rerun keeps finished shards; the driver's cache spares
Ray all work on a second run. Without Ray the flag is an error with the install command.
"""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.corpus import embed_corpus
from engine.corpus.shards import read_manifest
from tests.conftest import SHARED, local_ray
from tests.corpus.conftest import PROMPTS, TEXTS, output_vectors, write_texts

SCIFACT = SHARED / "scifact" / "corpus.jsonl"
SHARD = 400 if SCIFACT.exists() else 60  # several shards either way


def synth(n: int) -> list[dict]:
    words = ["alpha", "beta", "gamma", "delta", "vector", "fox", "numba", "onnx", "cosine", "stitch", "time", "nine"]
    return [
        {
            "_id": f"syn-{i:04d}",
            "title": f"doc {i}" if i % 4 else "",
            "text": " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(1 + i % 11)),
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def ray_cluster():
    with local_ray() as ray:
        yield ray


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    p = tmp_path_factory.mktemp("ray-corpus") / "synthetic.jsonl"
    p.write_text("".join(json.dumps(d) + "\n" for d in synth(300)), encoding="utf-8")
    return [p, SCIFACT] if SCIFACT.exists() else [p]


@pytest.fixture(scope="module")
def local_out(inputs, tiny_embedder, tmp_path_factory) -> Path:
    from engine.corpus import embed_corpus

    out = tmp_path_factory.mktemp("ray-local") / "out"
    embed_corpus(inputs, out, tiny_embedder, shard_size=SHARD, cache=False)
    return out


@pytest.fixture(scope="module")
def ray_out(ray_cluster, inputs, tiny_model_dir, tiny_cache, tmp_path_factory) -> Path:
    from engine.corpus.ray import embed_corpus_ray

    out = tmp_path_factory.mktemp("ray-ray") / "out"
    s = embed_corpus_ray(
        inputs,
        out,
        str(tiny_model_dir),
        cache_dir=tiny_cache,
        actors=2,
        shard_size=SHARD,
        cache=False,
        ray_batch_size=64,
    )
    assert (s.embedded, s.cache_hits, s.resumed, s.shards_written) == (s.docs, 0, 0, s.shards)
    return out


def read(out: Path):
    from engine.corpus.shards import iter_shards

    return [(ids, titles, vectors) for ids, titles, vectors in iter_shards(out)]


def assert_same(a: Path, b: Path) -> None:
    """Same manifest settings, same ids and titles shard by shard, vectors within 1e-6."""
    from engine.corpus.shards import read_manifest

    ma, mb = read_manifest(a), read_manifest(b)
    assert ma["settings"] == mb["settings"] and ma["model"] == mb["model"] and ma["count"] == mb["count"]
    sa, sb = read(a), read(b)
    assert [len(ids) for ids, _, _ in sa] == [len(ids) for ids, _, _ in sb]
    for (ia, ta, va), (ib, tb, vb) in zip(sa, sb):
        assert ia == ib and ta == tb
        assert np.abs(va - vb).max() <= 1e-6


def test_ray_matches_local_id_by_id(local_out, ray_out, inputs):
    from engine.corpus.readers import Fields, iter_documents

    assert_same(local_out, ray_out)
    ids = [i for shard_ids, _, _ in read(ray_out) for i in shard_ids]
    want = [d.id for d in iter_documents(inputs, Fields())]
    assert len(ids) == len(set(ids)) == len(want) >= 300  # no duplicates, none missing
    assert ids == want  # in input order: shard i = docs [i*S, (i+1)*S)
    if SCIFACT.exists():
        assert len(ids) == 300 + 5183


def test_search_loads_ray_output(local_out, ray_out, tiny_embedder):
    from engine.corpus.shards import CorpusSearcher, load_index

    index, titles, manifest = load_index(ray_out)
    assert len(index) == manifest["count"] and titles["syn-0001"] == "doc 1"
    queries = ["cosine vector fox", "numba onnx time"]
    got = CorpusSearcher(ray_out, model=tiny_embedder).search(queries, k=5)
    want = CorpusSearcher(local_out, model=tiny_embedder).search(queries, k=5)
    for g, w in zip(got, want):
        assert [h[0] for h in g] == [h[0] for h in w]
        assert np.allclose([h[1] for h in g], [h[1] for h in w], atol=1e-6)


def test_resume_keeps_finished_shards(ray_cluster, ray_out, local_out, inputs, tiny_model_dir, tiny_cache):
    from engine.corpus.ray import embed_corpus_ray

    n_shards = len(read(ray_out))
    (ray_out / "shard-00001.done.json").unlink()  # as if killed while writing shard 1
    (ray_out / "shard-00002.npy").write_bytes(b"torn")  # and shard 2 damaged
    s = embed_corpus_ray(
        inputs,
        ray_out,
        str(tiny_model_dir),
        cache_dir=tiny_cache,
        actors=2,
        shard_size=SHARD,
        cache=False,
        ray_batch_size=64,
    )
    assert (s.shards, s.shards_written, s.embedded) == (n_shards, 2, 2 * SHARD)
    assert s.resumed == s.docs - 2 * SHARD
    assert_same(local_out, ray_out)


def test_local_run_resumes_ray_output(ray_out, local_out, inputs, tiny_embedder):
    """The settings are the local path's: a local rerun keeps every shard Ray wrote."""
    from engine.corpus import embed_corpus

    s = embed_corpus(inputs, ray_out, tiny_embedder, shard_size=SHARD, cache=False)
    assert (s.shards_written, s.resumed) == (0, s.docs)


def test_driver_cache_spares_ray(ray_cluster, local_out, inputs, tiny_model_dir, tiny_cache, tmp_path):
    from engine.corpus.ray import embed_corpus_ray

    kw = {
        "cache_dir": tiny_cache,
        "actors": 1,
        "shard_size": SHARD,
        "cache": tmp_path / "emb.sqlite",
        "ray_batch_size": 64,
    }
    first = embed_corpus_ray(inputs, tmp_path / "a", str(tiny_model_dir), **kw)
    assert first.embedded + first.cache_hits == first.docs and first.embedded > 0
    second = embed_corpus_ray(inputs, tmp_path / "b", str(tiny_model_dir), **kw)
    assert (second.embedded, second.cache_hits) == (0, second.docs)
    assert_same(local_out, tmp_path / "a")
    assert_same(local_out, tmp_path / "b")


def test_killed_actor_is_restarted(ray_cluster, local_out, inputs, tiny_model_dir, tiny_cache, tmp_path, monkeypatch):
    """An actor killed mid-run (as a crashed worker) restarts; its batches rerun; output unchanged."""
    from engine.corpus import ray as ray_embed

    killed = []
    original = ray_embed._ActorPool.next

    def next_then_kill(self):
        result = original(self)
        if not killed and self.inflight:
            i, _ = next(iter(self.inflight.values()))
            ray_cluster.kill(self.actors[i], no_restart=False)
            killed.append(i)
        return result

    monkeypatch.setattr(ray_embed._ActorPool, "next", next_then_kill)
    s = ray_embed.embed_corpus_ray(
        inputs,
        tmp_path / "out",
        str(tiny_model_dir),
        cache_dir=tiny_cache,
        actors=2,
        shard_size=SHARD,
        cache=False,
        ray_batch_size=64,
    )
    assert killed and s.docs == s.embedded
    assert_same(local_out, tmp_path / "out")


def test_embed_dataset_map_batches(ray_cluster, local_out, inputs, tiny_model_dir, tiny_cache):
    from engine.corpus.ray import embed_dataset
    from engine.corpus.readers import Fields, iter_documents

    rows = [
        {"id": d.id, "title": d.title, "body": d.text[len(d.title) + 1 :] if d.title else d.text}
        for d in iter_documents(inputs[:1], Fields())
    ]
    ds = ray_cluster.data.from_items(rows)
    out = embed_dataset(
        ds,
        str(tiny_model_dir),
        text_column="body",
        title_column="title",
        cache_dir=tiny_cache,
        actors=2,
        ray_batch_size=64,
    ).take_all()
    got = {r["id"]: np.asarray(r["embedding"]) for r in out}
    assert len(got) == len(rows) == 300
    want = {i: v for ids, _, vs in read(local_out) for i, v in zip(ids, vs)}
    assert max(np.abs(got[i] - want[i]).max() for i in got) <= 1e-6


def test_embed_dataset_prompts(ray_cluster, tiny_model_dir, tiny_cache, tiny_embedder):
    """prompt= reaches the workers (vectors equal Embedder.encode(texts, prompt=...)); an unknown prompt_name
    is refused on the driver before any actor starts."""
    from engine.corpus.ray import embed_dataset
    from engine.errors import InputError

    texts = [f"text number {i} about vectors" for i in range(40)]
    ds = ray_cluster.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)])
    out = embed_dataset(ds, str(tiny_model_dir), cache_dir=tiny_cache, actors=1, prompt="find: ").take_all()
    got = np.stack([np.asarray(r["embedding"]) for r in sorted(out, key=lambda r: r["i"])])
    want = tiny_embedder.encode(texts, prompt="find: ")
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.abs(got - tiny_embedder.encode(texts)).max() > 1e-3  # the prompt changed the vectors
    with pytest.raises(InputError, match="prompt_name 'nope'"):
        embed_dataset(ds, str(tiny_model_dir), cache_dir=tiny_cache, prompt_name="nope")


def test_ray_path_uses_the_same_prompt(ray_cluster, tmp_path, cosine_model, st_cache):
    from engine.corpus.ray import embed_corpus_ray

    folder, emb = cosine_model
    src = write_texts(tmp_path / "c.jsonl", TEXTS)
    for kw in ({}, {"prompt_name": "other"}):
        local, remote = tmp_path / f"local{len(kw)}", tmp_path / f"ray{len(kw)}"
        embed_corpus(src, local, emb, cache=False, shard_size=4, **kw)
        embed_corpus_ray(src, remote, str(folder), cache_dir=st_cache, actors=1, cache=False, shard_size=4, **kw)
        np.testing.assert_allclose(output_vectors(remote), output_vectors(local), atol=1e-6)
        assert read_manifest(remote)["settings"] == read_manifest(local)["settings"]
        assert read_manifest(remote)["prompts"] == read_manifest(local)["prompts"]
    assert read_manifest(tmp_path / "ray1")["settings"]["prompt"] == PROMPTS["other"]


def test_cli_encode_ray(ray_cluster, local_out, inputs, tiny_model_dir, tiny_cache, tmp_path, monkeypatch, capsys):
    from engine.cli import main

    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    out = tmp_path / "out"
    rc = main(
        [
            "encode",
            *map(str, inputs),
            "-o",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--shard-size",
            str(SHARD),
            "--no-cache",
            "-q",
            "--json",
            "--ray",
            "--actors",
            "2",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["shards_written"] == len(read(local_out))
    assert_same(local_out, out)
    rc = main(["encode", str(inputs[0]), "-o", str(tmp_path / "x"), "--ray", str(inputs[0])])
    assert rc == 1 and "not one" in capsys.readouterr().err


def _no_ray(monkeypatch):
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    for mod in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, mod)


def test_missing_ray_is_a_clear_error(monkeypatch, tmp_path, capsys):
    from engine.cli import main
    from engine.corpus.ray import embed_corpus_ray, embed_dataset

    src = tmp_path / "c.jsonl"
    src.write_text('{"_id": "1", "text": "a"}\n')
    _no_ray(monkeypatch)
    for call in (lambda: embed_corpus_ray(src, tmp_path / "o"), lambda: embed_dataset(None)):
        with pytest.raises(ImportError, match=r"pip install 'embed-engine\[ray\]'"):
            call()
    assert main(["encode", str(src), "-o", str(tmp_path / "o"), "--ray"]) == 1
    assert "pip install 'embed-engine[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_import_engine_does_not_import_ray():
    code = "import sys, engine, engine.corpus.ray, engine.cli.encode; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_worker_with_another_model_is_refused(ray_cluster, tiny_model_dir, tiny_cache):
    from engine.corpus.ray import _ActorPool
    from engine.errors import ModelMismatchError

    kwargs = {
        "model": str(tiny_model_dir),
        "cache_dir": str(tiny_cache),
        "threads": 1,
        "fingerprint": "other/fp32/32/0",
    }
    with pytest.raises(ModelMismatchError, match="install the same weights"):
        _ActorPool(ray_cluster, 1, 1, 0, kwargs)


@pytest.mark.parametrize("precision, runtime", [("fp32", "onnxruntime"), ("int8", "openvino")])
def test_actors_run_the_drivers_runtime(precision, runtime, tiny_model_dir, tiny_cache):
    """The driver's runtime travels to every actor (an actor choosing by its own CPU class could load
    another export: int8 on OpenVINO is a static IR, onnxruntime's a dynamic graph)."""
    if runtime == "openvino":
        pytest.importorskip("openvino", reason="the openvino extra is not installed")
        pytest.importorskip("nncf", reason="nncf (the export extra) builds the int8 IR")
    from engine import Embedder
    from engine.corpus.options import CorpusOptions
    from engine.corpus.ray import EmbedBatch, _actor_kwargs, _driver_model
    from engine.runtime import choose_runtime

    emb = Embedder(str(tiny_model_dir), cache_dir=tiny_cache, model_precision=precision, runtime=runtime)
    options = CorpusOptions(model_precision=precision, cache_dir=tiny_cache)
    for model in (emb, str(tiny_model_dir)):
        exported, ref, cache, got = _driver_model(model, options)
        assert got == (runtime if model is emb else choose_runtime(precision))
        kwargs = _actor_kwargs(ref, cache, exported, options, 1.0, None, runtime=got)
        actor = EmbedBatch(**kwargs)  # refuses a model other than the driver's
        assert actor.embedder.runtime == got
        np.testing.assert_allclose(
            actor.encode(TEXTS[:3])[0],
            Embedder(str(tiny_model_dir), cache_dir=tiny_cache, model_precision=precision, runtime=got).encode(
                TEXTS[:3]
            ),
            atol=1e-6,
        )
