"""What the benchmarks encode: the data folder, corpus files, and texts cut to a token length.

``data_dir()`` finds the benchmark data (SciFact, STS-dev); ``scifact_sts_texts`` is the
bench/ scripts' encoding workload from it. ``read_corpus`` reads the documents ``embed bench``
cuts its texts from, ``bucket_texts`` cuts texts of one length bucket (``LENGTH_BUCKETS``) with
a model's own tokenizer, and ``token_count`` counts the real tokens of texts as a model runs them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import InputError

DATA_DIR_ENV = "EMBED_DATA_DIR"
# target tokens per text (special tokens included), capped at the model's max_seq_length
LENGTH_BUCKETS = {"short": 16, "medium": 64, "long": 256}


def data_dir(*parts: str | os.PathLike, must_exist: bool = True) -> Path:
    """The benchmark data folder (or a path inside it).

    The folder is ``$EMBED_DATA_DIR`` when that is set, else ``shared/data`` beside the source
    checkout (the folder that holds this repository).

    Args:
        *parts: path parts joined onto the folder, e.g. ``data_dir("stsb", "sts-dev.csv")``.
        must_exist: raise when the path is missing (default); False returns it either way, for
            callers that use the data only when it is there.

    Returns:
        The folder joined with ``parts``.

    Raises:
        FileNotFoundError: the path does not exist (and ``must_exist``); the message names it and
            the ``EMBED_DATA_DIR`` variable that points elsewhere.
    """
    import engine

    env = os.environ.get(DATA_DIR_ENV)
    root = Path(env).expanduser() if env else Path(engine.__file__).resolve().parents[1].parent / "shared" / "data"
    path = root.joinpath(*parts)
    if must_exist and not path.exists():
        where = f"{DATA_DIR_ENV}={env}" if env else "the default: shared/data beside the checkout"
        raise FileNotFoundError(
            f"benchmark data not found: {path} does not exist ({where}); set {DATA_DIR_ENV} to the folder "
            "that holds the benchmark data (scifact/, stsb/)"
        )
    return path


def scifact_sts_texts(data: str | os.PathLike, n_docs: int, n_sents: int) -> dict[str, list[str]]:
    """The encoding workload of the bench/ scripts: SciFact documents and STS-dev sentences.

    Args:
        data: a folder with scifact/ (BEIR layout) and stsb/sts-dev.csv, e.g. ``data_dir()``.
        n_docs: how many SciFact documents, from the first (the one title+text rule).
        n_sents: how many STS-dev sentences, from the first (sentence1 and sentence2 interleaved).

    Returns:
        ``{"docs": [n_docs texts], "sents": [n_sents texts]}``.

    Raises:
        FileNotFoundError: a file is missing; the message names it.
    """
    from ..eval.evaluate import load_beir, load_sts

    docs = load_beir(Path(data) / "scifact").doc_texts
    s1, s2, _ = load_sts(Path(data) / "stsb" / "sts-dev.csv")
    return {"docs": docs[:n_docs], "sents": [s for pair in zip(s1, s2) for s in pair][:n_sents]}


def read_corpus(path: str | os.PathLike | None = None) -> list[str]:
    """The non-empty document texts of a corpus file, read by the engine's corpus reader.

    Args:
        path: a .jsonl/.csv/.tsv/.parquet file of records with a ``text``, ``sentence`` or
            ``body`` field (ids optional; the one title+text rule), or any other text file (one
            document per line); None reads the built-in sample corpus.

    Returns:
        The texts, in file order.

    Raises:
        InputError: the file does not exist or holds no text (or a record is malformed; the
            reader's message names the file and line).
    """
    from ..corpus.readers import ANY_TEXT, read_documents, read_sample

    if path is None:
        docs, name = read_sample("sample_corpus.jsonl", ANY_TEXT), "sample_corpus.jsonl"
    else:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(
                f"corpus file {p} does not exist; pass a .jsonl or text file, or omit --corpus "
                "to use the built-in sample corpus"
            )
        docs, name = read_documents(p, ANY_TEXT), p.name
    texts = [d.text for d in docs if d.text]
    if not texts:
        raise InputError(f"corpus {name} holds no text; give a file with at least one non-empty document")
    return texts


def build_texts(
    docs: Sequence[str],
    count_tokens: Callable[[list[str]], Sequence[int]],
    target_tokens: int,
    n: int,
    special_tokens: int = 2,
) -> list[str]:
    """``n`` texts of about ``target_tokens`` tokens each, cut from the docs' running word stream.

    Words are taken greedily, at word boundaries, while they fit the budget of
    ``target_tokens - special_tokens``; the stream wraps around, shifted by a few words each
    time, so a small corpus still yields distinct texts.

    Args:
        docs: the documents; their words, in order, make the stream.
        count_tokens: each word's token count without special tokens (one count per word given).
        target_tokens: tokens per text, special tokens included.
        n: how many texts.
        special_tokens: the special tokens the tokenizer adds to every text.

    Returns:
        ``n`` texts (a corpus shorter than one text gives the whole stream, rotated, each time).

    Raises:
        InputError: ``n`` or ``target_tokens`` below 1, or the docs hold no words.
    """
    if n < 1 or target_tokens < 1:
        raise InputError(f"need n >= 1 and target_tokens >= 1, got n={n}, target_tokens={target_tokens}")
    words = [w for d in docs for w in d.split()]
    if not words:
        raise InputError("the corpus has no words to build texts from")
    unique = list(dict.fromkeys(words))
    per_word = dict(zip(unique, (max(1, int(c)) for c in count_tokens(unique))))
    cost = [per_word[w] for w in words]
    budget = max(1, target_tokens - special_tokens)
    out: list[str] = []
    pos, wraps = 0, 0
    while len(out) < n:
        if pos >= len(words):
            wraps += 1
            pos = (wraps * 7) % len(words)
        chunk: list[str] = []
        used, i = 0, pos
        while used < budget:
            w = words[i % len(words)]
            c = cost[i % len(words)]
            if chunk and used + c > budget:
                break
            chunk.append(w)
            used += c
            i += 1
            if i - pos >= len(words):  # whole corpus is shorter than one text
                break
        out.append(" ".join(chunk))
        pos = i
    return out


def bucket_texts(emb, docs: Sequence[str], length: str, n: int) -> list[str]:
    """``n`` texts of one length bucket, counted with the model's own tokenizer.

    Args:
        emb: the engine's Embedder (its ``tokenize`` and ``max_seq_length`` are used).
        docs: the documents to cut the texts from.
        length: a key of ``LENGTH_BUCKETS``; its token count is capped at ``emb.max_seq_length``,
            special tokens included.
        n: how many texts.

    Returns:
        The texts (see ``build_texts``).

    Raises:
        InputError: an unknown length bucket.
    """
    if length not in LENGTH_BUCKETS:
        raise InputError(f"unknown length bucket {length!r}; use {', '.join(LENGTH_BUCKETS)}")
    specials = len(emb.tokenize([""])[0])
    count = lambda words: [len(x) - specials for x in emb.tokenize(words)]
    return build_texts(docs, count, min(LENGTH_BUCKETS[length], emb.max_seq_length), n, specials)


def token_count(emb, texts: Sequence[str]) -> int:
    """Real tokens of ``texts`` as ``emb`` runs them: special tokens included, after truncation, no padding."""
    return int(sum(len(x) for x in emb.tokenize(list(texts))))
