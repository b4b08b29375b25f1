"""Embed on a Ray cluster: the same shards and vectors as one machine, with the model on many.

Two entry points (Ray is the ``ray`` extra: ``pip install 'embed-engine[ray]'``):

* ``embed_corpus_ray(inputs, out_dir, model, ...)`` (``embed encode --ray``): the one corpus
  driver (``engine.corpus.driver.drive``) with a pool of Ray actors as its executor. The driver
  reads the inputs, checks ids, defines the shards, talks to the cache and writes every file;
  the actors (``EmbedBatch``, one model each) only turn texts into vectors. The output is the
  local path's (layout, settings, done records), so a run started locally can be finished on Ray
  or the other way round; vectors match to float rounding, not bit for bit.
* ``embed_dataset(ds, model, ...)``: a ``ray.data.Dataset`` with an ``embedding`` column added by
  ``map_batches`` over ``EmbedBatch`` actors; writing it out is the caller's business.

Both export the ONNX model once on the driver; each actor checks that its model's fingerprint
is the driver's and refuses to run otherwise. A dead actor is restarted (``MAX_RESTARTS``) and
its unfinished batches run again (``MAX_TASK_RETRIES``); when the retries are spent the run stops
with ``RayWorkerError``, every shard written so far kept: rerun to resume, as locally. Only the
driver writes, each file atomically and named by its shard position, so a retried batch never
duplicates or drops a row. The cache lives with the driver: it sends only the misses, a text
once while it is in flight (a repeat waits for it and counts as embedded, where a local run
would count a cache hit). This module holds only the Ray side: connecting, resources, actors.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from pathlib import Path
from typing import overload

import numpy as np

from ..arguments import model_precision_argument, positive_int
from ..errors import EngineError, InputError, ModelMismatchError, missing_extra
from .options import DEFAULT_SHARD_SIZE, CorpusOptions

RAY_BATCH = 256  # texts per actor call
INFLIGHT_PER_ACTOR = 2  # calls queued on each actor (one running, one ready)
MAX_RESTARTS = 4  # per actor
MAX_TASK_RETRIES = 4  # per batch, across actor restarts

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
    ``output_column`` (float32 (n, dim)); ``encode(texts)`` -> (vectors, tokens) serves the pool of
    ``embed_corpus_ray``: each actor is a ``LocalExecutor`` on its node (tokens counted when
    count_tokens). threads defaults to the CPUs the actor was given. prompt: the text prepended to
    every text ("" none; None: ``encode``'s default, the model's default prompt if any). normalize:
    L2-normalize the vectors; None: unit vectors for cosine models (``shards.stored_normalized``).
    """

    def __init__(
        self,
        model,
        *,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        cache_dir: str | None = None,
        batch_size: int = 32,
        truncate_dim: int | None = None,
        text_column: str = "text",
        title_column: str | None = None,
        output_column: str = "embedding",
        fingerprint: str | None = None,
        count_tokens: bool = False,
        prompt: str | None = None,
        normalize: bool | None = None,
        runtime: str | None = None,
    ):
        if threads is not None:  # the tokenizer's Rayon pool, sized like onnxruntime's
            os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
        from ..embedder import Embedder
        from .driver import LocalExecutor

        self.embedder = Embedder(
            model, device=device, model_precision=precision, threads=threads, cache_dir=cache_dir, runtime=runtime
        )
        if fingerprint is not None:
            self.ready(fingerprint)
        self.local = LocalExecutor(self.embedder, batch_size, truncate_dim, count_tokens, prompt, normalize)
        self.text_column, self.title_column, self.output_column = text_column, title_column, output_column

    def ready(self, fingerprint: str) -> str:
        """This actor's model fingerprint; ModelMismatchError unless it is the driver's."""
        if self.embedder.fingerprint != fingerprint:
            raise ModelMismatchError(
                f"a Ray worker's model is {self.embedder.fingerprint}, the driver's is {fingerprint}: install the "
                "same weights (and embed-engine version) on every node, or point --model at shared storage"
            )
        return fingerprint

    def encode(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """(vectors, tokens) for texts; tokens is 0 unless count_tokens (progress bars)."""
        return self.local.embed(texts)

    def __call__(self, batch: dict) -> dict:
        from .readers import compose

        texts = [_str(t) for t in batch[self.text_column]]
        if self.title_column is not None:
            texts = [compose(_str(title), t) for title, t in zip(batch[self.title_column], texts)]
        batch[self.output_column] = self.encode(texts)[0]
        return batch


@overload
def _str(value: None) -> None: ...
@overload
def _str(value: object) -> str: ...
def _str(value: object) -> str | None:
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
            raise InputError(
                f"the Ray cluster has {res.get('GPU', 0):g} GPUs, fewer than --gpus-per-actor "
                f"{gpus_per_actor:g}; add GPU nodes or lower --gpus-per-actor"
            )
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
        raise InputError(
            "model_precision='fp16' runs on CUDA only; use device='cuda' or model_precision 'fp32'/'bf16'/'int8' on CPU"
        )
    return float(cpus_per_actor), float(gpus_per_actor)


def _driver_model(model, options: CorpusOptions):
    """Export (or find) the model on the driver, at options' model precision and cache folder.

    Returns (exported, ref, cache_dir for the actors, runtime): ref (``model_ref``) is both what the
    manifest stores and what the actors load; a ready Embedder brings its own precision
    (``exported.precision``), cache folder and runtime. The runtime is the driver's choice, so every
    actor runs the driver's export whatever its own CPU class would pick.
    """
    from ..embedder import Embedder
    from ..models.export import load_or_export
    from ..runtime import choose_runtime
    from .driver import model_ref

    ref = model_ref(model)
    if isinstance(model, Embedder):
        exported = model._exported
        return exported, ref, str(exported.folder.parent.parent), model.runtime
    cache_dir = options.cache_dir
    runtime = choose_runtime(options.model_precision, options.device)
    exported = load_or_export(ref, precision=options.model_precision, cache_dir=cache_dir, runtime=runtime)
    # an explicit cache folder (argument or $EMBED_ENGINE_CACHE) goes to the actors as well; the
    # default (~/.cache/embed-engine) is left to each worker's own home
    explicit = cache_dir if cache_dir is not None else os.environ.get("EMBED_ENGINE_CACHE") or None
    actor_cache = str(Path(explicit).expanduser().resolve()) if explicit is not None else None
    return exported, ref, actor_cache, runtime


def _actor_kwargs(
    ref,
    actor_cache,
    exported,
    options: CorpusOptions,
    cpus: float,
    truncate_dim: int | None,
    prompt: str | None = None,
    normalize: bool | None = None,
    runtime: str | None = None,
) -> dict:
    """``EmbedBatch``'s arguments: the driver's model and runtime, options' device, threads and batch size."""
    return {
        "model": ref,
        "precision": exported.precision,
        "runtime": runtime,
        "device": options.device,
        "threads": options.threads or max(1, int(cpus)),
        "cache_dir": actor_cache,
        "batch_size": options.batch_size,
        "truncate_dim": truncate_dim,
        "fingerprint": exported.fingerprint,
        "prompt": prompt,
        "normalize": normalize,
    }


# -- Ray Data ------------------------------------------------------------------------------
def embed_dataset(
    ds,
    model=None,
    *,
    text_column: str = "text",
    title_column: str | None = None,
    output_column: str = "embedding",
    model_precision: str = "fp32",
    precision: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int = 32,
    truncate_dim: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    actors: int | tuple[int, int] | None = None,
    cpus_per_actor: float = 1,
    gpus_per_actor: float | None = None,
    ray_batch_size: int = RAY_BATCH,
    prompt_name: str | None = None,
    prompt: str | None = None,
    options: CorpusOptions | None = None,
):
    """``ds`` with an ``output_column`` of float32 vectors, computed by an actor pool (lazy).

    The vectors are what ``embed_corpus`` stores: unit length for cosine models, the model's
    output for others. Row order follows Ray Data's ``DataContext.execution_options.preserve_order``.

    Args:
        ds: a ``ray.data.Dataset``.
        model: a catalogue name, a sentence-transformers folder or a ready ``Embedder``.
        text_column: the column embedded; with ``title_column``, title and text are combined as
            ``engine.corpus.readers.compose`` does.
        title_column: the title column, or None.
        output_column: the column the vectors go to.
        precision: the former name of ``model_precision`` (a DeprecationWarning).
        actors: the pool size, or (min, max) to autoscale; default as many as the cluster's CPUs
            (GPUs) allow.
        cpus_per_actor, gpus_per_actor: each actor's resources (threads per actor default to
            cpus_per_actor; gpus_per_actor defaults to 1 with device="cuda").
        ray_batch_size: rows per actor call.
        options: the settings below in one ``CorpusOptions`` instead of the keywords (its fields
            about files and shards are not used here).
        model_precision, device, threads, batch_size, truncate_dim, cache_dir, prompt_name,
            prompt: the ``CorpusOptions`` fields, documented there. The prompt defaults to the
            model's document prompt; for a column of queries pass ``prompt_name="query"``.

    Raises:
        InputError: a bad setting, resources that do not fit the device, or an unknown
            prompt_name (found on the driver, before any actor starts).
        ImportError: Ray is not installed (the message names the extra).
    """
    model_precision = model_precision_argument(model_precision, precision, "embed_dataset")
    _import_ray()
    from .driver import corpus_prompts

    options = CorpusOptions.from_arguments(options, locals())
    cpus, gpus = _resources(options.device, options.model_precision, cpus_per_actor, gpus_per_actor)
    exported, ref, actor_cache, runtime = _driver_model(model, options)
    # an unknown prompt_name fails here, not on a worker
    doc_prompt, _ = corpus_prompts(exported, options.prompt_name, options.prompt)
    kwargs = _actor_kwargs(ref, actor_cache, exported, options, cpus, options.truncate_dim, doc_prompt, runtime=runtime)
    kwargs.update(text_column=text_column, title_column=title_column, output_column=output_column)
    if actors is None:
        actors = _default_actors(cpus, gpus)
    return ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs=kwargs,
        batch_size=ray_batch_size,
        batch_format="numpy",
        concurrency=actors,
        num_cpus=cpus,
        num_gpus=gpus or None,
        max_restarts=MAX_RESTARTS,
        max_task_retries=MAX_TASK_RETRIES,
    )


