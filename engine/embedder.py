"""``Embedder``: text in, the vectors sentence-transformers computes out (float32).

(prompt) -> tokenize (truncate as sentence-transformers) -> length-sorted token-budget batches
(padded on the tokenizer's side) -> onnxruntime -> the model's module stack: Pooling (every mode,
prompt tokens left out when include_prompt is False), Dense, LayerNorm, Normalize
(kernels/pooling.py) -> optional Matryoshka truncation -> L2 normalization when asked
(``normalize_embeddings=True``; by default the vectors are the model's output, as in
sentence-transformers) -> optional output quantization (engine/quantization.py).

Code written for sentence-transformers' ``SentenceTransformer`` runs on an ``Embedder``:
``encode`` / ``encode_query`` / ``encode_document`` take its keyword names with its meanings
(checked in ``engine.arguments``), and ``similarity`` / ``similarity_pairwise`` (``engine.similarity``),
``similarity_fn_name``, ``get_sentence_embedding_dimension``, ``prompts`` / ``default_prompt_name``,
``truncate_dim`` (and ``truncate_embeddings``) and a settable ``max_seq_length`` behave as its own,
and the constructor takes its ``prompts``, ``default_prompt_name``, ``similarity_fn_name`` and
``truncate_dim``. The differences are listed in ``encode``'s docstring; its torch-module
surface (``len(model)``, ``model[0]``, ``tokenizer``, ``tokenize``'s tensors) is not mirrored.
Two meanings of "precision" are kept apart: ``Embedder(model, model_precision="int8")`` runs a
quantized *model*; ``encode(texts, precision="int8")`` quantizes the *output vectors*
(sentence-transformers' meaning).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import os
import threading
from collections.abc import Iterable, Iterator, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .arguments import (
    ENCODE_KEYWORDS,
    NO_POOL,
    NOT_TAKEN,
    check_container,
    check_items,
    check_texts,
    is_int,
    model_precision_argument,
    one_of_two,
    positive_int,
    prompts_argument,
    surrogate_check,
    texts_argument,
)
from .batching import pad_batch, plan_batches
from .errors import ExportError, InputError, UnsupportedModelError, missing_extra
from .kernels import l2_normalize, truncate_normalize
from .kernels.pooling import dense, exclude_prompt, layer_norm, normalize, pool
from .models import DEFAULT_MODEL
from .models.stack import SIMILARITIES, Dense, LayerNorm, ModuleStack, Normalize
from .quantization import PRECISIONS as OUTPUT_PRECISIONS
from .quantization import quantize_embeddings
from .runtime import choose_runtime, open_session
from .similarity import similarity
from .tokenize import Tokenizer

# Texts are tokenized and batched this many at a time, so memory does not grow with the input.
CHUNK = 4096

# CPU batches hold at most this many attention cells per head (rows x tokens^2) unless the caller
# sets max_tokens (Embedder.max_cells); chosen by measurement: bench/experiments/engine_notes.md#batch-shape
CPU_MAX_CELLS = 2 * 256 * 256


@dataclasses.dataclass(frozen=True)
class _Settings:
    """What the settable attributes (max_seq_length, truncate_dim, prompts, default_prompt_name)
    change, as one immutable snapshot: a setter builds a new one (a new Tokenizer for a new
    max_seq_length, never a changed one) and swaps the reference under ``_SETTINGS_LOCK``; an encode
    call takes the snapshot once (``_plan``), so each call and ``fingerprint`` see one setting."""

    stack: ModuleStack
    tokenizer: Tokenizer


# serializes the setters' read-modify-write of ``Embedder._settings`` (readers take the reference
# without it); setting is rare, so one lock for all Embedders costs nothing
_SETTINGS_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class _Plan:
    """encode's keyword arguments, checked and resolved."""

    settings: _Settings  # the snapshot of the settings this call runs with
    batch_size: int
    budget: int  # padded tokens per model call
    cells: int | None  # attention cells per batch (CPU default), None: no cap
    prompt: str | None
    prompt_length: int | None  # prompt tokens pooling leaves out (include_prompt=False)
    normalize: bool
    truncate_dim: int | None  # None: the model's full dimension
    precision: str  # output precision (engine.quantization.PRECISIONS)
    output: str  # "numpy", "tensor" (one tensor) or "tensors" (a list of 1-d tensors)
    progress: bool


def _torch():
    """torch, for tensor outputs; an ImportError naming the extra when it is missing."""
    try:
        import torch
    except ImportError as e:
        raise missing_extra("torch", "export") from e
    return torch


def _device_key(device) -> str:
    """A device name in one spelling ("cpu", "cuda:0", ...), to compare two."""
    d = str(device).lower()
    return "cpu" if d.startswith("cpu") else "cuda:0" if d == "cuda" else d


#: The inputs ``_forward`` feeds a graph (each only when the graph declares it).
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


