"""The corpus settings (engine.corpus.options.CorpusOptions): checked once, the same InputError messages
as the entry points gave before there was an options object, and one set of settings for every entry point."""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys

import numpy as np
import pytest

from engine.corpus import CorpusOptions, embed_corpus, load_embeddings
from engine.corpus.options import DEFAULT_SHARD_SIZE
from engine.errors import InputError
from tests.corpus.test_driver import synth, write_jsonl


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


BAD = [
    ({"shard_size": 0}, exactly("shard_size must be a positive integer, got 0")),
    ({"shard_size": -3}, exactly("shard_size must be a positive integer, got -3")),
    ({"shard_size": True}, exactly("shard_size must be a positive integer, got True")),
    ({"shard_size": 2.0}, exactly("shard_size must be a positive integer, got 2.0")),
    ({"shard_size": None}, exactly("shard_size must be a positive integer, got None")),
    ({"batch_size": 0}, exactly("batch_size must be a positive integer, got 0")),
    ({"batch_size": False}, exactly("batch_size must be a positive integer, got False")),
    ({"batch_size": "8"}, exactly("batch_size must be a positive integer, got '8'")),
    ({"id_field": 3}, exactly("id_field must be a non-empty string, got 3")),
    ({"text_field": ""}, exactly("text_field must be a non-empty string, got ''")),
    ({"text_field": None}, exactly("text_field must be a non-empty string, got None")),
    ({"output_format": "csv"}, exactly("output_format must be one of 'npy', 'parquet', got 'csv'")),
    ({"model_precision": "float32"}, "model_precision must be .*, got 'float32'; 'float32' quantizes output vectors"),
    ({"model_precision": "fp64"}, "model_precision must be .*, got 'fp64'$"),
]
IDS = [f"{next(iter(kw))}={next(iter(kw.values()))!r}" for kw, _ in BAD]


@pytest.mark.parametrize("kw, message", BAD, ids=IDS)
def test_each_bad_setting_is_the_same_input_error(kw, message):
    with pytest.raises(InputError, match=message):
        CorpusOptions(**kw)


@pytest.mark.parametrize("kw, message", BAD, ids=IDS)
def test_embed_corpus_refuses_them_before_reading_or_loading_anything(tmp_path, kw, message):
    """model=None would load the default model: the settings are checked before that, and before the
    inputs are looked at (the input does not exist) or the output folder is made."""
    with pytest.raises(InputError, match=message):
        embed_corpus(tmp_path / "missing.jsonl", tmp_path / "out", None, **kw)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("id_field", [None, "", "doc"])
def test_an_id_field_of_none_or_empty_numbers_the_records(id_field):
    options = CorpusOptions(id_field=id_field, title_field="")
    assert options.record_fields.id == (None if id_field in (None, "") else "doc")
    assert options.record_fields.title is None  # "" is no title, as None


