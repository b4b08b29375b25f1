"""Embed on a Ray cluster: the same shards and vectors as one machine, with the model on many.

Two entry points (Ray is the ``ray`` extra: ``pip install 'embed-engine[ray]'``):

* ``embed_corpus_ray(inputs, out_dir, model, ...)`` - what ``embed encode --ray`` runs. It is
  ``engine.corpus.embed_corpus`` with the model calls sent to a pool of Ray actors::

      driver: files -> engine.corpus.readers -> duplicate-id check -> shard i = docs [i*S, (i+1)*S)
              -> shard complete? keep it : cache lookup -> unique misses -> batches ─┐
      actors (EmbedBatch, one model each, threads = CPUs per actor): batch -> vectors  │
      driver: vectors + cache hits -> cache insert -> write shard i (OutputDir) <──────┘
              -> manifest

  The driver reads the inputs (so ids, composed texts, bad records and duplicate ids follow
  ``engine.corpus.readers`` exactly), defines the shards, talks to the cache and writes every file;
  actors only turn texts into vectors. The output layout, settings and done records are those
  of the local path, so ``embed search``, ``iter_shards`` and ``load_index`` read it unchanged,
  and a run started locally can be finished on Ray or the other way round. Memory on the driver
  is bounded by the shards in flight (enough to keep every actor busy), not by the corpus.

* ``embed_dataset(ds, model, ...)`` - for data already in a ``ray.data.Dataset``: adds an
  ``embedding`` column with ``map_batches`` over an actor pool of the same ``EmbedBatch``
  callable class. Writing it out is the caller's business (``ds.write_parquet(...)``).

Both export the ONNX model once on the driver before any actor starts, so actors on the
driver's machine (or sharing its cache folder) only load it; each actor checks that its model's
fingerprint is the driver's and refuses to run otherwise.

Worker death, resume, cache
---------------------------
* An actor that dies (its process killed, its node lost) is restarted by Ray (``max_restarts``)
  and its unfinished batches are run again (``max_task_retries``); the driver notices nothing.
  When the retries are spent the run stops with an error; every shard written so far is kept.
* Resume is the local path's: rerun the same command and complete shards (checked against their
  done records) are kept, the rest are embedded again. Because only the driver writes, each file
  atomically and named by its shard position, a retried or repeated batch can never duplicate or
  drop a row. Killing the driver is the local path's kill -9 case.
* The embedding cache lives with the driver: it looks every text up before sending work out,
  sends only the misses (each distinct text once per shard) and inserts the vectors that come
  back before writing the shard. Counts differ from a local run only when a text repeats across
  shards still in flight: it is embedded (and counted) once per such shard.
* Vectors match the local path's to float rounding (batch composition and thread count change
  the last bits), not bit for bit.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import EngineError, InputError, ModelMismatchError, missing_extra

RAY_BATCH = 256           # texts per actor call
INFLIGHT_PER_ACTOR = 2    # calls queued on each actor (one running, one ready)
MAX_RESTARTS = 4          # per actor
MAX_TASK_RETRIES = 4      # per batch, across actor restarts

__all__ = ["EmbedBatch", "connect", "embed_corpus_ray", "embed_dataset"]


def _import_ray():
    try:
        import ray
    except ImportError:
        raise missing_extra("ray", "ray") from None
    return ray


class EmbedBatch:
    """A Ray Data callable class (and actor): loads the model once, embeds batches of texts.

    ``__call__(batch)`` takes a dict of columns (Ray Data's numpy batch format) and adds
    ``output_column`` (float32 (n, dim)); ``encode(texts)`` serves the driver of
    ``embed_corpus_ray``. threads defaults to the CPUs the actor was given.
    """

    def __init__(self, model, *, precision: str = "fp32", device: str = "cpu", threads: int | None = None,
                 cache_dir: str | None = None, batch_size: int = 32, truncate_dim: int | None = None,
                 text_column: str = "text", title_column: str | None = None, output_column: str = "embedding",
                 fingerprint: str | None = None):
        if threads is not None:  # the tokenizer's Rayon pool, sized like onnxruntime's
            os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
        from ..embedder import Embedder

        self.embedder = Embedder(model, device=device, precision=precision, threads=threads, cache_dir=cache_dir)
        if fingerprint is not None:
            self.ready(fingerprint)
        self.batch_size, self.truncate_dim = batch_size, truncate_dim
        self.text_column, self.title_column, self.output_column = text_column, title_column, output_column

    def ready(self, fingerprint: str) -> str:
        """This actor's model fingerprint; ModelMismatchError unless it is the driver's."""
        if self.embedder.fingerprint != fingerprint:
            raise ModelMismatchError(
                f"a Ray worker's model is {self.embedder.fingerprint}, the driver's is {fingerprint}: install the "
                "same weights (and embed-engine version) on every node, or point --model at shared storage")
        return fingerprint

    def encode(self, texts: list[str], count_tokens: bool = False) -> tuple[np.ndarray, int]:
        """(vectors, tokens) for texts; tokens is 0 unless count_tokens (progress bars)."""
        vectors = self.embedder.encode(texts, batch_size=self.batch_size, truncate_dim=self.truncate_dim)
        tokens = sum(len(t) for t in self.embedder.tokenize(texts)) if count_tokens else 0
        return vectors, tokens

    def __call__(self, batch: dict) -> dict:
        from .readers import compose

        texts = [_str(t) for t in batch[self.text_column]]
        if self.title_column is not None:
            texts = [compose(_str(title), t) for title, t in zip(batch[self.title_column], texts)]
        batch[self.output_column] = self.encode(texts)[0]
        return batch


def _str(value) -> str:
    """numpy/arrow scalars -> str; None stays None so the Embedder names the bad row."""
    return value if value is None or isinstance(value, str) else str(value)


# -- connecting ---------------------------------------------------------------------------
def connect(address: str | None = None) -> bool:
    """Attach to (or start) a Ray cluster; True when this call started one (to shut down after).

    address: None attaches to $RAY_ADDRESS when set, else starts a local cluster; ``"auto"``
    attaches to the cluster running on this machine (``ray start --head``); ``"ray://host:10001"``
    connects through Ray Client; ``"host:6379"`` joins as a driver on a cluster node.
    An already initialized Ray (``ray.init`` called by the caller) is used as it is.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    address = address or None
    if address in (None, "local") and not os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=None if address == "local" else address, log_to_driver=False)
    return True


