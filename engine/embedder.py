"""``Embedder``: text in, the vectors sentence-transformers computes out (float32).

(prompt) -> tokenize (truncate as sentence-transformers) -> length-sorted token-budget batches
(padded on the tokenizer's side) -> onnxruntime -> the model's module stack: Pooling (every mode,
prompt tokens left out when include_prompt is False), Dense, LayerNorm, Normalize
(kernels/pooling.py) -> optional Matryoshka truncation -> L2 normalization when asked (by default
for models whose similarity is cosine).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .batching import pad_batch, plan_batches
from .errors import InputError, UnsupportedModelError
from .kernels import l2_normalize, truncate_normalize
from .kernels.pooling import dense, exclude_prompt, layer_norm, normalize, pool
from .models import DEFAULT_MODEL
from .models.stack import Dense, LayerNorm, Normalize
from .runtime import Session
from .tokenize import Tokenizer

# Texts are tokenized and batched this many at a time, so memory does not grow with the input.
CHUNK = 4096

# CPU batches hold at most this many attention cells per head (rows x tokens^2) unless the
# caller sets max_tokens; chosen with bench/token_budget.py (bench/int8_experiments.md).
CPU_MAX_CELLS = 2 * 256 * 256


def _check_texts(texts) -> tuple[list[str], bool]:
    if isinstance(texts, str):
        return [texts], True
    if texts is None:
        raise InputError("texts is None; pass a string or a list of strings")
    if isinstance(texts, (bytes, bytearray)):
        raise InputError("texts is bytes; decode it first, e.g. texts.decode('utf-8')")
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if not isinstance(texts, Iterable):
        raise InputError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(
                f"texts[{i}] is {type(t).__name__} ({t!r:.60}), not str; convert or drop it "
                "(e.g. [str(t) for t in texts] or filter out None)"
            )
    return out, False


class Embedder:
    """A sentence-transformer model on onnxruntime.

    Parameters
    ----------
    model: catalogue name or alias (``embed models`` lists them), a local sentence-transformers
        folder, or a hub id (``org/name``, downloaded with huggingface_hub when online). The first
        use exports it to ONNX into the cache (needs the ``export`` extra). A module or option the
        engine cannot reproduce exactly is an ``UnsupportedModelError``.
    trust_remote_code: allow a model whose config or tokenizer maps to code in its folder (that
        code runs at export); refused otherwise.
    device: ``"cpu"`` or ``"cuda"`` (onnxruntime-gpu); an unavailable device is an error.
    precision: ``"fp32"``, ``"int8"`` (dynamically quantized, CPU) or ``"fp16"`` (CUDA).
    threads: onnxruntime intra-op threads; default the number of physical cores.
    cache_dir: where exports live; default $EMBED_ENGINE_CACHE or ~/.cache/embed-engine.

    CPU tuning attributes (measured in bench/token_budget.py; set them to change the defaults):
    ``max_cells`` caps each batch's attention cells (rows x tokens^2; None: no cap) and
    ``batch_workers`` is how many batches run at once, each on a single-threaded copy of the
    session (1: one batch at a time on all ``threads``). The copy is built on the first call
    with several batches and holds a second set of weights in memory (~60 MB for MiniLM int8,
    ~440 MB for mpnet fp32); set ``batch_workers = 1`` before encoding to avoid it.
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        trust_remote_code: bool = False,
    ):
        from .models.export import load_or_export

        on_cpu = not str(device).startswith("cuda")
        if precision == "fp16" and on_cpu:
            raise InputError("precision='fp16' runs on CUDA only; use device='cuda' or precision 'fp32'/'int8' on CPU")
        self._exported = load_or_export(model, precision=precision, cache_dir=cache_dir,
                                        trust_remote_code=trust_remote_code)
        self.spec = self._exported.spec
        self.stack = self._exported.stack
        info = self._exported.tokenizer_info
        self._left_pad = info["padding_side"] == "left"
        if self._left_pad and "weightedmean" in self.stack.pooling.modes:
            raise UnsupportedModelError(
                f"{self.spec.name}: weightedmean pooling with a tokenizer that pads on the left: sentence-transformers "
                "weighs tokens by their position in the padded batch, so its vectors depend on how texts are batched"
            )
        weights = self._exported.head_weights()
        self._head = [(m, weights.get(f"{i}.weight"), weights.get(f"{i}.bias")) for i, m in enumerate(self.stack.head)]
        self.precision = precision
        # The graph for this device, written at export (engine/models/export.py): on CPU layer norms
        # as primitive ops (onnxruntime's fused CPU kernel is ~2.5x slower); on CUDA mean pooling in
        # the graph, so only (batch, dim) crosses back to the host.
        self._graph = self._exported.graph_path("cpu" if on_cpu else "cuda")
        self._session = Session(self._graph, device=device, threads=threads)
        # default attention-cell budget per batch (engine/batching.py); None on GPUs, which want big batches
        self.max_cells = CPU_MAX_CELLS if on_cpu else None
        # CPU throughput mode: with several batches to run, `threads` workers each run whole
        # batches on a single-threaded session (no per-operator thread synchronization) instead
        # of every operator being split across `threads` cores; one batch still uses all cores.
        self.batch_workers = self._session.threads if on_cpu else 1
        self._single: Session | None = None
        self._single_lock = threading.Lock()
        self._tokenizer = Tokenizer(self._exported.tokenizer_path, self.stack.max_seq_length, info["truncation_side"],
                                    info["special_ids"], info["pad_id"])

    # -- CPU tuning -----------------------------------------------------------------------
    @property
    def max_cells(self) -> int | None:
        """Attention cells (rows x tokens^2) per batch when encode() gets no max_tokens; None: no cap."""
        return self._max_cells

    @max_cells.setter
    def max_cells(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"max_cells must be a positive integer or None, got {value!r}")
        self._max_cells = value

    @property
    def batch_workers(self) -> int:
        """Batches run at once on single-threaded sessions (1: one batch at a time on all threads)."""
        return self._batch_workers

    @batch_workers.setter
    def batch_workers(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"batch_workers must be a positive integer (1 turns worker threads off), got {value!r}")
        self._batch_workers = value

    # -- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return self.stack.dim

    @property
    def max_seq_length(self) -> int:
        """Tokens per text after truncation (0: the model sets no limit)."""
        return self.stack.max_seq_length or 0

    @property
    def fingerprint(self) -> str:
        """Stable id of everything that changes a vector (``name/precision/dim/hash``): weights,
        tokenizer, every module's config and weights, max_seq_length, prompts, export settings."""
        return self._exported.fingerprint

    @property
    def prompts(self) -> dict[str, str]:
        """The model's prompts by name (``{"query": "", "document": "", ...}`` as sentence-transformers has them)."""
        return dict(self.stack.prompts)

    @property
    def default_prompt_name(self) -> str | None:
        """The prompt ``encode`` applies when given neither ``prompt`` nor ``prompt_name`` (None: no prompt)."""
        return self.stack.default_prompt_name

    @property
    def similarity_fn_name(self) -> str:
        """The model's similarity: "cosine" (vectors are unit length by default), "dot", "euclidean" or "manhattan"."""
        return self.stack.similarity_fn_name

    def resolve_prompt(self, prompt: str | None = None, prompt_name: str | None = None) -> str | None:
        """The prompt text ``encode`` prepends (sentence-transformers' rule): ``prompt`` if given, else
        ``prompts[prompt_name]``, else the default prompt's text, else None."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InputError(f"prompt must be a string or None, got {type(prompt).__name__}")
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.stack.prompts:
                raise InputError(
                    f"prompt_name {prompt_name!r} is not one of the model's prompts: {sorted(self.stack.prompts)}"
                )
            return self.stack.prompts[prompt_name]
        if self.stack.default_prompt_name is not None:
            return self.stack.prompts.get(self.stack.default_prompt_name)
        return None

    @property
    def threads(self) -> int:
        return self._session.threads

    @property
    def device(self) -> str:
        return self._session.device

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, device={self.device!r}, precision={self.precision!r}, dim={self.dim})"

    # -- encoding -------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids per text (with special tokens, truncated at max_seq_length)."""
        return self._tokenizer.encode(list(texts))

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
        show_progress: bool = False,
        max_tokens: int | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> np.ndarray:
        """Embed texts. A string gives a 1-d vector; a list of n gives (n, dim) float32.

        The vectors are sentence-transformers' ``SentenceTransformer(model).encode(texts)`` for the
        same arguments. prompt / prompt_name: the text prepended to every input (``prompt`` wins;
        without either the model's default prompt, if any); prompt tokens are left out of pooling
        when the model's Pooling has include_prompt=False. normalize: None (default) gives unit
        vectors for a model whose similarity_fn_name is cosine and the model's own output for
        others; True always L2-normalizes; False returns what the model's modules compute (its
        Normalize module, if any, still runs), as sentence-transformers' normalize_embeddings=False.
        batch_size caps texts per model call; max_tokens caps padded tokens per call. With
        max_tokens=None the engine picks the cap for the device: on CPU, batches of long texts
        are cut so their attention scores stay cache-sized (rows x tokens^2 <= ``max_cells``,
        e.g. 2 texts of 256 tokens for int8), which is up to 1.2x faster than 32 at a time and
        leaves short texts in batches of ``batch_size``; on CUDA batch_size alone decides.
        truncate_dim keeps the first components (Matryoshka) and re-normalizes when normalizing.

        >>> emb.encode(["a", "b"]).shape, emb.encode("a").shape
        ((2, 384), (384,))
        """
        items, single = _check_texts(texts)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if truncate_dim is not None and (not isinstance(truncate_dim, int) or not 1 <= truncate_dim <= self.dim):
            raise InputError(f"truncate_dim must be an integer in [1, {self.dim}] or None, got {truncate_dim!r}")
        if normalize is not None and not isinstance(normalize, bool):
            raise InputError(f"normalize must be True, False or None, got {normalize!r}")
        text = self.resolve_prompt(prompt, prompt_name)
        prompt_length = None
        if text:  # an empty prompt is no prompt, as in sentence-transformers
            items = [text + t for t in items]
            if not self.stack.pooling.include_prompt:
                prompt_length = self._tokenizer.prompt_length(text)
        if normalize is None:
            normalize = self.similarity_fn_name == "cosine"
        budget = max_tokens or batch_size * (self.max_seq_length or 512)
        cells = self.max_cells if max_tokens is None else None
        out = np.empty((len(items), self.dim), dtype=np.float32)
        bar = _progress(len(items), show_progress)
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            ids = self._tokenizer.encode(chunk)
            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
            batches = plan_batches(lengths, batch_size, budget, cells)
            for batch, vecs in zip(batches, self._run_batches(ids, batches, prompt_length)):
                out[start + batch] = vecs
                if bar is not None:
                    bar.update(len(batch))
        if bar is not None:
            bar.close()
        if truncate_dim is not None and truncate_dim < self.dim:
            out = truncate_normalize(out, truncate_dim) if normalize else np.ascontiguousarray(out[:, :truncate_dim])
        elif normalize and not (self.stack.normalizes and self.stack.truncate_dim is None):
            out = l2_normalize(out, copy=False)  # (a model ending in Normalize is unit length already)
        return out[0] if single else out

    def encode_query(self, texts: str | Sequence[str], prompt_name: str | None = None, prompt: str | None = None,
                     **kwargs) -> np.ndarray:
        """``encode`` with the model's "query" prompt unless a prompt is given (sentence-transformers' encode_query)."""
        if prompt_name is None and prompt is None and "query" in self.stack.prompts:
            prompt_name = "query"
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(self, texts: str | Sequence[str], prompt_name: str | None = None, prompt: str | None = None,
                        **kwargs) -> np.ndarray:
        """``encode`` with the first of the model's "document", "passage", "corpus" prompts unless a prompt
        is given (sentence-transformers' encode_document)."""
        if prompt_name is None and prompt is None:
            prompt_name = next((n for n in ("document", "passage", "corpus") if n in self.stack.prompts), None)
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def _run_batches(self, ids: list[np.ndarray], batches: list[np.ndarray],
                     prompt_length: int | None = None) -> Iterator[np.ndarray]:
        """Sentence embeddings of ``batches`` in order: on worker threads when there is work for each."""
        workers = self.batch_workers
        if workers <= 1 or len(batches) < workers:
            for batch in batches:
                yield self._forward([ids[i] for i in batch], self._session, prompt_length)
            return
        single = self._single_session()
        with ThreadPoolExecutor(workers, thread_name_prefix="embed") as ex:
            yield from ex.map(lambda b: self._forward([ids[i] for i in b], single, prompt_length), batches)

    def _single_session(self) -> Session:
        """A single-threaded session on the same graph, built on first use; sessions are thread-safe."""
        with self._single_lock:
            if self._single is None:
                self._single = Session(self._graph, device="cpu", threads=1)
            return self._single

    def _forward(self, ids: list[np.ndarray], session: Session, prompt_length: int | None = None) -> np.ndarray:
        """One batch through the session and the module stack (pooling, then the head)."""
        input_ids, mask = pad_batch(ids, self._tokenizer.pad_id, left=self._left_pad)
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        if "position_ids" in session.input_names:  # decoders: what transformers uses when none are given
            feeds["position_ids"] = np.tile(np.arange(input_ids.shape[1], dtype=np.int64), (input_ids.shape[0], 1))
        hidden = session.run(feeds)
        if hidden.ndim == 3:  # (batch, seq, hidden): pool here (a 2-d output was pooled in the graph)
            if prompt_length:
                mask = exclude_prompt(mask, prompt_length)
            hidden = pool(hidden, mask, self.stack.pooling.modes)
        for module, w, b in self._head:
            if isinstance(module, Dense):
                hidden = dense(hidden, w, b, module.activation)
            elif isinstance(module, LayerNorm):
                hidden = layer_norm(hidden, w, b, module.eps)
            elif isinstance(module, Normalize):
                hidden = normalize(hidden)
        if self.stack.truncate_dim is not None:
            hidden = np.ascontiguousarray(hidden[:, : self.stack.truncate_dim])
        return hidden


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="text", desc="encode")
