"""The distributed corpus path: a Ray cluster embeds a corpus with no single process on the data path.

``embed_corpus_distributed`` (``embed encode --ray --distributed``, and ``--ray`` whenever an input
or OUTDIR is a URI) writes the local path's output (``engine.corpus.shards``) from files on storage
every node sees or on object storage (``engine.corpus.storage``)::

    driver: expand inputs (names, sizes) -> settings check of OUTDIR -> manifest "in_progress"
    scan tasks, one per file: the one reader -> docs per file, bad records, ids into B buckets
    dedup tasks, one per bucket: duplicate ids across the whole corpus (first one kept)
    driver: file f's shards are numbered [base_f, base_f + ceil(n_f / S)) (counts only)
    writer actors (the model + the node's cache), one file each: read it again, shard by shard:
            complete? keep : cache lookup -> embed misses -> write shard + done record
    driver: every shard record back -> manifest "complete"

Texts, ids and vectors never pass through the driver. A shard never spans two files, so over
several files the shard files differ from a local run's; the ids, their order and the vectors (to
float rounding) are the same. One file is one writer's work: give a large corpus as many files.
Exactly once: a shard is committed by its done record, written after its files; a killed writer,
a retried task or a rerun keeps each complete shard (``shards.shard_completed``) and redoes the
rest, so no row is duplicated or dropped. Duplicate ids are an InputError naming both places
(``skip_bad``: skipped and listed in rejects.jsonl). Each node has its own SQLite cache
(``engine.corpus.cache``), shared by its writers: a shard redone on another node embeds again.
Object storage has no locks: run one job per OUTDIR there (a local OUTDIR is locked as usual).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..arguments import model_precision_argument, positive_int
from ..errors import EngineError, InputError
from .options import DEFAULT_SHARD_SIZE, CorpusOptions

if TYPE_CHECKING:
    from .cache import EmbeddingCache

ID_BUCKETS = 8  # dedup tasks (at most one per input file)

__all__ = ["embed_corpus_distributed"]


@dataclass(frozen=True)
class _File:
    """One input file: its name as given (ids, messages), where to read it, its size and format."""

    name: str
    location: str  # an absolute local path or a URI
    size: int
    mtime: float | None
    format: str

    def info(self) -> dict:
        return {"path": self.name, "format": self.format, "size": self.size, "mtime": self.mtime}


def _expand(inputs, format: str | None) -> list[_File]:
    """The input files, in order (a glob's matches sorted); InputError for what is not a file."""
    from .readers import Source, detect_format, expand_inputs
    from .storage import expand_uris, is_uri

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    try:
        items = list(inputs)
    except TypeError:
        items = [inputs]
    out: list[_File] = []
    seen: set[str] = set()
    for item in items:
        if is_uri(item):
            found = [(u, u, size, mtime) for u, size, mtime in expand_uris(item)]
        elif isinstance(item, (str, os.PathLike)):
            expanded = expand_inputs([item], format)
            paths = [p for p in expanded if not isinstance(p, Source)]
            if len(paths) < len(expanded):
                raise InputError(
                    "the distributed path reads files; standard input (-) cannot be shared by a "
                    "cluster: save it to a file, or run without --distributed"
                )
            found = [(str(p), os.path.realpath(p), p.stat().st_size, p.stat().st_mtime) for p in paths]
        else:
            raise InputError(
                f"the distributed path reads files (paths, globs or URIs), not a "
                f"{type(item).__name__}; use engine.corpus.ray.embed_corpus_ray for in-memory sources"
            )
        for name, location, size, mtime in found:
            if location not in seen:  # the same file named twice is read once, as locally
                seen.add(location)
                out.append(_File(name, location, size, mtime, detect_format(name, format)))
    if not out:
        raise InputError("no input files given")
    return out


@contextlib.contextmanager
def _opened(f: _File) -> Iterator[tuple[Path, Callable[[str], str]]]:
    """(local path to read, fix: a message/where with that path spelled as the input's name)."""
    from .storage import is_uri, local_copy

    with local_copy(f.location, f.size) if is_uri(f.location) else contextlib.nullcontext(Path(f.location)) as p:
        local = str(p)
        yield p, (lambda s: s.replace(local, f.name) if local != f.name else s)


def _docs(f: _File, fields, prefix: str, on_bad) -> Iterator:
    """f's documents read by the one reader, their where strings naming f as given."""
    from dataclasses import replace

    from .readers import _read_file

    with _opened(f) as (path, fix):
        report = None if on_bad is None else (lambda where, msg: on_bad(fix(where), fix(msg)))
        try:
            for d in _read_file(path, f.format, fields, report, prefix):
                yield replace(d, where=fix(d.where))
        except InputError as e:
            raise InputError(fix(str(e))) from None


def _bucket(doc_id: str, buckets: int) -> int:
    return zlib.crc32(doc_id.encode("utf-8", "surrogatepass")) % buckets


def _scan(f: _File, fields, prefix: str, skip_bad: bool, buckets: int):
    """A scan task: (counts and bad records, then per bucket the (ids, positions, wheres) of f)."""
    n = 0
    bad: list[tuple[int, str, str]] = []
    parts: list[tuple[list[str], list[int], list[str]]] = [([], [], []) for _ in range(buckets)]
    on_bad = (lambda where, msg: bad.append((n, where, msg))) if skip_bad else None
    for d in _docs(f, fields, prefix, on_bad):
        ids, pos, wheres = parts[_bucket(d.id, buckets)]
        ids.append(d.id)
        pos.append(n)
        wheres.append(d.where)
        n += 1
    return ({"docs": n, "bad": bad}, *parts)


def _dedup(*parts) -> list[tuple[int, int, str, str, str]]:
    """A dedup task over one bucket of every file (in input order): (file, position, id, where,
    first where) of each id seen before."""
    first: dict[str, str] = {}
    dups = []
    for f, (ids, pos, wheres) in enumerate(parts):
        for doc_id, p, where in zip(ids, pos, wheres):
            seen = first.get(doc_id)
            if seen is None:
                first[doc_id] = where
            else:
                dups.append((f, p, doc_id, where, seen))
    return dups


class _Writer:
    """A writer actor: the model (an ``EmbedBatch``) and this node's cache; ``write`` does one file."""

    def __init__(self, model_kwargs: dict, cache: tuple | None, folder, job: dict):
        from .ray import EmbedBatch

        self.model = EmbedBatch(**model_kwargs)  # refuses a model other than the driver's
        self.folder, self.job = folder, job
        self.cache: EmbeddingCache | None = None
        self.ns: int | None = None  # the job's namespace in self.cache
        if cache is not None:
            from .cache import EmbeddingCache, default_cache_path

            kind, where = cache
            self.cache = EmbeddingCache(default_cache_path(where) if kind == "default" else where)
            s = job["settings"]
            self.ns = self.cache.namespace(
                s["model"], s["precision"], s["truncate_dim"], s["dim"], normalize=s["normalize"], prompt=job["prompt"]
            )

    def pid(self) -> int:
        return os.getpid()

    def write(self, f: _File, prefix: str, base: int, n_shards: int, skip: list[int]) -> dict:
        """Shards [base, base + n_shards) from file f (documents at the positions in skip left
        out): each kept when complete, else embedded and written. Returns their records and counts."""
        from .driver import _blocks, _content_digest
        from .shards import shard_completed, snippet, write_shard

        t0 = time.perf_counter()
        job, skipped = self.job, set(skip)
        counts = {"embedded": 0, "hits": 0, "resumed": 0, "written": 0}
        records: list[dict | None] = []  # None: more documents than counted
        on_bad = (lambda where, msg: None) if job["skip_bad"] else None  # the scan listed them
        docs = (d for n, d in enumerate(_docs(f, job["fields"], prefix, on_bad)) if n not in skipped)
        for j, block in enumerate(_blocks(docs, job["shard_size"])):
            if j == n_shards:  # more documents than the scan counted
                records.append(None)
                break
            i, keys = base + j, [d.key for d in block]
            content = _content_digest(block, keys)
            rec = shard_completed(self.folder, i, content, job["settings_sha"], job["output_format"], job["dim"])
            if rec is not None:
                counts["resumed"] += len(block)
            else:
                vectors = self._vectors(block, keys, counts)
                rec = write_shard(
                    self.folder,
                    i,
                    job["output_format"],
                    vectors,
                    [d.id for d in block],
                    [snippet(d.title, d.text) for d in block],
                    content,
                    job["settings_sha"],
                )
                counts["written"] += 1
            records.append(rec)
        if len(records) != n_shards or (records and records[-1] is None):
            raise InputError(
                f"{f.name} changed while the run read it (its documents are not the ones counted "
                "when the run was planned); rerun when it no longer changes"
            )
        return {"records": records, **counts, "file": f.name, "seconds": time.perf_counter() - t0, "pid": os.getpid()}

    def _vectors(self, docs: list, keys: list[bytes], counts: dict) -> np.ndarray:
        """The shard's vectors: per chunk of EMBED_CHUNK, cache hits, then each missing text embedded
        once (as the local path: results cached before the next chunk's lookup)."""
        from .driver import EMBED_CHUNK

        vectors = np.empty((len(docs), self.job["dim"]), dtype=np.float32)
        for start in range(0, len(docs), EMBED_CHUNK):
            stop = min(start + EMBED_CHUNK, len(docs))
            if self.cache is not None:
                assert self.ns is not None  # set with self.cache
                vectors[start:stop], found = self.cache.get(self.ns, keys[start:stop])
            else:
                found = np.zeros(stop - start, bool)
            missing = (np.flatnonzero(~found) + start).tolist()
            first: dict[bytes, int] = {}
            for j in missing:
                first.setdefault(keys[j], j)
            if first:
                new, _ = self.model.encode([docs[j].text for j in first.values()])
                row = dict(zip(first, new))
                for j in missing:
                    vectors[j] = row[keys[j]]
                if self.cache is not None:
                    assert self.ns is not None  # set with self.cache
                    self.cache.put(self.ns, list(first), new)
            counts["embedded"] += len(missing)
            counts["hits"] += stop - start - len(missing)
        return vectors


def _cache_spec(cache, actor_cache) -> tuple | None:
    """What each writer opens: ("default", cache folder) for the node's default cache, ("path",
    path) for one path on every node, or None."""
    from .cache import EmbeddingCache

    if cache is False or cache is None:
        return None
    if cache is True:
        return ("default", actor_cache)
    if isinstance(cache, EmbeddingCache):
        cache = cache.path
    return ("path", str(Path(cache).expanduser().resolve()))


def _check_remote_out(folder, settings: dict, overwrite: bool) -> None:
    """OutputDir.check_settings for an OUTDIR on object storage (which has no lock)."""
    from .shards import _SCRATCH, _SHARD_FILE, FORMAT, MANIFEST, MANIFEST_LIMIT, REJECTS, REWRITE, _parse_json

    names = folder.names()
    engine = [n for n in names if _SHARD_FILE.match(n) or n in (MANIFEST, REJECTS)]
    if MANIFEST in names:
        try:
            old = _parse_json(folder.read(MANIFEST, MANIFEST_LIMIT, REWRITE), folder.name(MANIFEST))
            old = old.get("settings") if isinstance(old, dict) and old.get("format") == FORMAT else None
        except EngineError:
            old = None
        if old is None and not overwrite:
            raise InputError(
                f"{folder.name(MANIFEST)} is not an embed encode manifest (or is damaged); choose "
                "another output folder, or pass --overwrite (overwrite=True) to replace its contents"
            )
        has_shards = any(_SHARD_FILE.match(n) for n in names)
        if old is not None and old != settings and has_shards and not overwrite:
            diff = [
                f"{k}: {old.get(k)!r} then, {settings.get(k)!r} now"
                for k in sorted(set(old) | set(settings))
                if old.get(k) != settings.get(k)
            ]
            raise InputError(
                f"{folder} holds output written with other settings ({'; '.join(diff)}). Rerun with "
                "the original settings to resume, choose another output folder, or pass --overwrite "
                "(overwrite=True) to delete it and start again"
            )
        if overwrite or old != settings:
            for n in engine:
                folder.delete(n)
    else:
        foreign = sorted(n for n in names if not _SCRATCH.match(n))
        if foreign and not overwrite:
            raise InputError(
                f"{folder} is not empty and has no {MANIFEST} ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); choose a new or empty output folder, "
                "or pass --overwrite (overwrite=True) to delete the shards and start again"
            )
        for n in engine:
            folder.delete(n)


def _get(ray, refs):
    """ray.get, with an engine error raised on a worker raised here as itself (no Ray traceback)."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, EngineError):
            raise e.cause from None
        raise


def _scan_all(ray, files: list[_File], fields, skip_bad: bool, several: bool):
    """(docs per file after duplicates, positions to skip per file, rejects in input order)."""
    from .readers import SKIP_HINT, display_name

    buckets = max(1, min(ID_BUCKETS, len(files)))
    scan = ray.remote(num_cpus=1)(_scan)
    scans = [
        scan.options(num_returns=buckets + 1).remote(
            f, fields, f"{display_name(f.name)}:" if several else "", skip_bad, buckets
        )
        for f in files
    ]
    metas = [_get(ray, s[0]) for s in scans]  # in input order: the first file's error first
    dedup = ray.remote(num_cpus=1)(_dedup)
    dups = sorted(
        d for part in _get(ray, [dedup.remote(*[s[b + 1] for s in scans]) for b in range(buckets)]) for d in part
    )
    del scans
    if dups and not skip_bad:
        _, _, doc_id, where, first = dups[0]
        raise InputError(
            f"{where}: duplicate id {doc_id!r} (first seen at {first}). Ids must be unique: deduplicate "
            f"the input, choose another id field with --id-field, {SKIP_HINT} (the first one is kept)."
        )
    skip: list[list[int]] = [[] for _ in files]
    rejects = [((fi, n, 0), where, msg) for fi, m in enumerate(metas) for n, where, msg in m["bad"]]
    for fi, p, doc_id, where, first in dups:
        skip[fi].append(p)
        rejects.append(((fi, p, 1), where, f"duplicate id {doc_id!r} (first seen at {first})"))
    rejects.sort(key=lambda r: r[0])
    docs = [m["docs"] - len(s) for m, s in zip(metas, skip)]
    return docs, skip, [(where, msg) for _, where, msg in rejects]


def embed_corpus_distributed(
    inputs,
    out_dir: str | os.PathLike,
    model=None,
    *,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1,
    gpus_per_actor: float | None = None,
    model_precision: str = "fp32",
    precision: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int = 32,
    id_field: str | None = "_id",
    text_field: str = "text",
    title_field: str | None = "title",
    truncate_dim: int | None = None,
    shard_size: int | None = None,
    cache=True,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
    format: str | None = None,
    prompt_name: str | None = None,
    prompt: str | None = None,
    output_format: str = "npy",
    stats: list | None = None,
    options: CorpusOptions | None = None,
):
    """``engine.corpus.ray.embed_corpus_ray`` with the data off the driver (module docstring).

    Args:
        inputs: paths or globs (on storage every node sees) or URIs (``s3://bucket/corpus/*.parquet``).
        out_dir: a local folder or a URI.
        model, address, actors, cpus_per_actor, gpus_per_actor, precision: ``embed_corpus_ray``'s.
        stats: a list that receives each file's writer timing ({file, docs, seconds, pid,
            embedded, ...}; for benchmarks).
        options: every other setting in one ``CorpusOptions``, instead of the keywords.
        model_precision, device, threads, batch_size, id_field, text_field, title_field,
            truncate_dim, shard_size, cache, skip_bad, overwrite, progress, cache_dir, format,
            prompt_name, prompt, output_format: the ``CorpusOptions`` fields, documented there.
            Here cache True is each node's default cache and a path is the same path on every
            node; progress is accepted and ignored.

    Returns:
        A ``CorpusSummary``.

    Raises:
        InputError: as ``embed_corpus_ray``; also for stdin or an in-memory source (files only).
        RayWorkerError: a writer failed for good (the shards written so far are kept).
    """
    model_precision = model_precision_argument(model_precision, precision, "embed_corpus_distributed")
    from .driver import CorpusSummary, Plan
    from .ray import _actor_kwargs, _default_actors, _driver_model, _import_ray, _resources, connect
    from .shards import _SHARD_FILE, MANIFEST, REJECTS, OutputDir, json_bytes
    from .storage import Folder

    t0 = time.perf_counter()
    ray = _import_ray()
    shard_size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
    options = CorpusOptions.from_arguments(options, locals())
    if actors is not None:
        positive_int(actors, "actors")
    cpus, gpus = _resources(options.device, options.model_precision, cpus_per_actor, gpus_per_actor)
    files = _expand(inputs, options.format)
    exported, ref, actor_cache, runtime = _driver_model(model, options)
    plan = Plan.build([], exported, ref, options)
    fields, shard_size = options.record_fields, options.shard_size
    manifest = {**plan.manifest, "inputs": [f.info() for f in files]}
    folder = Folder(out_dir)
    with contextlib.ExitStack() as stack:
        if folder.local:
            out = stack.enter_context(OutputDir(out_dir))
            out.check_settings(plan.settings, options.overwrite)
        else:
            folder.make()
            _check_remote_out(folder, plan.settings, options.overwrite)
        if connect(address):
            stack.callback(ray.shutdown)
        folder.write(MANIFEST, json_bytes(manifest, indent=1) + b"\n")
        docs, skip, rejects = _scan_all(ray, files, fields, options.skip_bad, len(files) > 1)

        job = {  # what the writers need of the plan: plain values (options.cache may be an open EmbeddingCache)
            "settings": plan.settings,
            "settings_sha": plan.settings_sha,
            "prompt": plan.prompt,
            "dim": plan.dim,
            "shard_size": shard_size,
            "output_format": options.output_format,
            "fields": fields,
            "skip_bad": options.skip_bad,
        }
        kwargs = _actor_kwargs(
            ref, actor_cache, exported, options, cpus, plan.truncate_dim, plan.prompt, plan.normalize, runtime=runtime
        )
        work, base = [], 0
        for fi, (f, n) in enumerate(zip(files, docs)):
            if n:
                work.append((f, f"{f.name}:" if len(files) > 1 else "", base, math.ceil(n / shard_size), skip[fi]))
                base += math.ceil(n / shard_size)
        results = (
            _run_writers(
                ray,
                work,
                kwargs,
                _cache_spec(options.cache, actor_cache),
                folder,
                job,
                cpus,
                gpus,
                actors or _default_actors(cpus, gpus),
            )
            if work
            else []
        )

        records = sorted((r for res in results for r in res["records"]), key=lambda r: r["index"])
        assert [r["index"] for r in records] == list(range(base))  # every planned shard, once
        for name in folder.names():  # shards left by an earlier run over a longer corpus
            m = _SHARD_FILE.match(name)
            if m and int(m.group(1)) >= base:
                folder.delete(name)
        if rejects:
            folder.write(REJECTS, b"".join(json_bytes({"where": w, "error": e}) + b"\n" for w, e in rejects))
        else:
            folder.delete(REJECTS)
        n_docs = sum(r["count"] for r in records)
        manifest.update(
            status="complete",
            count=n_docs,
            rejected=len(rejects),
            shards=[{k: v for k, v in r.items() if k != "settings_sha256"} for r in records],
        )
        folder.write(MANIFEST, json_bytes(manifest, indent=1) + b"\n")
    if stats is not None:
        stats.extend(
            {**{k: v for k, v in res.items() if k != "records"}, "docs": sum(r["count"] for r in res["records"])}
            for res in results
        )
    total = {k: sum(res[k] for res in results) for k in ("embedded", "hits", "resumed", "written")}
    return CorpusSummary(
        str(out_dir),
        n_docs,
        total["embedded"],
        total["hits"],
        total["resumed"],
        len(rejects),
        len(records),
        total["written"],
        time.perf_counter() - t0,
    )


def _run_writers(
    ray, work: list, kwargs: dict, cache, folder, job: dict, cpus: float, gpus: float, n: int
) -> list[dict]:
    """Each work item (a file's shards) on a writer actor, one at a time per actor, largest first;
    a killed actor is restarted and its item retried by Ray. Returns the items' results."""
    from .ray import MAX_RESTARTS, MAX_TASK_RETRIES, RayWorkerError

    remote = ray.remote(
        num_cpus=cpus, num_gpus=gpus or None, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES
    )(_Writer)
    writers = [remote.remote(kwargs, cache, folder, job) for _ in range(min(n, len(work)))]
    queue = sorted(work, key=lambda w: -w[3])  # the most shards first: the last to finish is short
    inflight: dict = {}
    results = []
    try:

        def dispatch(w) -> None:
            inflight[w.write.remote(*queue.pop(0))] = w

        for w in writers:
            if queue:
                dispatch(w)
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            w = inflight.pop(ref)
            try:
                results.append(_get(ray, ref))
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                raise RayWorkerError(
                    f"a writer failed after {MAX_TASK_RETRIES} retries ({e}); the shards written "
                    "so far are kept: rerun the same command to resume"
                ) from None
            if queue:
                dispatch(w)
    finally:
        for w in writers:
            with contextlib.suppress(Exception):
                ray.kill(w)
    return results
