"""``embed_corpus``: stream a corpus from files into resumable shards, embedding only what is new.

    files -> readers (one record at a time) -> duplicate-id check -> shard i = docs [i*S, (i+1)*S)
          -> shard already complete? keep it : (cache lookup -> embed misses -> cache insert
          -> write shard atomically) -> manifest

Memory is bounded by one shard (S documents and their vectors), not by the corpus: the
duplicate-id check keeps seen ids in a scratch SQLite file in OUTDIR, not in RAM.

Duplicate ids are an error naming the id and both locations (with ``skip_bad`` the later
records are skipped and listed in rejects.jsonl). Kill the run at any moment and rerun the same
call: complete shards are kept (checked against their done record: settings, document digest,
sha256 of the files), the rest is written, and the output is byte-identical to an uninterrupted
run. See ``engine.corpus.readers`` for formats, ids and how title and text are combined, and
``engine.corpus.shards`` for the output layout.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .readers import (
    SKIP_HINT,
    Doc,
    Fields,
    count_records,
    detect_format,
    expand_inputs,
    iter_documents,
)
from .shards import FORMAT, REJECTS, VERSION, OutputDir, settings_digest, snippet

DEFAULT_SHARD_SIZE = 10_000
EMBED_CHUNK = 1024   # documents per cache lookup / encode call / cache transaction
ID_BLOCK = 1000      # documents per duplicate-id query
TEXT_FORMAT = 1      # bump if the way title and text are combined changes


@dataclass(frozen=True)
class CorpusSummary:
    """What one ``embed_corpus`` run did. docs = embedded + cache_hits + resumed."""

    out_dir: str
    docs: int            # documents in the output
    embedded: int        # documents the model embedded in this run (cache misses)
    cache_hits: int      # documents whose vectors came from the embedding cache
    resumed: int         # documents in shards kept from an earlier run (not looked at again)
    rejected: int        # bad records skipped (skip_bad); listed in OUTDIR/rejects.jsonl
    shards: int
    shards_written: int  # shards written by this run (the rest were kept)
    seconds: float

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "docs_per_s": self.docs_per_s}

    def __str__(self) -> str:
        return (f"{self.docs} docs in {self.shards} shards ({self.shards_written} written, "
                f"{self.shards - self.shards_written} kept) -> {self.out_dir}\n"
                f"embedded {self.embedded}, cache hits {self.cache_hits}, resumed {self.resumed}, "
                f"rejected {self.rejected}; {self.seconds:.1f}s, {self.docs_per_s:,.1f} docs/s")


def embed_corpus(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    model=None,
    *,
    precision: str = "fp32",
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int = 32,
    id_field: str = "_id",
    text_field: str = "text",
    title_field: str | None = "title",
    truncate_dim: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    cache=True,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> CorpusSummary:
    """Embed every document of ``inputs`` (files or globs) into shards in ``out_dir``.

    model: a catalogue name, a sentence-transformers folder, or a ready ``Embedder`` (default
        all-MiniLM-L6-v2). precision/device/threads/cache_dir build that Embedder (unused when
        model is one); cache_dir also locates the default embedding cache.
    truncate_dim: keep the first components (Matryoshka) and re-normalize.
    shard_size: documents per shard; part of the settings (a rerun must use the same).
    cache: True for the default cache (``<cache root>/embeddings.sqlite``), a path, an open
        ``EmbeddingCache``, or False for none.
    skip_bad: skip bad records and duplicate ids (listed in OUTDIR/rejects.jsonl) instead of
        raising InputError. overwrite: delete an existing output (other settings) first.
    progress: a tqdm bar on stderr (docs/s, tokens/s, ETA).
    """
    t0 = time.perf_counter()
    check_options(shard_size=shard_size, batch_size=batch_size, id_field=id_field, text_field=text_field)
    paths = expand_inputs(inputs)
    embedder, model_ref = _embedder(model, precision, device, threads, cache_dir)
    plan = Plan.build(paths, embedder.name, embedder.fingerprint, embedder.precision, embedder.dim, model_ref,
                      Fields(id_field, text_field, title_field or None), truncate_dim, shard_size)
    fields, settings, settings_sha, manifest = plan.fields, plan.settings, plan.settings_sha, plan.manifest
    truncate_dim, dim = plan.truncate_dim, plan.dim
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(OutputDir(out_dir))
        out.check_settings(settings, overwrite)
        out.write_manifest(manifest)
        store, owned = _open_cache(cache, cache_dir)
        if owned:
            stack.enter_context(store)
        ns = store.namespace(embedder.fingerprint, embedder.precision, truncate_dim, dim) if store else None
        rejects = stack.enter_context(_Rejects(out.path, enabled=skip_bad))
        registry = stack.enter_context(_IdRegistry(out.path / ".ids.sqlite"))
        bar = stack.enter_context(_Progress(count_records(paths) if progress else None, progress))
        run = _Run(embedder, store, ns, out, settings_sha, dim, truncate_dim, batch_size, bar)

        docs = iter_documents(paths, fields, on_bad=rejects.add if skip_bad else None)
        pending: list[Doc] = []
        for block in _blocks(docs, min(ID_BLOCK, shard_size)):  # a full shard is written before reading on
            pending.extend(registry.unique(block, rejects.add if skip_bad else None))
            while len(pending) >= shard_size:
                run.shard(pending[:shard_size])
                del pending[:shard_size]
        if pending:
            run.shard(pending)
        out.remove_shards_from(len(run.records))
        n_docs = sum(r["count"] for r in run.records)
        manifest.update(status="complete", count=n_docs, rejected=rejects.count,
                        shards=[{k: v for k, v in r.items() if k != "settings_sha256"} for r in run.records])
        rejects.finish()
        out.write_manifest(manifest)
    return CorpusSummary(str(out_dir), n_docs, run.embedded, run.hits, run.resumed, rejects.count,
                         len(run.records), run.written, time.perf_counter() - t0)


def check_options(**positive_ints_and_fields) -> None:
    """InputError for a non-positive integer option (shard_size, batch_size, ...) or an empty field name."""
    for name, value in positive_ints_and_fields.items():
        if name.endswith("_field"):
            if not isinstance(value, str) or not value:
                raise InputError(f"{name} must be a non-empty string, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Plan:
    """What defines an output folder: its settings (a rerun must match them) and its manifest.

    Shared by the local and the Ray path, so their outputs are interchangeable.
    """

    fields: Fields
    settings: dict
    settings_sha: str
    manifest: dict
    truncate_dim: int | None
    dim: int

    @classmethod
    def build(cls, paths, name: str, fingerprint: str, precision: str, full_dim: int, model_ref,
              fields: Fields, truncate_dim: int | None, shard_size: int) -> Plan:
        if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)
                                         or not 1 <= truncate_dim <= full_dim):
            raise InputError(f"truncate_dim must be an integer in [1, {full_dim}] or None, got {truncate_dim!r}")
        if truncate_dim == full_dim:
            truncate_dim = None
        dim = truncate_dim or full_dim
        settings = {
            "model": fingerprint, "precision": precision, "truncate_dim": truncate_dim,
            "normalize": True, "dim": dim, "id_field": fields.id, "text_field": fields.text,
            "title_field": fields.title, "shard_size": shard_size, "text_format": TEXT_FORMAT,
        }
        manifest = {
            "format": FORMAT, "version": VERSION, "status": "in_progress", "settings": settings,
            "model": {"name": name, "ref": model_ref, "fingerprint": fingerprint, "precision": precision},
            "dim": dim, "truncate_dim": truncate_dim, "normalize": True,
            "inputs": [_input_info(p) for p in paths],
        }
        return cls(fields, settings, settings_digest(settings), manifest, truncate_dim, dim)


# -- the per-shard work ---------------------------------------------------------------------
class _Run:
    def __init__(self, embedder, store, ns, out: OutputDir, settings_sha: str, dim: int, truncate_dim, batch_size, bar):
        self.embedder, self.store, self.ns, self.out = embedder, store, ns, out
        self.settings_sha, self.dim, self.truncate_dim, self.batch_size = settings_sha, dim, truncate_dim, batch_size
        self.bar = bar
        self.records: list[dict] = []
        self.embedded = self.hits = self.resumed = self.written = 0

    def shard(self, docs: list[Doc]) -> None:
        i = len(self.records)
        keys = [d.key for d in docs]
        content = _content_digest(docs, keys)
        rec = self.out.completed(i, content, self.settings_sha)
        if rec is None:
            vectors = np.empty((len(docs), self.dim), dtype=np.float32)
            for start in range(0, len(docs), EMBED_CHUNK):
                stop = min(start + EMBED_CHUNK, len(docs))
                vectors[start:stop] = self._vectors(docs[start:stop], keys[start:stop])
            titles = [snippet(d.title, d.text) for d in docs]
            rec = self.out.write_shard(i, vectors, [d.id for d in docs], titles, content, self.settings_sha)
            self.written += 1
        else:
            self.resumed += len(docs)
            self.bar.update(len(docs), 0, self)
        self.records.append(rec)

    def _vectors(self, docs: list[Doc], keys: list[bytes]) -> np.ndarray:
        if self.store is not None:
            vectors, found = self.store.get(self.ns, keys)
        else:
            vectors, found = np.empty((len(docs), self.dim), np.float32), np.zeros(len(docs), bool)
        first: dict[bytes, int] = {}  # unique missing texts -> first row
        for j in np.flatnonzero(~found):
            first.setdefault(keys[j], int(j))
        tokens = 0
        if first:
            rows = list(first.values())
            texts = [docs[j].text for j in rows]
            new = self.embedder.encode(texts, batch_size=self.batch_size, truncate_dim=self.truncate_dim)
            if self.bar.enabled:
                tokens = sum(len(t) for t in self.embedder.tokenize(texts))
            vectors[rows] = new
            for j in np.flatnonzero(~found):  # in-chunk repeats of a missing text
                f = first[keys[j]]
                if f != j:
                    vectors[j] = vectors[f]
            if self.store is not None:
                self.store.put(self.ns, [keys[j] for j in rows], new)
        misses = int((~found).sum())
        self.embedded += misses
        self.hits += len(docs) - misses
        self.bar.update(len(docs), tokens, self)
        return vectors


def _content_digest(docs: Iterable[Doc], keys: Iterable[bytes]) -> str:
    """sha256 over each document's id, title and text hash: what a shard's files are a function of."""
    h = hashlib.sha256()
    for d, k in zip(docs, keys):
        for part in (d.id.encode("utf-8"), d.title.encode("utf-8")):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        h.update(k)
    return h.hexdigest()


def _blocks(it: Iterator[Doc], n: int) -> Iterator[list[Doc]]:
    block: list[Doc] = []
    for d in it:
        block.append(d)
        if len(block) == n:
            yield block
            block = []
    if block:
        yield block


def _embedder(model, precision, device, threads, cache_dir):
    """(Embedder, the model reference to store in the manifest for ``embed search``)."""
    from ..embedder import Embedder
    from ..models import DEFAULT_MODEL

    if isinstance(model, Embedder):
        source = getattr(model, "_exported", None)
        source = source.meta.get("source", "") if source is not None else ""
        return model, source[len("local:"):] if source.startswith("local:") else model.name
    model = DEFAULT_MODEL if model is None else model
    ref = os.fspath(model)
    if Path(ref).expanduser().is_dir():
        ref = str(Path(ref).expanduser().resolve())
    return Embedder(model, device=device, precision=precision, threads=threads, cache_dir=cache_dir), ref


def _open_cache(cache, cache_dir):
    from .cache import EmbeddingCache, default_cache_path

    """(cache or None, whether this run opened it and must close it)."""
    if cache is False or cache is None:
        return None, False
    if isinstance(cache, EmbeddingCache):
        return cache, False
    path = default_cache_path(cache_dir) if cache is True else Path(cache).expanduser()
    return EmbeddingCache(path), True


def _input_info(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path), "format": detect_format(path), "size": st.st_size, "mtime": st.st_mtime}


# -- duplicate ids, rejects, progress -------------------------------------------------------
class _IdRegistry:
    """Ids seen so far, in a scratch SQLite file (bounded memory), with where each was first seen."""

    def __init__(self, path: Path):
        self.path = path
        self._remove()
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA cache_size=-8000")  # 8 MB page cache
        self._db.execute("CREATE TABLE ids (id TEXT PRIMARY KEY, loc TEXT NOT NULL) WITHOUT ROWID")

    def unique(self, docs: list[Doc], on_bad) -> list[Doc]:
        """docs without repeated ids; a repeat raises InputError (or goes to on_bad)."""
        known: dict[str, str] = {}
        ids = list({d.id: None for d in docs})
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            rows = self._db.execute(f"SELECT id, loc FROM ids WHERE id IN ({','.join('?' * len(part))})", part)
            known.update(rows)
        new: dict[str, str] = {}
        out = []
        for d in docs:
            first = known.get(d.id) or new.get(d.id)
            if first is not None:
                msg = f"duplicate id {d.id!r} (first seen at {first})"
                if on_bad is None:
                    raise InputError(f"{d.where}: {msg}. Ids must be unique: deduplicate the input, choose "
                                     f"another id field with --id-field, {SKIP_HINT} (the first one is kept).")
                on_bad(d.where, msg)
                continue
            new[d.id] = d.where
            out.append(d)
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO ids VALUES (?, ?)", new.items())
        self._db.execute("COMMIT")
        return out

    def _remove(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._db.close()
        self._remove()


class _Rejects:
    """OUTDIR/rejects.jsonl (skip_bad): written to a .partial file, renamed at the end of a run."""

    def __init__(self, folder: Path, enabled: bool):
        self.final = folder / REJECTS
        self.partial = folder / (REJECTS + ".partial")
        self.count = 0
        self._f = open(self.partial, "w", encoding="utf-8") if enabled else None

    def add(self, where: str, message: str) -> None:
        self.count += 1
        self._f.write(json.dumps({"where": where, "error": message}, ensure_ascii=False) + "\n")

    def finish(self) -> None:
        if self._f is None:
            with contextlib.suppress(FileNotFoundError):
                self.final.unlink()
            return
        self._f.close()
        self._f = None
        if self.count:
            os.replace(self.partial, self.final)
        else:
            self.partial.unlink()
            with contextlib.suppress(FileNotFoundError):
                self.final.unlink()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._f is not None:
            self._f.close()


class _Progress:
    """tqdm on stderr: docs/s and ETA from tqdm, tokens/s, hits and misses in the postfix."""

    def __init__(self, total: int | None, enabled: bool):
        self.enabled = enabled
        self._bar = None
        self._tokens = 0
        self._t0 = time.perf_counter()
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="doc", desc="encode", file=sys.stderr, smoothing=0.05)

    def update(self, n: int, tokens: int, run: _Run) -> None:
        if self._bar is None:
            return
        self._tokens += tokens
        rate = self._tokens / max(time.perf_counter() - self._t0, 1e-9)
        self._bar.set_postfix_str(f"{rate:,.0f} tok/s, embedded {run.embedded}, hits {run.hits}, "
                                  f"resumed {run.resumed}", refresh=False)
        self._bar.update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