def test_the_options_are_frozen_and_replace_checks_again():
    options = CorpusOptions(shard_size=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.shard_size = 6
    assert dataclasses.replace(options, batch_size=8).shard_size == 5
    with pytest.raises(InputError, match="batch_size must be a positive integer, got 0"):
        dataclasses.replace(options, batch_size=0)


def test_parquet_without_pyarrow_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")] + ["pyarrow"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(InputError, match=r"pip install 'embed-engine\[corpus\]'"):
        CorpusOptions(output_format="parquet")
    assert CorpusOptions().output_format == "npy"


def test_options_give_the_output_the_keywords_give(tmp_path, tiny_embedder):
    src = write_jsonl(tmp_path / "c.jsonl", synth(11))
    by_keywords = embed_corpus(src, tmp_path / "kw", tiny_embedder, shard_size=4, cache=False, title_field=None)
    options = CorpusOptions(shard_size=4, cache=False, title_field=None)
    by_options = embed_corpus(src, tmp_path / "opt", tiny_embedder, options=options)
    assert (by_options.docs, by_options.shards) == (by_keywords.docs, by_keywords.shards) == (11, 3)
    for name in ("manifest.json", "shard-00000.npy", "shard-00002.jsonl", "shard-00001.done.json"):
        assert (tmp_path / "kw" / name).read_bytes() == (tmp_path / "opt" / name).read_bytes(), name
    np.testing.assert_array_equal(load_embeddings(tmp_path / "kw")[1], load_embeddings(tmp_path / "opt")[1])


def test_options_and_a_setting_keyword_together_are_refused(tmp_path, tiny_embedder):
    src = write_jsonl(tmp_path / "c.jsonl", synth(3))
    options = CorpusOptions(cache=False)
    with pytest.raises(InputError, match=r"shard_size, skip_bad given both as keywords and in options="):
        embed_corpus(src, tmp_path / "out", tiny_embedder, shard_size=2, skip_bad=True, options=options)
    with pytest.warns(DeprecationWarning), pytest.raises(InputError, match="model_precision given both"):
        embed_corpus(src, tmp_path / "out", tiny_embedder, precision="int8", options=options)
    with pytest.raises(InputError, match="options must be a CorpusOptions, got dict"):
        embed_corpus(src, tmp_path / "out", tiny_embedder, options={"cache": False})
    # a keyword at its default is no conflict
    assert embed_corpus(src, tmp_path / "out", tiny_embedder, batch_size=32, options=options).docs == 3


def _entry_points():
    from engine.corpus.distributed import embed_corpus_distributed
    from engine.corpus.ray import embed_corpus_ray, embed_dataset

    return [embed_corpus, embed_corpus_ray, embed_corpus_distributed, embed_dataset]


@pytest.mark.parametrize("fn", _entry_points(), ids=lambda fn: fn.__name__)
def test_every_entry_point_takes_the_settings_with_their_defaults(fn):
    """The keywords named like a CorpusOptions field are those settings, with the same defaults (the Ray
    paths' shard_size=None is the default shard size); each entry point also takes options=."""
    params = inspect.signature(fn).parameters
    assert params["options"].default is None and params["precision"].default is None
    defaults = {f.name: f.default for f in dataclasses.fields(CorpusOptions)}
    shared = {name: p.default for name, p in params.items() if name in defaults}
    ray = fn.__name__ in ("embed_corpus_ray", "embed_corpus_distributed")
    if ray:
        assert shared.pop("shard_size") is None
    want = {name: defaults[name] for name in shared}
    assert shared == want
    if fn.__name__ != "embed_dataset":  # the file entry points take every setting
        assert set(shared) | ({"shard_size"} if ray else set()) == set(defaults)
    assert defaults["shard_size"] == DEFAULT_SHARD_SIZE == 10_000


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"shard_size": 0}, exactly("shard_size must be a positive integer, got 0")),
        ({"ray_batch_size": 0}, exactly("ray_batch_size must be a positive integer, got 0")),
        ({"actors": True}, exactly("actors must be a positive integer, got True")),
        ({"text_field": ""}, exactly("text_field must be a non-empty string, got ''")),
    ],
    ids=["shard_size", "ray_batch_size", "actors", "text_field"],
)
def test_the_ray_entry_points_refuse_them_before_a_cluster_starts(tmp_path, kw, message):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'embed-engine[ray]')")
    from engine.corpus.distributed import embed_corpus_distributed
    from engine.corpus.ray import embed_corpus_ray

    calls = [embed_corpus_ray] + ([] if "ray_batch_size" in kw else [embed_corpus_distributed])
    for fn in calls:
        with pytest.raises(InputError, match=message):
            fn(tmp_path / "missing.jsonl", tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


def test_numpy_integers_are_counts_and_stored_as_int():
    """As everywhere in the engine (engine.arguments.positive_int): a numpy integer is a count, kept as an int
    so it serializes into the manifest."""
    options = CorpusOptions(shard_size=np.int64(5), batch_size=np.int32(4))
    assert (options.shard_size, options.batch_size) == (5, 4)
    assert type(options.shard_size) is int and type(options.batch_size) is int