# -- files -> shards ------------------------------------------------------------------------
def embed_corpus_ray(
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
    ray_batch_size: int = RAY_BATCH,
    format: str | None = None,
    prompt_name: str | None = None,
    prompt: str | None = None,
    output_format: str = "npy",
    options: CorpusOptions | None = None,
):
    """``engine.corpus.embed_corpus`` with the model on Ray actors; same output, same CorpusSummary.

    Args:
        inputs, out_dir, model: as ``embed_corpus`` takes them (inputs are read on the driver:
            files, stdin or an in-memory source).
        address: see ``connect`` (a Ray already initialized by the caller is used as it is; a
            cluster this call starts is shut down at the end).
        actors: default as many as the cluster's CPUs (GPUs) allow at cpus_per_actor
            (gpus_per_actor) each.
        cpus_per_actor, gpus_per_actor: each actor's resources; device="cuda" gives each actor
            gpus_per_actor (default 1).
        ray_batch_size: texts per actor call.
        precision: the former name of ``model_precision`` (a DeprecationWarning).
        options: every other setting in one ``CorpusOptions``, instead of the keywords.
        model_precision, device, threads, batch_size, id_field, text_field, title_field,
            truncate_dim, shard_size, cache, skip_bad, overwrite, progress, cache_dir, format,
            prompt_name, prompt, output_format: the ``CorpusOptions`` fields, documented there
            (shard_size None is the default, 10,000; threads are per actor, default
            cpus_per_actor). The settings define the output, so a rerun, on Ray or not, must use
            the same ones.

    Returns:
        A ``CorpusSummary``, as ``embed_corpus``'s.

    Raises:
        InputError: as ``embed_corpus``, and for Ray settings that are not positive or do not
            fit the device.
        RayWorkerError: an actor failed for good (the shards written so far are kept).
        ImportError: Ray is not installed (the message names the extra).
    """
    model_precision = model_precision_argument(model_precision, precision, "embed_corpus_ray")
    from .driver import Plan, drive
    from .readers import expand_inputs

    t0 = time.perf_counter()
    ray = _import_ray()
    shard_size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
    options = CorpusOptions.from_arguments(options, locals())
    positive_int(ray_batch_size, "ray_batch_size")
    if actors is not None:
        positive_int(actors, "actors")
    cpus, gpus = _resources(options.device, options.model_precision, cpus_per_actor, gpus_per_actor)
    sources = expand_inputs(inputs, options.format)
    exported, ref, actor_cache, runtime = _driver_model(model, options)
    plan = Plan.build(sources, exported, ref, options)
    kwargs = _actor_kwargs(
        ref, actor_cache, exported, options, cpus, plan.truncate_dim, plan.prompt, plan.normalize, runtime=runtime
    )
    pool = _pool(ray, address, actors, cpus, gpus, {**kwargs, "count_tokens": options.progress}, ray_batch_size)
    return drive(plan, out_dir, pool, t0=t0)