class Embedder:
    """A sentence-transformer model on onnxruntime (or OpenVINO): texts in, sentence-transformers' vectors out.

    Args:
        model: catalogue name or alias (``embed models`` lists them), a local sentence-transformers
            folder, or a hub id (``org/name``, downloaded with huggingface_hub when online). The first
            use exports it to ONNX into the cache (needs the ``export`` extra).
        device: ``"cpu"`` or ``"cuda"`` (onnxruntime-gpu).
        model_precision: the precision the *model* runs in (``engine.precisions``): ``"fp32"``
            (exact), ``"bf16"`` (CPUs with bf16 units, on OpenVINO: the ``openvino`` extra; checked at
            export to stay within cosine 0.9999 of fp32, refused otherwise and on CPUs without bf16
            units), ``"int8"`` (dynamically quantized, CPU) or ``"fp16"`` (CUDA). Not to be confused with
            ``encode(precision=...)``, which quantizes the *output vectors* as sentence-transformers
            does.
        threads: onnxruntime intra-op threads; default the number of physical cores.
        cache_dir: where exports live; default $EMBED_ENGINE_CACHE or ~/.cache/embed-engine.
        trust_remote_code: allow a model whose config or tokenizer maps to code in its folder (that
            code runs at export); refused otherwise.
        prompts, default_prompt_name, similarity_fn_name, truncate_dim: sentence-transformers'
            constructor options, with its meanings: prompts update the model's own (``{"query":
            "query: "}``); the others replace the model's configured value (see the attributes of
            the same names).
        runtime: ``"onnxruntime"`` or ``"openvino"`` (the ``openvino`` extra, CPU, fp32 and bf16);
            None (default): the one chosen for the precision on this CPU class
            (``engine.runtime.RUNTIME_CHOICE``). fp32 gives sentence-transformers' vectors on either.
        precision: the former name of ``model_precision``; still taken, with a DeprecationWarning.

    Raises:
        InputError: a bad argument (an unknown model precision or runtime, fp16 on a CPU, bf16 on a
            CPU without bf16 units, an output precision given as the model's, ...); the message names the fix.
        ImportError: an optional extra the choice needs (``openvino``) is not installed; it names the extra.
        ModelNotFoundError: the model name or folder resolves to no weights.
        WeightsVerificationError: a catalogued weight file's sha256 does not match.
        UnsupportedModelError: a module, option or architecture the engine cannot reproduce exactly.
        ProviderError: the device's execution provider is not available (the message lists those that are).
        ExportError: exporting failed or needs the ``export`` extra, or a cached export is from
            another tool (the message says which folder to delete).

    CPU tuning attributes (set them to change the defaults): ``max_cells`` caps each batch's
    attention cells (rows x tokens^2; None: no cap) and ``batch_workers`` is how many batches run
    at once, each on a single-threaded copy of the session (1: one batch at a time on all
    ``threads``). The copy is built on the first call with several batches and holds a second set
    of weights in memory (~60 MB for MiniLM int8, ~440 MB for mpnet fp32); set
    ``batch_workers = 1`` before encoding to avoid it.
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        device: str = "cpu",
        model_precision: str = "fp32",
        threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        trust_remote_code: bool = False,
        *,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn_name: str | None = None,
        truncate_dim: int | None = None,
        runtime: str | None = None,
        precision: str | None = None,
    ):
        from .models.export import load_or_export

        model_precision = model_precision_argument(model_precision, precision)
        on_cpu = not str(device).startswith("cuda")
        if model_precision == "fp16" and on_cpu:
            raise InputError(
                "model_precision='fp16' runs on CUDA only; use device='cuda' or model_precision 'fp32'/'int8' on CPU"
            )
        self.runtime = choose_runtime(model_precision, str(device), runtime)  # refusals before any export
        self._exported = load_or_export(
            model,
            precision=model_precision,
            cache_dir=cache_dir,
            trust_remote_code=trust_remote_code,
            runtime=self.runtime,
        )
        self.spec = self._exported.spec
        # this Embedder's own copy: max_seq_length, prompts and truncate_dim are settable
        stack = dataclasses.replace(self._exported.stack, prompts=dict(self._exported.stack.prompts))
        self._full_dim = dataclasses.replace(stack, truncate_dim=None).dim
        info = self._exported.tokenizer_info
        self._left_pad = info["padding_side"] == "left"
        if self._left_pad and "weightedmean" in stack.pooling.modes:
            raise UnsupportedModelError(
                f"{self.spec.name}: weightedmean pooling with a tokenizer that pads on the left: sentence-transformers "
                "weighs tokens by their position in the padded batch, so its vectors depend on how texts are batched"
            )
        weights = self._exported.head_weights()
        self._head = [(m, weights.get(f"{i}.weight"), weights.get(f"{i}.bias")) for i, m in enumerate(stack.head)]
        self.model_precision = model_precision
        self._similarity_fn_name = stack.similarity_fn_name
        # The graph for this device, written at export (engine/models/export.py): on CPU layer norms
        # as primitive ops (faster there than onnxruntime's fused kernel); on CUDA mean pooling in the
        # graph, so only (batch, dim) crosses back to the host.
        self._graph = self._exported.graph_path("cpu" if on_cpu else "cuda")
        self._session = open_session(
            self._graph, self.runtime, device=device, threads=threads, precision=model_precision
        )
        extra = [n for n in self._session.input_names if n not in GRAPH_INPUTS]
        if extra:  # e.g. an encoder-decoder exported whole by an older engine: onnxruntime would fail per batch
            raise ExportError(
                f"{self._graph} takes inputs the engine does not feed ({', '.join(extra)}; it feeds "
                f"{', '.join(GRAPH_INPUTS)}): an export from another engine version or another tool. Delete "
                f"{self._exported.folder} to export the model again."
            )
        # default attention-cell budget per batch (engine/batching.py); None on GPUs, which want big batches
        self.max_cells = CPU_MAX_CELLS if on_cpu else None
        # CPU throughput mode: with several batches to run, `threads` workers each run whole
        # batches on a single-threaded session (no per-operator thread synchronization) instead
        # of every operator being split across `threads` cores; one batch still uses all cores.
        self.batch_workers = self._session.threads if on_cpu else 1
        self._single = None  # the batch workers' session (Session.for_workers), built on first use
        self._single_lock = threading.Lock()
        tokenizer = Tokenizer(
            self._exported.tokenizer_path,
            stack.max_seq_length,
            info["truncation_side"],
            info["special_ids"],
            info["pad_id"],
        )
        self._settings = _Settings(stack, tokenizer)
        self._exported_max_seq_length = self._tokenizer.max_length
        if prompts is not None:  # sentence-transformers: the given prompts win, the model's fill the rest
            checked = prompts_argument(prompts)
            given = {k: checked[k] for k, v in prompts.items() if v is not None or k not in self.stack.prompts}
            self.prompts = {**self.stack.prompts, **given}
        if default_prompt_name is not None:
            self.default_prompt_name = default_prompt_name
        if similarity_fn_name is not None:
            self.similarity_fn_name = similarity_fn_name
        if truncate_dim is not None:
            self.truncate_dim = truncate_dim

    # -- settings (one immutable snapshot, swapped atomically) ---------------------------------
    @property
    def stack(self) -> ModuleStack:
        """The module stack with this Embedder's settings (prompts, max_seq_length, truncate_dim)."""
        return self._settings.stack

    @stack.setter
    def stack(self, value: ModuleStack) -> None:
        with _SETTINGS_LOCK:
            self._settings = dataclasses.replace(self._settings, stack=value)

    @property
    def _tokenizer(self) -> Tokenizer:
        return self._settings.tokenizer

    def _replace_stack(self, check=None, **changes) -> None:
        """A new snapshot with ``changes`` to the stack; ``check(stack)`` runs first, under the lock."""
        with _SETTINGS_LOCK:
            current = self._settings
            if check is not None:
                check(current.stack)
            self._settings = dataclasses.replace(current, stack=dataclasses.replace(current.stack, **changes))

    # -- CPU tuning -----------------------------------------------------------------------
    @property
    def max_cells(self) -> int | None:
        """Attention cells (rows x tokens^2) per batch when encode() gets no max_tokens; None: no cap."""
        return self._max_cells

    @max_cells.setter
    def max_cells(self, value: int | None) -> None:
        self._max_cells = positive_int(value, "max_cells", allow_none=True)

    @property
    def batch_workers(self) -> int:
        """Batches run at once on single-threaded sessions (1: one batch at a time on all threads)."""
        return self._batch_workers

    @batch_workers.setter
    def batch_workers(self, value: int) -> None:
        self._batch_workers = positive_int(value, "batch_workers", hint="(1 turns worker threads off)")

    # -- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The model's name (catalogue name, or the folder's)."""
        return self.spec.name

    @property
    def dim(self) -> int:
        """Output dimension of ``encode`` without its own truncate_dim: the model's, cut at ``truncate_dim``."""
        return self.stack.dim

    @property
    def truncate_dim(self) -> int | None:
        """sentence-transformers' model-level truncate_dim (Matryoshka): ``encode`` keeps the first
        ``truncate_dim`` components when its own ``truncate_dim`` is None; None: the full dimension.

        The constructor's ``truncate_dim``, else the model's config_sentence_transformers.json.
        Settable, as there, to None or [1, the model's dimension] (sentence-transformers also takes
        larger values and keeps every component); ``dim``, ``get_embedding_dimension()`` and
        ``fingerprint`` follow it. ``truncate_embeddings(d)`` sets it for a ``with`` block.
        """
        return self.stack.truncate_dim

    @truncate_dim.setter
    def truncate_dim(self, value: int | None) -> None:
        if value is not None and (not is_int(value) or not 1 <= value <= self._full_dim):
            raise InputError(f"truncate_dim must be an integer in [1, {self._full_dim}] or None, got {value!r}")
        self._replace_stack(truncate_dim=None if value is None else int(value))

    @contextlib.contextmanager
    def truncate_embeddings(self, truncate_dim: int | None) -> Iterator[None]:
        """``with emb.truncate_embeddings(64): ...``: ``truncate_dim`` set for the block, then restored
        (sentence-transformers' context manager of the same name)."""
        before = self.truncate_dim
        self.truncate_dim = truncate_dim
        try:
            yield
        finally:
            self.truncate_dim = before

    def get_embedding_dimension(self) -> int:
        """The dimension of ``encode``'s vectors (sentence-transformers' name): ``dim``."""
        return self.stack.dim

    def get_sentence_embedding_dimension(self) -> int:
        """The dimension of ``encode``'s vectors (sentence-transformers' older name): ``dim``."""
        return self.stack.dim

    @property
    def precision(self) -> str:
        """The model's precision, ``model_precision`` ("fp32", "bf16", "int8", "fp16"), under the name an
        ``ExportedModel`` has too. Output quantization is ``encode(precision=...)``."""
        return self.model_precision

    @property
    def max_seq_length(self) -> int:
        """Tokens per text after truncation, special tokens included (0: the model sets no limit).

        Settable, as in sentence-transformers: an integer from the tokenizer's special-token count + 1
        (fewer would truncate nothing) to the most tokens the model's position embeddings hold
        (``max_position_embeddings``, less the offset RoBERTa-style models start positions at). A value
        other than the model's own changes the vectors of longer texts, so it changes ``fingerprint``;
        setting the model's value back restores it. Setting it while other threads encode is safe:
        each encode call runs with the value set when it started (as do truncate_dim and the prompts).
        """
        return self._tokenizer.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        low = self._tokenizer.num_special_tokens + 1
        limit = self._exported.meta.get("position_limit", self._exported_max_seq_length)
        if not is_int(value) or value < low or (limit and value > limit):
            if "position_limit" not in self._exported.meta:
                why = (
                    f"; this export predates the record of the model's position limit, so it cannot be raised "
                    f"above {limit}: delete {self._exported.folder} to export it again"
                )
            else:
                why = f" (the model's position embeddings hold {limit} tokens)" if limit else ""
            raise InputError(f"max_seq_length must be an integer in [{low}, {limit or 'no limit'}]{why}, got {value!r}")
        value = int(value)
        with _SETTINGS_LOCK:  # a new tokenizer: the one in use by other threads is never changed
            current = self._settings
            self._settings = _Settings(
                dataclasses.replace(current.stack, max_seq_length=value), current.tokenizer.with_max_length(value)
            )

    @property
    def fingerprint(self) -> str:
        """Stable id of everything that changes a vector (``name/precision/dim/hash``): weights,
        tokenizer, every module's config and weights, max_seq_length, prompts, export settings.
        A max_seq_length or truncate_dim set to another value than the model's gives another hash."""
        fp = self._exported.fingerprint
        settings = self._settings  # one snapshot: both values of one setting
        changed = [
            f"{k}={v}"
            for k, v, own in (
                ("max_seq_length", settings.tokenizer.max_length, self._exported_max_seq_length),
                ("truncate_dim", settings.stack.truncate_dim, self._exported.stack.truncate_dim),
            )
            if v != own
        ]
        if not changed:
            return fp
        head, digest = fp.rsplit("/", 1)
        return f"{head}/{hashlib.sha256('|'.join([digest, *changed]).encode()).hexdigest()[:16]}"

    @property
    def prompts(self) -> dict[str, str]:
        """The prompts by name, as sentence-transformers has them: ``{"query": "", "document": "", ...}``
        ("" for none), the model's updated with the constructor's ``prompts``. The dict itself, as there:
        ``emb.prompts["query"] = "query: "`` or ``emb.prompts = {...}`` changes what encode prepends."""
        return self.stack.prompts

    @prompts.setter
    def prompts(self, value: dict[str, str]) -> None:
        self._replace_stack(prompts=prompts_argument(value))

    @property
    def default_prompt_name(self) -> str | None:
        """The prompt ``encode`` applies when given neither ``prompt`` nor ``prompt_name`` (None: no prompt).
        Settable to None or a name in ``prompts``."""
        return self.stack.default_prompt_name

    @default_prompt_name.setter
    def default_prompt_name(self, value: str | None) -> None:
        def check(stack: ModuleStack) -> None:
            if value is not None and value not in stack.prompts:
                raise InputError(
                    f"default_prompt_name {value!r} is not one of the prompts {sorted(stack.prompts)}; "
                    f"add it first (emb.prompts[{value!r}] = '...') or pass None"
                )

        self._replace_stack(check, default_prompt_name=value)

    @property
    def similarity_fn_name(self) -> str:
        """The function ``similarity`` uses: "cosine", "dot", "euclidean" or "manhattan" (the model's
        configured one by default). Settable as in sentence-transformers (a name, its
        SimilarityFunction enum, or None: cosine); it changes only ``similarity`` /
        ``similarity_pairwise``, never ``encode``'s vectors."""
        return self._similarity_fn_name

    @similarity_fn_name.setter
    def similarity_fn_name(self, value) -> None:
        value = "cosine" if value is None else getattr(value, "value", value)  # SimilarityFunction enum
        if value not in SIMILARITIES:
            raise InputError(f"similarity_fn_name must be one of {', '.join(SIMILARITIES)}, got {value!r}")
        self._similarity_fn_name = value

    def similarity(self, embeddings1, embeddings2):
        """Scores of every row of ``embeddings1`` against every row of ``embeddings2``.

        ``similarity_fn_name`` picks the function, as sentence-transformers defines them
        (``engine.similarity.similarity``).

        Args:
            embeddings1: (n, dim) vectors or one (dim,) vector (one row): a numpy array, a list, or
                a torch tensor on any device.
            embeddings2: (m, dim) vectors or one (dim,) vector, likewise.

        Returns:
            (n, m) scores: a numpy array for numpy or list inputs (float32 for float32 input); a
            tensor on the first tensor's device when either side is a tensor (sentence-transformers
            always returns a tensor).

        Raises:
            InputError: inputs that are not numeric vectors, or of different dimensions.

        Example:
            >>> emb.similarity(emb.encode(["a", "b"]), emb.encode(["c"])).shape
            (2, 1)
        """
        return similarity(embeddings1, embeddings2, self.similarity_fn_name)

    def similarity_pairwise(self, embeddings1, embeddings2):
        """Scores of row i of ``embeddings1`` against row i of ``embeddings2``: (n,), for two (n, dim)
        inputs of one shape (an InputError otherwise). Types as ``similarity``."""
        return similarity(embeddings1, embeddings2, self.similarity_fn_name, pairwise=True)

    def resolve_prompt(self, prompt: str | None = None, prompt_name: str | None = None) -> str | None:
        """The prompt text ``encode`` prepends (sentence-transformers' rule): ``prompt`` if given, else
        ``prompts[prompt_name]``, else the default prompt's text, else None."""
        return Embedder._resolve_prompt(prompt, prompt_name, self.stack)  # self: also an ExportedModel (driver)

    @staticmethod
    def _resolve_prompt(prompt: str | None, prompt_name: str | None, stack: ModuleStack) -> str | None:
        """``resolve_prompt`` on ``stack``'s prompts, checked (an InputError names what is wrong)."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InputError(f"prompt must be a string or None, got {type(prompt).__name__}")
            if not prompt.isascii():
                surrogate_check(prompt, "prompt")
            return prompt
        if prompt_name is None:
            prompt_name = stack.default_prompt_name
            if prompt_name is None:
                return None
        elif prompt_name not in stack.prompts:
            raise InputError(f"prompt_name {prompt_name!r} is not one of the model's prompts: {sorted(stack.prompts)}")
        text = stack.prompts.get(prompt_name)
        if text is not None and not isinstance(text, str):  # prompts is a dict users may edit in place
            raise InputError(f"prompts[{prompt_name!r}] must be a string, got {type(text).__name__}")
        if text and not text.isascii():
            surrogate_check(text, f"prompts[{prompt_name!r}]")
        return text

    @property
    def threads(self) -> int:
        """The session's intra-op threads."""
        return self._session.threads

    @property
    def device(self) -> str:
        """The device the model runs on ("cpu", "cuda:0", ...)."""
        return self._session.device

    def __repr__(self) -> str:
        return (
            f"Embedder({self.name!r}, device={self.device!r}, model_precision={self.model_precision!r}, "
            f"runtime={self.runtime!r}, dim={self.dim})"
        )

    # -- encoding -------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids per text (with special tokens, truncated at max_seq_length)."""
        return self._tokenizer.encode(list(texts))

    def encode(
        self,
        texts: str | Sequence[str] | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | None = None,
        normalize_embeddings: bool | None = None,
        truncate_dim: int | None = None,
        pool: dict | None = None,
        chunk_size: int | None = None,
        *,
        normalize: bool | None = None,
        show_progress: bool | None = None,
        max_tokens: int | None = None,
        **kwargs,
    ):
        """Embed one text or many: sentence-transformers' ``SentenceTransformer.encode``, same names, same results.

        Texts are tokenized (truncated at ``max_seq_length``), sorted by length into batches, run
        through the model and its module stack, and returned in input order.

        Args:
            texts: one string (gives one vector) or an ordered collection of strings: list, tuple,
                1-d numpy array, pandas Series or Index, pyarrow Array or ChunkedArray, generator.
                ``sentences=`` / ``inputs=`` (sentence-transformers' names) work too.
            prompt_name: the name of one of ``prompts`` whose text is prepended to every input.
            prompt: a prompt text to prepend (wins over ``prompt_name``). Without either, the
                model's default prompt, if any; prompt tokens are left out of pooling when the
                model's Pooling has include_prompt=False.
            batch_size: texts per model call (at most).
            show_progress_bar: a tqdm bar (``show_progress`` is the engine's name); None: off.
            output_value: "sentence_embedding" only (the engine computes no token embeddings).
            precision: output quantization, ``engine.quantize_embeddings``: "float32" (default),
                "int8" / "uint8" (ranges calibrated on this call's vectors, as sentence-transformers
                does; for stable codes quantize float vectors with calibration ranges instead),
                "binary" / "ubinary" (packed sign bits). The model's own precision is chosen at
                construction (``model_precision``).
            convert_to_numpy: True (default): a numpy array; False (or None): a list of 1-d torch tensors.
            convert_to_tensor: one torch tensor (on the CPU) instead, whatever convert_to_numpy says;
                needs torch (the export extra).
            device: None or this Embedder's own device ("cpu", "cpu:0", torch.device("cpu"), ...;
                the device is fixed when the Embedder is built).
            normalize_embeddings: True: unit vectors (L2-normalized after truncation); False or None
                (default): what the model's modules compute, as sentence-transformers returns it (unit
                length only when the model ends in a Normalize module, which runs either way). For
                cosine scores either works (``similarity`` and a cosine ``Index`` normalize); ask for
                True when the vectors go to a dot-product store. ``normalize`` is the engine's name.
            truncate_dim: keep the first components (Matryoshka); normalized after truncation only
                when normalize_embeddings is True (a truncated Normalize output is not unit length,
                as there). None: the Embedder's ``truncate_dim`` (None: all).
            pool: sentence-transformers' multi-process pool: must be None (batches run on worker
                threads already).
            chunk_size: accepted and unused, as there without a pool.
            task: accepted and ignored, as sentence-transformers does for models without a Router
                module (the only ones the engine runs).
            normalize: the engine's name of ``normalize_embeddings`` (give either, or both agreeing).
            show_progress: the engine's name of ``show_progress_bar``.
            max_tokens: a cap on padded tokens (rows x longest row) per model call. None: the engine
                picks the cap for the device: on CPU, batches of long texts are cut so their
                attention scores stay cache-sized (rows x tokens^2 <= ``max_cells``); on CUDA
                batch_size alone decides.

        Returns:
            A (n, dim) float32 numpy array for a collection of n texts, a (dim,) one for a single
            string; dim is ``truncate_dim`` when set, else the model's dimension (``dim``). For
            ``precision`` "int8" / "uint8" the dtype is int8 / uint8; for "binary" / "ubinary" it is
            int8 / uint8 of shape (n, ceil(dim / 8)). With convert_to_tensor one torch tensor of the
            same shape, with convert_to_numpy False a list of n 1-d tensors. An empty collection
            gives (0, dim) (sentence-transformers: a (0,) float64 array).

        Raises:
            InputError: the message names the fix, for: a texts argument that is not ordered text
                (a set, dict or dict view, DataFrame, Arrow table, 0-d array, None, bytes), an item
                that is not a str (None, NaN, a number, a text pair; named by its index) or holds a
                lone surrogate, a text with no tokens; a non-positive or bool batch_size, max_tokens
                or chunk_size; truncate_dim outside [1, the model's dimension]; an unknown
                precision, prompt_name or keyword (the message lists the valid ones);
                output_value other than "sentence_embedding", processing_kwargs, a pool, another
                device or a list of devices; flags given as non-bools or disagreeing under their two
                names.
            ImportError: a tensor output without torch; the message names the extra.

        Differences from sentence-transformers: convert_to_tensor gives a CPU tensor on every
        device; output_value="token_embeddings" / None, processing_kwargs, a pool or a list of
        devices, truncate_dim above the model's dimension (sentence-transformers silently keeps
        all), bools as numbers, unknown keywords, unordered inputs, text pairs and lone surrogates
        are errors here.

        Example:
            >>> emb = Embedder("all-MiniLM-L6-v2")
            >>> emb.encode(["a", "b"]).shape, emb.encode("a").shape
            ((2, 384), (384,))
            >>> emb.encode(["a", "b"], precision="ubinary").shape
            (2, 48)
        """
        texts = texts_argument(texts, kwargs)
        plan = self._plan(
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            output_value=output_value,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
            normalize_embeddings=normalize_embeddings,
            truncate_dim=truncate_dim,
            pool=pool,
            chunk_size=chunk_size,
            normalize=normalize,
            show_progress=show_progress,
            max_tokens=max_tokens,
            **kwargs,
        )
        items, single = check_texts(texts)
        n = len(items)
        bar = _progress(n, plan.progress)
        try:
            if n <= CHUNK:
                out = self._vectors(items, plan, bar)
            else:  # written chunk by chunk: memory is the output plus one chunk
                out = np.empty((n, plan.truncate_dim or self._full_dim), dtype=np.float32)
                for start in range(0, n, CHUNK):
                    out[start : start + CHUNK] = self._vectors(items[start : start + CHUNK], plan, bar)
        finally:
            if bar is not None:
                bar.close()
        return self._output(out, plan, single)

    def encode_query(
        self,
        texts: str | Sequence[str] | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs,
    ):
        """``encode`` with the model's "query" prompt unless a prompt is given (sentence-transformers'
        encode_query); every keyword of ``encode``."""
        if prompt_name is None and prompt is None and "query" in self.stack.prompts:
            prompt_name = "query"
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(
        self,
        texts: str | Sequence[str] | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs,
    ):
        """``encode`` with the first of the model's "document", "passage", "corpus" prompts unless a prompt
        is given (sentence-transformers' encode_document); every keyword of ``encode``."""
        if prompt_name is None and prompt is None:
            prompt_name = next((n for n in ("document", "passage", "corpus") if n in self.stack.prompts), None)
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def embed(self, texts: str | Iterable[str], batch_size: int = 32, **kwargs) -> Iterator:
        """Stream vectors: yield (<= batch_size, dim) arrays, in input order, as ``texts`` is read.

        ``texts`` is read lazily, ``CHUNK`` texts at a time; each chunk is sorted by length and
        batched as ``encode`` does, so memory stays bounded by one chunk whatever the input's length.
        The results equal ``encode``'s, batch after batch.

        Args:
            texts: any iterable of strings (a generator, a file's lines, ...); a single string is
                one text (one batch of one).
            batch_size: rows per yielded array (and texts per model call, at most).
            **kwargs: ``encode``'s keywords, except output precisions "int8" / "uint8" (their
                ranges would differ from batch to batch: quantize with
                ``quantize_embeddings(..., ranges=...)`` instead).

        Returns:
            An iterator of arrays as ``encode`` returns them for a list of texts.

        Raises:
            InputError: here, for argument errors and unordered inputs (as ``encode``); while
                iterating, for a bad text, naming its index, when its chunk is read.

        Example:
            >>> sum(len(b) for b in emb.embed(open("lines.txt"), batch_size=256))
        """
        plan = self._plan(batch_size=batch_size, **kwargs)
        if plan.precision in ("int8", "uint8"):
            raise InputError(
                f"embed() does not take precision={plan.precision!r}: its ranges would be calibrated on each batch, "
                "so codes of different batches would not compare. Stream float32 vectors and quantize them with "
                "engine.quantize_embeddings(vectors, precision, ranges=...) (ranges from a sample)"
            )
        source, _ = check_container(texts)
        total = len(source) if isinstance(source, Sized) else None
        return self._stream(iter(source), plan, total)

    def _stream(self, texts: Iterator, plan: _Plan, total: int | None) -> Iterator:
        """``embed``'s generator: chunk, check, encode and yield batches of ``texts``."""
        bar = _progress(total, plan.progress)
        done = 0
        try:
            while chunk := list(itertools.islice(texts, CHUNK)):
                check_items(chunk, done)
                vecs = self._vectors(chunk, plan, bar)
                for start in range(0, len(chunk), plan.batch_size):
                    yield self._output(vecs[start : start + plan.batch_size], plan, False)
                done += len(chunk)
        finally:
            if bar is not None:
                bar.close()

    def _plan(
        self,
        prompt_name=None,
        prompt=None,
        batch_size=32,
        show_progress_bar=None,
        output_value="sentence_embedding",
        precision="float32",
        convert_to_numpy=True,
        convert_to_tensor=False,
        device=None,
        normalize_embeddings=None,
        truncate_dim=None,
        pool=None,
        chunk_size=None,
        task=None,
        normalize=None,
        show_progress=None,
        max_tokens=None,
        **unknown,
    ) -> _Plan:
        """Check and resolve encode's keywords (see ``encode``), with one snapshot of the settings."""
        settings = self._settings
        if unknown:
            hints = "; ".join(f"{k}: {NOT_TAKEN[k]}" for k in sorted(unknown) if k in NOT_TAKEN)
            raise InputError(
                f"unexpected keyword argument(s) {', '.join(sorted(unknown))}"
                + (f" ({hints})" if hints else "")
                + f"; encode takes: {', '.join(ENCODE_KEYWORDS)}"
            )
        batch_size = positive_int(batch_size, "batch_size")
        max_tokens = positive_int(max_tokens, "max_tokens", allow_none=True)
        full = self._full_dim
        if truncate_dim is None:  # the model-level one, as in sentence-transformers (a config's may exceed full)
            own = settings.stack.truncate_dim
            truncate_dim = None if own is None else min(own, full)
        elif not is_int(truncate_dim) or not 1 <= truncate_dim <= full:
            raise InputError(f"truncate_dim must be an integer in [1, {full}] or None, got {truncate_dim!r}")
        if pool is not None:
            raise InputError(f"pool={pool!r}: {NO_POOL}; pass pool=None")
        positive_int(chunk_size, "chunk_size", allow_none=True)  # accepted and unused, as there without a pool
        norm = one_of_two("normalize", normalize, "normalize_embeddings", normalize_embeddings)
        progress = one_of_two("show_progress", show_progress, "show_progress_bar", show_progress_bar)
        if output_value != "sentence_embedding":
            raise InputError(
                f"output_value={output_value!r} is not supported: the engine returns sentence embeddings only "
                "(output_value='sentence_embedding')"
            )
        precision = "float32" if precision is None else precision
        if not isinstance(precision, str) or precision not in OUTPUT_PRECISIONS:
            hint = (
                (
                    f"; {precision!r} is a model precision, chosen when the Embedder is built: "
                    f"Embedder(model, model_precision={precision!r})"
                )
                if precision in ("fp32", "fp16")
                else ""
            )
            raise InputError(
                f"precision (the output quantization) must be one of {', '.join(map(repr, OUTPUT_PRECISIONS))}, "
                f"got {precision!r}{hint}"
            )
        for name, flag in (("convert_to_numpy", convert_to_numpy), ("convert_to_tensor", convert_to_tensor)):
            if flag is not None and not isinstance(flag, (bool, np.bool_)):  # None: False, as there
                raise InputError(f"{name} must be True or False, got {flag!r}")
        output = "tensor" if convert_to_tensor else "numpy" if convert_to_numpy else "tensors"
        if output != "numpy":
            _torch()
        self._check_device(device)
        if task is not None and not isinstance(task, str):
            raise InputError(f"task must be a string or None, got {task!r}")
        # an empty prompt is no prompt, as in sentence-transformers
        text = self._resolve_prompt(prompt, prompt_name, settings.stack) or None
        prompt_length = None
        if text and not settings.stack.pooling.include_prompt:
            prompt_length = settings.tokenizer.prompt_length(text)
        return _Plan(
            settings=settings,
            batch_size=batch_size,
            budget=max_tokens or batch_size * (settings.tokenizer.max_length or 512),
            cells=self.max_cells if max_tokens is None else None,
            prompt=text,
            prompt_length=prompt_length,
            normalize=bool(norm),  # None: the model's output, as sentence-transformers' default
            truncate_dim=None if truncate_dim is None or truncate_dim == full else int(truncate_dim),
            precision=precision,
            output=output,
            progress=bool(progress),
        )

    def _check_device(self, device) -> None:
        """InputError unless ``device`` is None or this Embedder's device."""
        if device is None:
            return
        if isinstance(device, (list, tuple)):
            raise InputError(
                f"device={device!r}: encoding on several devices (sentence-transformers' multi-process pool) is not "
                "supported; build one Embedder per device"
            )
        if _device_key(device) != _device_key(self.device):
            raise InputError(
                f"device={str(device)!r}, but this Embedder runs on {self.device!r}; the device is chosen when the "
                f"Embedder is built: Embedder(model, device={str(device)!r})"
            )

    def _vectors(self, texts: list[str], plan: _Plan, bar=None) -> np.ndarray:
        """float32 (len(texts), plan.truncate_dim or the full dim): tokenized, batched, run, truncated, normalized."""
        if plan.prompt:
            texts = [plan.prompt + t for t in texts]
        ids = plan.settings.tokenizer.encode(texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        batches = plan_batches(lengths, plan.batch_size, plan.budget, plan.cells)
        out = np.empty((len(texts), self._full_dim), dtype=np.float32)
        for batch, vecs in zip(batches, self._run_batches(ids, batches, plan.prompt_length)):
            out[batch] = vecs
            if bar is not None:
                bar.update(len(batch))
        if plan.truncate_dim is not None:
            return (
                truncate_normalize(out, plan.truncate_dim)
                if plan.normalize
                else np.ascontiguousarray(out[:, : plan.truncate_dim])
            )
        if plan.normalize and not plan.settings.stack.normalizes:
            out = l2_normalize(out, copy=False)  # (a model ending in Normalize is unit length already)
        return out

    @staticmethod
    def _output(out: np.ndarray, plan: _Plan, single: bool):
        """Quantize (output precision) and convert (numpy, tensor, list of tensors) float32 vectors."""
        if plan.precision != "float32":
            if len(out) == 0 and plan.precision in ("int8", "uint8"):  # nothing to calibrate on
                out = np.empty(out.shape, dtype=plan.precision)
            else:
                out = quantize_embeddings(out, plan.precision)
        if plan.output == "numpy":
            return out[0] if single else out
        torch = _torch()
        tensors = torch.from_numpy(out) if plan.output == "tensor" else [torch.from_numpy(row) for row in out]
        return tensors[0] if single else tensors

    def _run_batches(
        self, ids: list[np.ndarray], batches: list[np.ndarray], prompt_length: int | None = None
    ) -> Iterator[np.ndarray]:
        """Sentence embeddings of ``batches`` in order: on worker threads when there is work for each."""
        workers = self.batch_workers
        if workers <= 1 or len(batches) < workers:
            for batch in batches:
                yield self._forward([ids[i] for i in batch], self._session, prompt_length)
            return
        single = self._single_session()
        with ThreadPoolExecutor(workers, thread_name_prefix="embed") as ex:
            yield from ex.map(lambda b: self._forward([ids[i] for i in b], single, prompt_length), batches)

    def _single_session(self):
        """The batch workers' session on the same graph (each batch on one core), built on first use;
        sessions are thread-safe."""
        with self._single_lock:
            if self._single is None:
                self._single = self._session.for_workers(self.batch_workers)
            return self._single

    def _forward(self, ids: list[np.ndarray], session, prompt_length: int | None = None) -> np.ndarray:
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
        return hidden


def _progress(total: int | None, enabled: bool):
    """A tqdm bar over ``total`` texts when ``enabled``, else None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="text", desc="encode")