def _default_actors(cpus_per_actor: float, gpus_per_actor: float) -> int:
    ray = _import_ray()
    res = ray.cluster_resources()
    if gpus_per_actor:
        n = int(res.get("GPU", 0) // gpus_per_actor)
        if n < 1:
            raise InputError(f"the Ray cluster has {res.get('GPU', 0):g} GPUs, fewer than --gpus-per-actor "
                             f"{gpus_per_actor:g}; add GPU nodes or lower --gpus-per-actor")
        return n
    return max(1, int(res.get("CPU", 1) // cpus_per_actor))


def _resources(device: str, precision: str, cpus_per_actor, gpus_per_actor) -> tuple[float, float]:
    if isinstance(cpus_per_actor, bool) or not isinstance(cpus_per_actor, (int, float)) or cpus_per_actor <= 0:
        raise InputError(f"cpus_per_actor must be a positive number, got {cpus_per_actor!r}")
    cuda = str(device).startswith("cuda")
    if gpus_per_actor is None:
        gpus_per_actor = 1 if cuda else 0
    if isinstance(gpus_per_actor, bool) or not isinstance(gpus_per_actor, (int, float)) or gpus_per_actor < 0:
        raise InputError(f"gpus_per_actor must be a number >= 0, got {gpus_per_actor!r}")
    if gpus_per_actor and not cuda:
        raise InputError("gpus_per_actor > 0 needs device='cuda' (--device cuda): the GPUs would sit idle")
    if cuda and not gpus_per_actor:
        raise InputError("device='cuda' needs gpus_per_actor > 0 (--gpus-per-actor 1), or Ray gives actors no GPU")
    if precision == "fp16" and not cuda:
        raise InputError("precision='fp16' runs on CUDA only; use device='cuda' or precision 'fp32'/'int8' on CPU")
    return float(cpus_per_actor), float(gpus_per_actor)


def _driver_model(model, precision: str, cache_dir):
    """Export (or find) the model on the driver.

    Returns (exported, manifest ref, model for the actors, cache_dir for the actors, precision).
    """
    from .driver import _embedder
    from ..embedder import Embedder
    from ..models import DEFAULT_MODEL
    from ..models.export import load_or_export

    if isinstance(model, Embedder):
        exported = model._exported
        _, ref = _embedder(model, None, None, None, None)  # a ready Embedder brings its own precision
        return exported, ref, ref, str(exported.folder.parent.parent), exported.precision
    model = DEFAULT_MODEL if model is None else model
    ref = os.fspath(model)
    if Path(ref).expanduser().is_dir():
        ref = str(Path(ref).expanduser().resolve())
    exported = load_or_export(ref, precision=precision, cache_dir=cache_dir)
    # an explicit cache folder (argument or $EMBED_ENGINE_CACHE) goes to the actors as well; the
    # default (~/.cache/embed-engine) is left to each worker's own home
    explicit = cache_dir if cache_dir is not None else os.environ.get("EMBED_ENGINE_CACHE") or None
    actor_cache = str(Path(explicit).expanduser().resolve()) if explicit is not None else None
    return exported, ref, ref, actor_cache, precision


def _actor_kwargs(actor_model, actor_cache, exported, precision, device, threads, cpus, batch_size, truncate_dim):
    return {"model": actor_model, "precision": precision, "device": device,
            "threads": threads or max(1, int(cpus)), "cache_dir": actor_cache, "batch_size": batch_size,
            "truncate_dim": truncate_dim, "fingerprint": exported.fingerprint}


# -- Ray Data ------------------------------------------------------------------------------
def embed_dataset(ds, model=None, *, text_column: str = "text", title_column: str | None = None,
                  output_column: str = "embedding", precision: str = "fp32", device: str = "cpu",
                  threads: int | None = None, batch_size: int = 32, truncate_dim: int | None = None,
                  cache_dir: str | os.PathLike | None = None, actors: int | tuple[int, int] | None = None,
                  cpus_per_actor: float = 1, gpus_per_actor: float | None = None,
                  ray_batch_size: int = RAY_BATCH):
    """``ds`` with an ``output_column`` of unit float32 vectors, computed by an actor pool (lazy).

    text_column (and title_column, combined as ``engine.corpus.readers.compose`` does) is embedded.
    actors: pool size, or (min, max) to autoscale; default as many as the cluster's CPUs (GPUs)
    allow. threads per actor default to cpus_per_actor. Row order follows Ray Data's
    ``DataContext.execution_options.preserve_order``.
    """
    _import_ray()
    cpus, gpus = _resources(device, precision, cpus_per_actor, gpus_per_actor)
    exported, _, actor_model, actor_cache, precision = _driver_model(model, precision, cache_dir)
    kwargs = _actor_kwargs(actor_model, actor_cache, exported, precision, device, threads, cpus, batch_size,
                           truncate_dim)
    kwargs.update(text_column=text_column, title_column=title_column, output_column=output_column)
    if actors is None:
        actors = _default_actors(cpus, gpus)
    return ds.map_batches(EmbedBatch, fn_constructor_kwargs=kwargs, batch_size=ray_batch_size,
                          batch_format="numpy", concurrency=actors, num_cpus=cpus, num_gpus=gpus or None,
                          max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)


# -- files -> shards ------------------------------------------------------------------------
def embed_corpus_ray(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    model=None,
    *,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1,
    gpus_per_actor: float | None = None,
    precision: str = "fp32",
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int = 32,
    id_field: str = "_id",
    text_field: str = "text",
    title_field: str | None = "title",
    truncate_dim: int | None = None,
    shard_size: int | None = None,
    cache=True,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
    ray_batch_size: int = RAY_BATCH,
):
    """``engine.corpus.embed_corpus`` with the model on Ray actors; same output, same CorpusSummary.

    address: see ``connect`` (a Ray already initialized by the caller is used as it is; a cluster
        this call starts is shut down at the end). actors: default as many as the cluster's CPUs
        (GPUs) allow at cpus_per_actor (gpus_per_actor) each. threads: onnxruntime threads per
        actor, default cpus_per_actor. device='cuda' gives each actor gpus_per_actor (default 1).
    The other arguments are ``embed_corpus``'s; shard_size (default 10,000) and the model settings
    define the output, so a rerun - on Ray or not - must use the same ones.
    """
    from .driver import (
        DEFAULT_SHARD_SIZE,
        ID_BLOCK,
        CorpusSummary,
        Plan,
        _blocks,
        _IdRegistry,
        _open_cache,
        _Progress,
        _Rejects,
        check_options,
    )
    from .readers import Fields, count_records, expand_inputs, iter_documents
    from .shards import OutputDir

    t0 = time.perf_counter()
    ray = _import_ray()
    shard_size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
    check_options(shard_size=shard_size, batch_size=batch_size, ray_batch_size=ray_batch_size,
                  id_field=id_field, text_field=text_field)
    if actors is not None:
        check_options(actors=actors)
    cpus, gpus = _resources(device, precision, cpus_per_actor, gpus_per_actor)
    paths = expand_inputs(inputs)
    exported, model_ref, actor_model, actor_cache, precision = _driver_model(model, precision, cache_dir)
    # settings and manifest exactly as embed_corpus writes them: the outputs are interchangeable
    plan = Plan.build(paths, exported.spec.name, exported.fingerprint, precision, exported.spec.dim, model_ref,
                      Fields(id_field, text_field, title_field or None), truncate_dim, shard_size)
    fields, settings, settings_sha, manifest = plan.fields, plan.settings, plan.settings_sha, plan.manifest
    truncate_dim, dim = plan.truncate_dim, plan.dim
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(OutputDir(out_dir))  # lock and settings check before any cluster starts
        out.check_settings(settings, overwrite)
        if connect(address):
            stack.callback(ray.shutdown)
        n_actors = actors or _default_actors(cpus, gpus)
        kwargs = _actor_kwargs(actor_model, actor_cache, exported, precision, device, threads, cpus, batch_size,
                               truncate_dim)
        pool = stack.enter_context(_ActorPool(ray, n_actors, cpus, gpus, kwargs))
        out.write_manifest(manifest)
        store, owned = _open_cache(cache, cache_dir)
        if owned:
            stack.enter_context(store)
        ns = store.namespace(exported.fingerprint, precision, truncate_dim, dim) if store else None
        rejects = stack.enter_context(_Rejects(out.path, enabled=skip_bad))
        registry = stack.enter_context(_IdRegistry(out.path / ".ids.sqlite"))
        bar = stack.enter_context(_Progress(count_records(paths) if progress else None, progress))
        # enough documents in flight to give every actor INFLIGHT_PER_ACTOR full batches, and at
        # least two shards, so reading and writing overlap with embedding
        max_open = max(2 * shard_size, 2 * n_actors * INFLIGHT_PER_ACTOR * ray_batch_size)
        run = _RayRun(pool, store, ns, out, settings_sha, dim, ray_batch_size, bar, max_open)

        docs = iter_documents(paths, fields, on_bad=rejects.add if skip_bad else None)
        pending = []
        for block in _blocks(docs, min(ID_BLOCK, shard_size)):
            pending.extend(registry.unique(block, rejects.add if skip_bad else None))
            while len(pending) >= shard_size:
                run.shard(pending[:shard_size])
                del pending[:shard_size]
        if pending:
            run.shard(pending)
        run.drain()
        out.remove_shards_from(len(run.records))
        n_docs = sum(r["count"] for r in run.records)
        manifest.update(status="complete", count=n_docs, rejected=rejects.count,
                        shards=[{k: v for k, v in r.items() if k != "settings_sha256"} for r in run.records])
        rejects.finish()
        out.write_manifest(manifest)
    return CorpusSummary(str(out_dir), n_docs, run.embedded, run.hits, run.resumed, rejects.count,
                         len(run.records), run.written, time.perf_counter() - t0)


class RayWorkerError(EngineError, RuntimeError):
    """A Ray actor failed for good (retries spent); the shards written so far are kept."""


class _ActorPool:
    """EmbedBatch actors fed from a queue: at most INFLIGHT_PER_ACTOR calls on each, results as they finish."""

    def __init__(self, ray, n: int, cpus: float, gpus: float, kwargs: dict):
        self.ray = ray
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus or None, max_restarts=MAX_RESTARTS,
                            max_task_retries=MAX_TASK_RETRIES)(EmbedBatch)
        fingerprint = kwargs["fingerprint"]
        self.actors = [remote.remote(**{**kwargs, "fingerprint": None}) for _ in range(n)]
        self.load = [0] * n
        self.queue: deque = deque()
        self.inflight: dict = {}   # ref -> (actor index, tag)
        try:  # wait for every model to load: a missing model or another fingerprint fails here, clearly
            ray.get([a.ready.remote(fingerprint) for a in self.actors])
        except ray.exceptions.RayTaskError as e:
            self.close()
            raise (e.cause if isinstance(e.cause, EngineError) else e) from None
        except ray.exceptions.RayActorError as e:
            self.close()
            raise RayWorkerError(f"a Ray actor could not load the model: {e}") from None

    def submit(self, texts: list[str], tag, count_tokens: bool) -> None:
        self.queue.append((texts, tag, count_tokens))
        self._dispatch()

    def _dispatch(self) -> None:
        while self.queue:
            i = min(range(len(self.actors)), key=self.load.__getitem__)
            if self.load[i] >= INFLIGHT_PER_ACTOR:
                return
            texts, tag, count_tokens = self.queue.popleft()
            self.inflight[self.actors[i].encode.remote(texts, count_tokens)] = (i, tag)
            self.load[i] += 1

    def next(self):
        """(tag, (vectors, tokens)) of a finished call; blocks until one finishes."""
        ray = self.ray
        (ref,), _ = ray.wait(list(self.inflight), num_returns=1)
        i, tag = self.inflight.pop(ref)
        self.load[i] -= 1
        try:
            result = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
            raise RayWorkerError(f"embedding on Ray failed after {MAX_TASK_RETRIES} retries ({e}); the shards "
                                 "written so far are kept: rerun the same command to resume") from e
        self._dispatch()
        return tag, result

    def close(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(a)
        self.actors, self.inflight, self.queue = [], {}, deque()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Shard:
    __slots__ = ("batches", "content", "docs", "fill", "i", "keys", "miss_keys", "miss_rows", "rec", "vectors")

    def __init__(self, i, docs, keys, content, rec):
        self.i, self.docs, self.keys, self.content, self.rec = i, docs, keys, content, rec
        self.vectors = None
        self.batches = 0           # actor calls not back yet
        self.miss_keys: list[bytes] = []
        self.miss_rows: list[int] = []
        self.fill: list[tuple[int, int]] = []  # (row, first row of the same missing text)


class _RayRun:
    """The local path's per-shard work, with the misses embedded by the actor pool, in flight."""

    def __init__(self, pool: _ActorPool, store, ns, out, settings_sha, dim, ray_batch, bar, max_open):
        self.pool, self.store, self.ns, self.out = pool, store, ns, out
        self.settings_sha, self.dim, self.ray_batch, self.bar, self.max_open = settings_sha, dim, ray_batch, bar, max_open
        self.open: deque[_Shard] = deque()
        self.open_docs = 0
        self.records: list[dict] = []
        self.embedded = self.hits = self.resumed = self.written = 0

    def shard(self, docs) -> None:
        from .driver import EMBED_CHUNK, _content_digest

        i = len(self.records) + len(self.open)
        keys = [d.key for d in docs]
        content = _content_digest(docs, keys)
        sh = _Shard(i, docs, keys, content, self.out.completed(i, content, self.settings_sha))
        if sh.rec is None:
            sh.vectors = np.empty((len(docs), self.dim), dtype=np.float32)
            first: dict[bytes, int] = {}   # missing text -> its first row in the shard
            for start in range(0, len(docs), EMBED_CHUNK):
                stop = min(start + EMBED_CHUNK, len(docs))
                if self.store is not None:
                    vectors, found = self.store.get(self.ns, keys[start:stop])
                    sh.vectors[start:stop] = vectors
                else:
                    found = np.zeros(stop - start, bool)
                for j in np.flatnonzero(~found) + start:
                    f = first.setdefault(keys[j], int(j))
                    if f != j:
                        sh.fill.append((int(j), f))
                misses = int((~found).sum())
                self.embedded += misses
                self.hits += stop - start - misses
            sh.miss_rows = list(first.values())
            sh.miss_keys = list(first)
            self.bar.update(len(docs) - len(sh.miss_rows), 0, self)
            for start in range(0, len(sh.miss_rows), self.ray_batch):
                rows = sh.miss_rows[start : start + self.ray_batch]
                self.pool.submit([docs[j].text for j in rows], (sh, rows), self.bar.enabled)
                sh.batches += 1
        else:
            self.resumed += len(docs)
            self.bar.update(len(docs), 0, self)
        self.open.append(sh)
        self.open_docs += len(docs)
        self._flush(self.max_open)

    def drain(self) -> None:
        self._flush(0)

    def _flush(self, limit: int) -> None:
        """Write finished shards in order; wait for results while more than limit docs are open."""
        while self.open:
            head = self.open[0]
            if head.batches == 0:
                self._finish(self.open.popleft())
                continue
            if self.open_docs <= limit:
                return
            (sh, rows), (vectors, tokens) = self.pool.next()
            sh.vectors[rows] = vectors
            sh.batches -= 1
            self.bar.update(len(rows), tokens, self)

    def _finish(self, sh: _Shard) -> None:
        from .shards import snippet

        self.open_docs -= len(sh.docs)
        if sh.rec is None:
            for j, f in sh.fill:
                sh.vectors[j] = sh.vectors[f]
            if self.store is not None and sh.miss_rows:
                self.store.put(self.ns, sh.miss_keys, sh.vectors[sh.miss_rows])
            titles = [snippet(d.title, d.text) for d in sh.docs]
            sh.rec = self.out.write_shard(sh.i, sh.vectors, [d.id for d in sh.docs], titles, sh.content,
                                          self.settings_sha)
            self.written += 1
        self.records.append(sh.rec)
        sh.docs = sh.vectors = None  # free the shard's memory