class RayWorkerError(EngineError, RuntimeError):
    """A Ray actor failed for good (retries spent); the shards written so far are kept."""


@contextlib.contextmanager
def _pool(ray, address, actors, cpus: float, gpus: float, kwargs: dict, batch: int):
    """The driver's executor: connect (a cluster this starts is shut down after), then the actor pool."""
    started = connect(address)
    try:
        with _ActorPool(ray, actors or _default_actors(cpus, gpus), cpus, gpus, kwargs, batch) as pool:
            yield pool
    finally:
        if started:
            ray.shutdown()


class _ActorPool:
    """The Ray executor of ``engine.corpus.driver.drive``: EmbedBatch actors fed from a queue, at
    most INFLIGHT_PER_ACTOR calls on each, results as they finish (submit / next, see the driver)."""

    def __init__(self, ray, n: int, cpus: float, gpus: float, kwargs: dict, batch: int = RAY_BATCH):
        self.ray, self.batch = ray, batch
        remote = ray.remote(
            num_cpus=cpus, num_gpus=gpus or None, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES
        )(EmbedBatch)
        fingerprint = kwargs["fingerprint"]
        self.actors = [remote.remote(**{**kwargs, "fingerprint": None}) for _ in range(n)]
        self.capacity = n * INFLIGHT_PER_ACTOR * batch  # texts on the actors at once
        self.load = [0] * n
        self.queue: deque = deque()
        self.inflight: dict = {}  # ref -> (actor index, tag)
        try:  # wait for every model to load: a missing model or another fingerprint fails here, clearly
            ray.get([a.ready.remote(fingerprint) for a in self.actors])
        except ray.exceptions.RayTaskError as e:
            self.close()
            raise (e.cause if isinstance(e.cause, EngineError) else e) from None
        except ray.exceptions.RayActorError as e:
            self.close()
            raise RayWorkerError(f"a Ray actor could not load the model: {e}") from None

    def submit(self, texts: list[str], tag) -> None:
        self.queue.append((texts, tag))
        self._dispatch()

    def _dispatch(self) -> None:
        while self.queue:
            i = min(range(len(self.actors)), key=self.load.__getitem__)
            if self.load[i] >= INFLIGHT_PER_ACTOR:
                return
            texts, tag = self.queue.popleft()
            self.inflight[self.actors[i].encode.remote(texts)] = (i, tag)
            self.load[i] += 1

    def next(self) -> tuple[object, np.ndarray, int]:
        """(tag, vectors, tokens) of a finished call; blocks until one finishes."""
        ray = self.ray
        (ref,), _ = ray.wait(list(self.inflight), num_returns=1)
        i, tag = self.inflight.pop(ref)
        self.load[i] -= 1
        try:
            vectors, tokens = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
            raise RayWorkerError(
                f"embedding on Ray failed after {MAX_TASK_RETRIES} retries ({e}); the shards "
                "written so far are kept: rerun the same command to resume"
            ) from e
        self._dispatch()
        return tag, vectors, tokens

    def close(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(a)
        self.actors, self.inflight, self.queue = [], {}, deque()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
