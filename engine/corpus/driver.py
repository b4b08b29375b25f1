"""The corpus driver: stream a corpus into resumable shards, embedding only what is new.

There is one driver (``drive``) and two executors, which only turn lists of texts into vectors:
``LocalExecutor`` (the Embedder in this process: ``embed_corpus``) and the Ray actor pool
(``engine.corpus.ray``). Reading, duplicate ids, shards, resume, the cache and the manifest are
the driver's, so every path writes the same output::

    inputs -> readers (one record at a time) -> duplicate-id check -> shard i = docs [i*S, (i+1)*S)
      -> shard already complete? keep it
         : per chunk of EMBED_CHUNK docs: cache lookup -> misses not in flight -> executor.submit
      executor.next() -> cache insert -> vectors into every row waiting for those texts
      -> shards whose rows are all filled, in order: write shard -> ... -> manifest

An entry point checks its settings (``CorpusOptions``), builds a ``Plan`` and an ``Executor`` and
calls ``drive``. Memory is bounded by the shards in flight, not by the corpus: one shard locally,
at most max(2 shards, 2 x the executor's capacity) documents with a background executor; the ids
seen so far live in a scratch SQLite file in OUTDIR.

Duplicate ids are an InputError naming the id and both places (``skip_bad``: the later ones are
skipped and listed in rejects.jsonl). Exactly once: kill the run at any moment and rerun the same
call; a shard is kept only when its done record matches (settings, the digest of the documents
this run reads at its position, file checksums), the rest is written, and the output is
byte-identical to an uninterrupted run. ``engine.corpus.readers`` describes the inputs and ids,
``engine.corpus.shards`` the output layout.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import os
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from ..arguments import model_precision_argument
from ..errors import InputError
from .options import DEFAULT_SHARD_SIZE, CorpusOptions
from .readers import (
    SKIP_HINT,
    Doc,
    Input,
    Source,
    count_records,
    detect_format,
    display_text,
    expand_inputs,
    iter_documents,
)
from .shards import (
    DEFAULT_OUTPUT_FORMAT,
    FORMAT,
    REJECTS,
    VERSION,
    OutputDir,
    json_bytes,
    settings_digest,
    snippet,
    stored_normalized,
)

EMBED_CHUNK = 1024  # documents per cache lookup / local encode call / cache transaction
ID_BLOCK = 1000  # documents per duplicate-id query
TEXT_FORMAT = 2  # bump if the way title and text are combined changes; 2: BEIR's (title + " " + text).strip()


@dataclass(frozen=True)
class CorpusSummary:
    """What one ``embed_corpus`` run did. docs = embedded + cache_hits + resumed."""

    out_dir: str
    docs: int  # documents in the output
    embedded: int  # documents the model embedded in this run (cache misses)
    cache_hits: int  # documents whose vectors came from the embedding cache
    resumed: int  # documents in shards kept from an earlier run (not looked at again)
    rejected: int  # bad records skipped (skip_bad); listed in OUTDIR/rejects.jsonl
    shards: int
    shards_written: int  # shards written by this run (the rest were kept)
    seconds: float

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "docs_per_s": self.docs_per_s}

    def __str__(self) -> str:
        return (
            f"{self.docs} docs in {self.shards} shards ({self.shards_written} written, "
            f"{self.shards - self.shards_written} kept) -> {self.out_dir}\n"
            f"embedded {self.embedded}, cache hits {self.cache_hits}, resumed {self.resumed}, "
            f"rejected {self.rejected}; {self.seconds:.1f}s, {self.docs_per_s:,.1f} docs/s"
        )


def embed_corpus(
    inputs,
    out_dir: str | os.PathLike,
    model=None,
    *,
    model_precision: str = "fp32",
    precision: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int = 32,
    id_field: str | None = "_id",
    text_field: str = "text",
    title_field: str | None = "title",
    truncate_dim: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    cache=True,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
    format: str | None = None,
    prompt_name: str | None = None,
    prompt: str | None = None,
    output_format: str = DEFAULT_OUTPUT_FORMAT,
    options: CorpusOptions | None = None,
) -> CorpusSummary:
    """Embed every document of ``inputs`` into resumable shards in ``out_dir``.

    Args:
        inputs: a path or glob, ``"-"`` (stdin), a list of those, or one in-memory source: a
            pandas DataFrame, a pyarrow Table / RecordBatchReader / dataset, a Hugging Face
            Dataset, an iterable of dicts (records) or of strings (documents; a *list* of strings
            is a list of paths, so pass ``iter(texts)``). See ``engine.corpus.readers``.
        out_dir: the output folder (``engine.corpus.shards`` describes its files); a rerun into
            it resumes.
        model: a catalogue name, a sentence-transformers folder, or a ready ``Embedder``
            (default all-MiniLM-L6-v2).
        precision: the former name of ``model_precision`` (a DeprecationWarning).
        options: every other setting in one ``CorpusOptions``, instead of the keywords.
        model_precision, device, threads, batch_size, id_field, text_field, title_field,
            truncate_dim, shard_size, cache, skip_bad, overwrite, progress, cache_dir, format,
            prompt_name, prompt, output_format: the ``CorpusOptions`` fields, documented there.

    Returns:
        A ``CorpusSummary`` of the run. The manifest records the settings, the document and query
        prompts (``embed search`` applies the query one), the model's similarity_fn_name and
        whether the vectors are normalized.

    Raises:
        InputError: a bad setting (``CorpusOptions``), bad input (a record, a duplicate id: unless
            ``skip_bad``), an output folder inside the inputs, or one written with other settings
            (unless ``overwrite``).
        ModelMismatchError: the output folder was written by another model.
    """
    model_precision = model_precision_argument(model_precision, precision, "embed_corpus")
    options = CorpusOptions.from_arguments(options, locals())  # the settings: the keywords named like its fields
    t0 = time.perf_counter()
    sources = expand_inputs(inputs, options.format)
    check_output_outside_inputs(out_dir, sources, inputs)  # before a model is loaded
    embedder = _embedder(model, options)
    plan = Plan.build(sources, embedder, model_ref(model), options)
    executor = LocalExecutor(
        embedder,
        options.batch_size,
        plan.truncate_dim,
        count_tokens=options.progress,
        prompt=plan.prompt,
        normalize=plan.normalize,
    )
    return drive(plan, out_dir, executor, t0=t0)


# files an OUTDIR holds that a reader would take as a corpus
_OUTPUT_FILES = ("shard-00000.jsonl", "shard-00000.parquet", REJECTS)


def check_output_outside_inputs(out_dir: str | os.PathLike, sources: Sequence[Input], patterns=None) -> None:
    """An InputError when OUTDIR is inside what the run reads: an input file inside it (a rerun
    would read its own shards, and --overwrite would delete its input), or, for the glob patterns
    given (``patterns``: the inputs as passed), a pattern that matches the files OUTDIR will hold."""
    out = Path(os.path.realpath(out_dir))
    for src in sources:
        if isinstance(src, Path) and Path(os.path.realpath(src)).is_relative_to(out):
            raise InputError(
                f"the input {src} is inside the output folder {out_dir}: the run would read its own "
                "output. Write the output elsewhere (-o/--out), or leave that folder out of the inputs"
            )
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    if not isinstance(patterns, (list, tuple)):
        return
    for pat in patterns:
        if (
            isinstance(pat, (str, os.PathLike))
            and glob.has_magic(os.fspath(pat))
            and any(_glob_matches(os.fspath(pat), os.path.join(os.path.abspath(out_dir), f)) for f in _OUTPUT_FILES)
        ):
            raise InputError(
                f"the input pattern {os.fspath(pat)!r} matches the files of the output folder {out_dir} "
                "(its shards, rejects.jsonl): a rerun would read its own output. Write the output "
                "outside the pattern (-o/--out), or narrow the pattern"
            )


def _glob_matches(pattern: str, path: str) -> bool:
    """Whether ``glob.glob(pattern, recursive=True)`` would list ``path`` (were it there): per path
    component, ``**`` any number of folders, ``*`` ``?`` ``[..]`` within one component."""
    pat = os.path.abspath(pattern).split(os.sep)
    parts = os.path.abspath(path).split(os.sep)

    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(parts)
        if pat[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(parts) + (i + 1 == len(pat))))
        return j < len(parts) and fnmatch.fnmatchcase(parts[j], pat[i]) and match(i + 1, j + 1)

    return match(0, 0)


def model_ref(model) -> str:
    """What the manifest stores for ``embed search`` to load the model: its name or resolved folder.

    model: a catalogue name, a folder, None (the default model) or a ready ``Embedder``.
    """
    from ..embedder import Embedder
    from ..models import DEFAULT_MODEL

    if isinstance(model, Embedder):
        source = getattr(model, "_exported", None)
        source = source.meta.get("source", "") if source is not None else ""
        return source[len("local:") :] if source.startswith("local:") else model.name
    ref = os.fspath(DEFAULT_MODEL if model is None else model)
    return str(Path(ref).expanduser().resolve()) if Path(ref).expanduser().is_dir() else ref


@dataclass(frozen=True)
class Plan:
    """One run: its inputs and options, and what the model makes of them: the output's settings
    (a rerun must match them) and its manifest.

    Built by each entry point from its model (``Plan.build``), so the local and the Ray outputs are
    interchangeable.
    """

    inputs: tuple[Input, ...]  # expand_inputs' files and sources
    options: CorpusOptions
    settings: dict
    settings_sha: str
    manifest: dict
    truncate_dim: int | None  # None for the full dimension
    dim: int
    prompt: str = ""  # the text prepended to every document ("": none)
    normalize: bool = True  # whether the vectors are L2-normalized (shards.stored_normalized)

    @classmethod
    def build(cls, inputs: Sequence[Input], model, ref: str, options: CorpusOptions) -> Plan:
        """The plan of a run over ``inputs`` with ``options``.

        Args:
            inputs: ``expand_inputs``' files and sources (the manifest records them).
            model: an ``Embedder`` or an ``ExportedModel`` (its spec, fingerprint, precision and
                module stack).
            ref: what the manifest names the model by (``model_ref``).
            options: the run's settings, checked (``CorpusOptions``).

        Returns:
            The Plan. Its settings hold the document prompt's text only when there is one, and the
            output format only when it is not npy, so outputs written before prompts and Parquet
            existed (and every npy run without a prompt) keep their settings digest. The manifest
            always records ``output_format``; its ``prompts`` ({"document", "query"}: texts, ""
            for none), ``similarity_fn_name`` and ``normalize`` tell ``embed search`` how to embed
            queries and score them.

        Raises:
            InputError: ``truncate_dim`` is not in [1, the model's dimension], or ``prompt_name``
                is not one of the model's prompts.
        """
        full_dim, fingerprint, precision = model.stack.dim, model.fingerprint, model.precision
        doc_prompt, query_prompt = corpus_prompts(model, options.prompt_name, options.prompt)
        similarity = model.stack.similarity_fn_name
        normalize = stored_normalized(similarity)  # unit vectors for cosine models only
        truncate_dim = options.truncate_dim
        if truncate_dim is not None and (
            isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or not 1 <= truncate_dim <= full_dim
        ):
            raise InputError(f"truncate_dim must be an integer in [1, {full_dim}] or None, got {truncate_dim!r}")
        if truncate_dim == full_dim:
            truncate_dim = None
        dim = truncate_dim or full_dim
        fields = options.record_fields
        settings = {
            "model": fingerprint,
            "precision": precision,
            "truncate_dim": truncate_dim,
            "normalize": normalize,
            "dim": dim,
            "id_field": fields.id,
            "text_field": fields.text,
            "title_field": fields.title,
            "shard_size": options.shard_size,
            "text_format": TEXT_FORMAT,
        }
        if doc_prompt:
            settings["prompt"] = doc_prompt
        if options.output_format != DEFAULT_OUTPUT_FORMAT:
            settings["output_format"] = options.output_format
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "status": "in_progress",
            "settings": settings,
            "output_format": options.output_format,
            "model": {"name": model.spec.name, "ref": ref, "fingerprint": fingerprint, "precision": precision},
            "dim": dim,
            "truncate_dim": truncate_dim,
            "normalize": normalize,
            "similarity_fn_name": similarity,
            "prompts": {"document": doc_prompt, "query": query_prompt},
            "inputs": _inputs_info(inputs, options.format),
        }
        return cls(
            tuple(inputs),
            options,
            settings,
            settings_digest(settings),
            manifest,
            truncate_dim,
            dim,
            doc_prompt,
            normalize,
        )


def corpus_prompts(model, prompt_name: str | None = None, prompt: str | None = None) -> tuple[str, str]:
    """(document prompt, query prompt) texts for a corpus, "" for none.

    The document prompt is ``prompt`` / ``prompt_name`` resolved as ``Embedder.resolve_prompt``
    does, or without either what ``encode_document`` prepends (the model's "document", "passage"
    or "corpus" prompt); the query prompt is what ``encode_query`` prepends (the "query" prompt).
    model: an ``Embedder``, or an ``ExportedModel`` (the Ray driver, which loads no session):
    the rules only read its module stack (``stack.prompts`` always holds "query" and "document").
    """
    from ..embedder import Embedder

    stack = model.stack
    if prompt is None and prompt_name is None:
        prompt_name = next((n for n in ("document", "passage", "corpus") if n in stack.prompts), None)
    doc = Embedder.resolve_prompt(model, prompt, prompt_name)  # reads model.stack only
    return doc or "", stack.prompts.get("query", "")


# -- executors ------------------------------------------------------------------------------
class Executor(Protocol):
    """Turns lists of texts into vectors for ``drive`` (see the module docstring for the data flow).

    A context manager, entered after the settings check. ``next`` returns (tag, vectors float32
    (n, dim), tokens) of a finished submit, in any order, blocking until one is; tokens is 0
    unless the executor counts them.
    """

    batch: int  # the most texts one submit may carry
    capacity: int  # texts it embeds at once; 0 when submit embeds before it returns

    def submit(self, texts: list[str], tag) -> None:
        """Queue texts; ``tag`` comes back from ``next`` with their vectors."""

    def next(self) -> tuple[object, np.ndarray, int]:
        """(tag, vectors, tokens) of a finished submit, in any order; blocks until one is."""

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc) -> None: ...


class LocalExecutor:
    """The Embedder in this process: each submit is embedded before it returns (capacity 0).

    batch is EMBED_CHUNK, so each chunk's misses are one ``encode`` call (sorted by length there).
    Ray actors run one too (``engine.corpus.ray.EmbedBatch``). normalize: L2-normalize the vectors
    (after truncation); None: the stored-vector rule for the embedder's model
    (``shards.stored_normalized``: unit vectors for cosine models), what ``Plan.normalize`` says.
    """

    batch = EMBED_CHUNK
    capacity = 0

    def __init__(
        self,
        embedder,
        batch_size: int = 32,
        truncate_dim: int | None = None,
        count_tokens: bool = False,
        prompt: str | None = None,
        normalize: bool | None = None,
    ):
        self.embedder, self.batch_size, self.truncate_dim = embedder, batch_size, truncate_dim
        self.count_tokens, self.prompt = count_tokens, prompt
        self.normalize = stored_normalized(embedder.stack.similarity_fn_name) if normalize is None else normalize
        self._done: deque = deque()

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """(vectors, tokens) for texts; tokens is 0 unless count_tokens (progress bars).

        ``prompt`` is ``encode``'s: the text prepended ("" none; None the model's default prompt).
        """
        vectors = self.embedder.encode(
            texts,
            batch_size=self.batch_size,
            truncate_dim=self.truncate_dim,
            prompt=self.prompt,
            normalize_embeddings=self.normalize,
        )
        tokens = 0
        if self.count_tokens:
            tokens = sum(len(t) for t in self.embedder.tokenize([(self.prompt or "") + t for t in texts]))
        return vectors, tokens

    def submit(self, texts: list[str], tag) -> None:
        self._done.append((tag, *self.embed(texts)))

    def next(self) -> tuple[object, np.ndarray, int]:
        return self._done.popleft()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self._done.clear()


# -- the driver -----------------------------------------------------------------------------
def drive(
    plan: Plan,
    out_dir: str | os.PathLike,
    executor: contextlib.AbstractContextManager[Executor],
    *,
    t0: float | None = None,
) -> CorpusSummary:
    """Write ``plan``'s corpus to ``out_dir`` with ``executor`` embedding the cache misses.

    Args:
        plan: the run (``Plan.build``); its options' cache, cache_dir, skip_bad, overwrite and
            progress apply here.
        out_dir: the output folder.
        executor: an ``Executor``, or a context manager that gives one (``engine.corpus.ray``'s
            pool); entered after the output folder is locked and its settings checked (so a Ray
            cluster starts only for a run that can go ahead), closed at the end.
        t0: when the run started (``perf_counter``), for the summary's seconds.

    Returns:
        The run's ``CorpusSummary``.

    Raises:
        InputError: bad input, duplicate ids (unless skip_bad), an output folder inside the
            inputs or written with other settings (unless overwrite).
    """
    t0 = time.perf_counter() if t0 is None else t0
    options = plan.options
    check_output_outside_inputs(out_dir, plan.inputs)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(OutputDir(out_dir))
        out.check_settings(plan.settings, options.overwrite)
        ex = stack.enter_context(executor)
        manifest = dict(plan.manifest)  # the plan stays as built: it can drive another run
        out.write_manifest(manifest)
        store, owned = _open_cache(options.cache, options.cache_dir)
        if owned:
            stack.enter_context(store)
        ns = (
            store.namespace(
                plan.settings["model"],
                plan.settings["precision"],
                plan.truncate_dim,
                plan.dim,
                normalize=plan.normalize,
                prompt=plan.prompt,
            )
            if store
            else None
        )
        rejects = stack.enter_context(_Rejects(out.path, enabled=options.skip_bad))
        registry = stack.enter_context(_IdRegistry(out.path / ".ids.sqlite"))
        total = count_records(plan.inputs, options.format) if options.progress else None
        bar = stack.enter_context(_Progress(total, options.progress))
        shard_size = options.shard_size
        # with an executor that works in the background, enough documents open to keep it busy
        # (twice what it embeds at once) and at least two shards, so reading and writing overlap
        window = max(2 * shard_size, 2 * ex.capacity) if ex.capacity else 0
        run = _Run(ex, store, ns, out, plan, bar, window)

        on_bad = rejects.add if options.skip_bad else None
        pending: list[Doc] = []
        docs = iter_documents(plan.inputs, options.record_fields, on_bad, options.format)
        for block in _blocks(docs, min(ID_BLOCK, shard_size)):
            pending.extend(registry.unique(block, on_bad))
            while len(pending) >= shard_size:
                run.shard(pending[:shard_size])
                del pending[:shard_size]
        if pending:
            run.shard(pending)
        run.flush(0)
        out.remove_shards_from(len(run.records))
        n_docs = sum(r["count"] for r in run.records)
        manifest.update(
            status="complete",
            count=n_docs,
            rejected=rejects.count,
            inputs=[
                src.info() if isinstance(src, Source) else info  # rows read, stdin's format
                for src, info in zip(plan.inputs, plan.manifest["inputs"])
            ],
            shards=[{k: v for k, v in r.items() if k != "settings_sha256"} for r in run.records],
        )
        rejects.finish()
        out.write_manifest(manifest)
    return CorpusSummary(
        str(out_dir),
        n_docs,
        run.embedded,
        run.hits,
        run.resumed,
        rejects.count,
        len(run.records),
        run.written,
        time.perf_counter() - t0,
    )


class _Shard:
    """A shard on its way: rows filled from the cache at once, from the executor as results come."""

    __slots__ = ("content", "docs", "i", "keys", "rec", "vectors", "waiting")

    def __init__(self, i: int, docs: list[Doc], keys: list[bytes], content: str, rec: dict | None):
        self.i, self.docs, self.keys, self.content, self.rec = i, docs, keys, content, rec
        self.vectors: np.ndarray | None = None
        self.waiting = 0  # rows still without a vector


class _Run:
    """The per-shard work: resume check, cache lookup, submits, results, shards written in order.

    A text is submitted once while it is in flight: its repeats (in the chunk, or in a later chunk
    or shard before its result is back) wait for that result. Shards stay open while their results
    are out, up to ``window`` documents. With capacity 0 (local; window 0) every result is taken,
    and inserted into the cache, before the next cache lookup, and each shard is written before
    reading on: memory is one shard, and a repeat in a later chunk is a cache hit (or, without a
    cache, embedded again).
    """

    def __init__(self, executor: Executor, store, ns, out: OutputDir, plan: Plan, bar, window: int):
        self.executor, self.store, self.ns, self.out, self.bar, self.window = executor, store, ns, out, bar, window
        self.settings_sha, self.dim = plan.settings_sha, plan.dim
        self.open: deque[_Shard] = deque()  # shards read, not written yet, in order
        self.open_docs = 0
        self.rows: dict[bytes, list[tuple[_Shard, int]]] = {}  # text in flight -> its repeats waiting for it
        self.submits = 0  # submits not back yet
        self.records: list[dict] = []
        self.embedded = self.hits = self.resumed = self.written = 0

    def shard(self, docs: list[Doc]) -> None:
        i = len(self.records) + len(self.open)
        keys = [d.key for d in docs]
        content = _content_digest(docs, keys)
        sh = _Shard(i, docs, keys, content, self.out.completed(i, content, self.settings_sha))
        self.open_docs += len(docs)
        if sh.rec is None:
            sh.vectors = np.empty((len(docs), self.dim), dtype=np.float32)
            for start in range(0, len(docs), EMBED_CHUNK):
                self._submit(sh, start, min(start + EMBED_CHUNK, len(docs)))
                self.flush(self.window)  # local: every result in (and cached) before the next lookup
        else:
            self.resumed += len(docs)
            self.bar.update(len(docs), 0, self)
        self.open.append(sh)
        self.flush(self.window)

    def _submit(self, sh: _Shard, start: int, stop: int) -> None:
        """Cache lookup for rows [start, stop); a missing text not already submitted goes to the executor."""
        assert sh.vectors is not None  # shard() allocates them before the first submit
        if self.store is not None:
            sh.vectors[start:stop], found = self.store.get(self.ns, sh.keys[start:stop])
        else:
            found = np.zeros(stop - start, bool)
        missing = (np.flatnonzero(~found) + start).tolist()
        new: list[int] = []  # rows whose text goes to the executor
        for j in missing:
            repeats = self.rows.get(sh.keys[j])
            if repeats is None:
                self.rows[sh.keys[j]] = []
                new.append(j)
            else:
                repeats.append((sh, j))
        sh.waiting += len(missing)
        self.embedded += len(missing)
        self.hits += stop - start - len(missing)
        self.bar.update(stop - start - len(missing), 0, self)
        for b in range(0, len(new), self.executor.batch):
            part = new[b : b + self.executor.batch]
            self.executor.submit([sh.docs[j].text for j in part], (sh, part))
            self.submits += 1

    def flush(self, limit: int) -> None:
        """Write finished shards in order; take results while more than limit documents are open."""
        while True:
            if self.open and self.open[0].waiting == 0:
                self._write(self.open.popleft())
            elif self.submits and self.open_docs > limit:
                self._receive()
            else:
                return

    def _receive(self) -> None:
        tag, vectors, tokens = self.executor.next()
        sh, rows = cast("tuple[_Shard, list[int]]", tag)  # the tag _submit gave
        self.submits -= 1
        assert sh.vectors is not None  # a shard with a submit has its vectors (shard())
        sh.vectors[rows] = vectors
        sh.waiting -= len(rows)
        keys = [sh.keys[j] for j in rows]
        filled = len(rows)
        for i, key in enumerate(keys):
            for other, j in self.rows.pop(key):  # repeats that waited for this text
                assert other.vectors is not None  # it waits: it was submitted (shard())
                other.vectors[j] = vectors[i]
                other.waiting -= 1
                filled += 1
        if self.store is not None:
            self.store.put(self.ns, keys, vectors)
        self.bar.update(filled, tokens, self)

    def _write(self, sh: _Shard) -> None:
        self.open_docs -= len(sh.docs)
        if sh.rec is None:
            assert sh.vectors is not None  # a shard not kept got its vectors in shard()
            titles = [snippet(d.title, d.text) for d in sh.docs]
            sh.rec = self.out.write_shard(
                sh.i, sh.vectors, [d.id for d in sh.docs], titles, sh.content, self.settings_sha
            )
            self.written += 1
        self.records.append(sh.rec)


def _content_digest(docs: Iterable[Doc], keys: Iterable[bytes]) -> str:
    """sha256 over each document's id, title and text hash: what a shard's files are a function of.

    Resume compares it, not the inputs' names: a rerun over an edited file, a changed DataFrame or
    another stdin redoes exactly the shards whose documents changed.
    """
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


def _embedder(model, options: CorpusOptions):
    """model itself when it is an Embedder, else the Embedder it names, built with options' model settings."""
    from ..embedder import Embedder
    from ..models import DEFAULT_MODEL

    if isinstance(model, Embedder):
        return model
    model = DEFAULT_MODEL if model is None else model
    return Embedder(
        model,
        device=options.device,
        model_precision=options.model_precision,
        threads=options.threads,
        cache_dir=options.cache_dir,
    )


