"""The settings every corpus entry point shares, checked once: ``CorpusOptions``.

``embed_corpus``, ``engine.corpus.ray.embed_corpus_ray`` / ``embed_dataset`` and
``engine.corpus.distributed.embed_corpus_distributed`` take these settings as keyword arguments
(or as one ``options=CorpusOptions(...)``) and hand this one frozen object to the driver, the Ray
executor and the distributed writers. Building it checks what needs no model: positive integers,
field names, the model precision and the output format (Parquet without pyarrow names what to
install); ``truncate_dim`` is checked against the model's dimension when the plan is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ..arguments import model_precision_argument, positive_int
from ..errors import InputError
from .readers import Fields
from .shards import DEFAULT_OUTPUT_FORMAT, check_output_format

if TYPE_CHECKING:
    from .cache import EmbeddingCache

DEFAULT_SHARD_SIZE = 10_000


@dataclass(frozen=True)
class CorpusOptions:
    """How a corpus is read, embedded and written: the settings the corpus entry points share.

    Args:
        model_precision: the precision the model runs in (``engine.precisions.MODEL_PRECISIONS``).
            With ``device``, ``threads`` and ``cache_dir`` it builds the ``Embedder`` a model name
            or folder names; unused when the model is a ready ``Embedder``.
        device: ``"cpu"`` or ``"cuda"``.
        threads: onnxruntime threads (None: the physical cores; on Ray: the CPUs per actor).
        batch_size: texts per model call.
        id_field: the id field / column; None (or ``""``) numbers the records instead (1-based
            row, or the line a record starts at in a text-based file). Strings and plain text
            lines have no fields and are always numbered.
        text_field: the text field / column.
        title_field: the title field / column, None (or ``""``) for none. The embedded text is
            ``engine.corpus.readers.compose(title, text)``.
        truncate_dim: keep the first components (Matryoshka), re-normalized for cosine models;
            checked against the model's dimension when the run is planned.
        shard_size: documents per shard.
        cache: True for the default embedding cache (``<cache root>/embeddings.sqlite``), a
            path, an open ``EmbeddingCache``, or False for none.
        skip_bad: skip bad records and duplicate ids (listed in OUTDIR/rejects.jsonl) instead of
            raising InputError.
        overwrite: delete an existing output written with other settings first.
        progress: a tqdm bar on stderr (docs/s, tokens/s, ETA).
        cache_dir: the engine's cache folder: where models are exported, and the root of the
            default embedding cache.
        format: read every file and stdin as ``"jsonl"``, ``"csv"``, ``"tsv"``, ``"text"`` or
            ``"parquet"`` instead of by suffix (stdin: JSON lines or text, from its first line).
        prompt_name, prompt: the prompt prepended to every document, as ``Embedder.encode``
            takes them (``prompt`` wins). Default: the model's document prompt, what
            ``encode_document`` prepends (none for a model without one).
        output_format: ``"npy"`` (shard-NNNNN.npy vectors + .jsonl ids and titles) or
            ``"parquet"`` (one shard-NNNNN.parquet per shard: id, title, embedding; needs pyarrow,
            the ``corpus`` extra). ``engine.corpus.shards`` describes both layouts.

    The model, ``truncate_dim``, the fields, ``shard_size``, the document prompt's text and
    ``output_format`` are the output's settings: a rerun into the same folder must use the same
    ones (or ``overwrite``). Stored vectors are unit length for cosine models and the model's
    output for others (``shards.stored_normalized``), whatever ``encode``'s default.

    Raises:
        InputError: a model precision that is not one, a non-positive or bool ``batch_size`` or
            ``shard_size``, an empty or non-string ``text_field`` (or ``id_field`` other than
            None/""), or an ``output_format`` the engine cannot write here.
    """

    model_precision: str = "fp32"
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 32
    id_field: str | None = "_id"
    text_field: str = "text"
    title_field: str | None = "title"
    truncate_dim: int | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    cache: bool | str | os.PathLike | EmbeddingCache = True
    skip_bad: bool = False
    overwrite: bool = False
    progress: bool = False
    cache_dir: str | os.PathLike | None = None
    format: str | None = None
    prompt_name: str | None = None
    prompt: str | None = None
    output_format: str = DEFAULT_OUTPUT_FORMAT

    def __post_init__(self) -> None:
        model_precision_argument(self.model_precision, None)
        for name in ("shard_size", "batch_size"):  # numpy integers stored as int (they go into JSON manifests)
            object.__setattr__(self, name, positive_int(getattr(self, name), name))
        if self.id_field not in (None, ""):
            _check_field("id_field", self.id_field)
        _check_field("text_field", self.text_field)
        check_output_format(self.output_format)

    @property
    def record_fields(self) -> Fields:
        """The fields the readers take records apart by (a title field of "" is none)."""
        return Fields(self.id_field, self.text_field, self.title_field or None)

    @classmethod
    def from_arguments(cls, options: CorpusOptions | None, arguments: dict[str, Any]) -> CorpusOptions:
        """The options an entry point was called with: ``options``, or those its keywords give.

        Args:
            options: the entry point's ``options=`` argument (None: build them from the keywords).
            arguments: the entry point's parameters by name (its ``locals()``); those named like a
                field are the settings, the rest are ignored.

        Raises:
            InputError: ``options`` is not a CorpusOptions, or is given together with a setting
                keyword that is not at its default; or a setting is bad (see the class).
        """
        given = {f.name: arguments[f.name] for f in fields(cls) if f.name in arguments}
        if options is None:
            return cls(**given)
        if not isinstance(options, cls):
            raise InputError(f"options must be a CorpusOptions, got {type(options).__name__}")
        both = [name for name, value in given.items() if value != _DEFAULTS[name]]
        if both:
            raise InputError(
                f"{', '.join(both)} given both as keywords and in options=: pass each setting one way "
                "(dataclasses.replace(options, ...) makes options with other settings)"
            )
        return options


_DEFAULTS = {f.name: f.default for f in fields(CorpusOptions)}


def _check_field(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise InputError(f"{name} must be a non-empty string, got {value!r}")