def _open_cache(cache, cache_dir):
    """(cache or None, whether this run opened it and must close it)."""
    from .cache import EmbeddingCache, default_cache_path

    if cache is False or cache is None:
        return None, False
    if isinstance(cache, EmbeddingCache):
        return cache, False
    path = default_cache_path(cache_dir) if cache is True else Path(cache).expanduser()
    return EmbeddingCache(path), True


def _inputs_info(inputs: Sequence[Input], format: str | None = None) -> list[dict]:
    """The manifest's record of the inputs (informational: resume checks each shard's documents)."""
    out = []
    for src in inputs:
        if isinstance(src, Source):
            out.append(src.info())
        else:
            st = src.stat()
            out.append(
                {"path": str(src), "format": detect_format(src, format), "size": st.st_size, "mtime": st.st_mtime}
            )
    return out


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
                msg = f"duplicate id {d.id!r} (first seen at {display_text(first)})"
                if on_bad is None:
                    raise InputError(
                        f"{d.where}: {msg}. Ids must be unique: deduplicate the input, choose "
                        f"another id field with --id-field, {SKIP_HINT} (the first one is kept)."
                    )
                on_bad(d.where, msg)
                continue
            new[d.id] = d.where
            out.append(d)
        self._db.execute("BEGIN")
        # where: display text only; a file name that is not UTF-8 keeps its bytes as escapes
        self._db.executemany("INSERT INTO ids VALUES (?, ?)", ((i, display_text(w)) for i, w in new.items()))
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
        self._f = open(self.partial, "wb") if enabled else None  # noqa: SIM115 (held open across add() calls)

    def add(self, where: str, message: str) -> None:
        assert self._f is not None, "add() is called only when enabled (skip_bad)"
        self.count += 1
        self._f.write(json_bytes({"where": where, "error": message}) + b"\n")

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
        self._bar.set_postfix_str(
            f"{rate:,.0f} tok/s, embedded {run.embedded}, hits {run.hits}, resumed {run.resumed}", refresh=False
        )
        self._bar.update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
