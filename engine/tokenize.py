"""Tokenization exactly as sentence-transformers does it.

sentence-transformers truncates at ``max_seq_length`` from sentence_bert_config.json (256 for
all-MiniLM-L6-v2, 384 for all-mpnet-base-v2). The models' tokenizer.json carries its own
truncation/padding at 128: a trap that silently cuts documents in half. We clear both and set
truncation to ``max_seq_length`` (on the tokenizer's truncation side); padding is done per batch,
to the longest text in it, on the tokenizer's padding side (engine/batching.py). For models outside
the catalogue max_seq_length follows sentence-transformers: sentence_bert_config.json's
max_seq_length, else the tokenizer's model_max_length capped by max_position_embeddings
(engine/models/fetch.py ``max_seq_length_of``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from .errors import InputError


class Tokenizer:
    """HF ``tokenizers`` with sentence-transformers' truncation; returns id arrays.

    Args:
        path: the model's tokenizer.json.
        max_length: tokens per text after truncation, special tokens included; None or 0: no
            truncation (a model without any length limit).
        truncation_side: which end a long text loses ("right" or "left"), as the model's tokenizer says.
        special_ids: the tokenizer's special token ids (``prompt_length`` drops a trailing one).
        pad_id: the padding token id; None: the id of [PAD] / <pad> / <PAD>, else 0.
    """

    # Texts longer than this many characters per allowed token are cut before tokenization, so a
    # 5 MB string costs no more than a normal document (``_prefix``).
    CHARS_PER_TOKEN_BOUND = 16

    def __init__(
        self,
        path: str | Path,
        max_length: int | None,
        truncation_side: str = "right",
        special_ids=(),
        pad_id: int | None = None,
    ):
        from tokenizers import Tokenizer as HFTokenizer

        self.truncation_side = truncation_side
        tok = HFTokenizer.from_file(str(path))
        tok.no_padding()
        self._tok = tok
        self._probe = HFTokenizer.from_file(str(path))  # no truncation: counts a prefix's tokens
        self._probe.no_padding()
        self._probe.no_truncation()
        # special tokens added to one text ([CLS] + [SEP]: 2): a shorter max_length truncates nothing
        post = self._tok.post_processor
        self.num_special_tokens = post.num_special_tokens_to_add(False) if post else 0
        self.special_ids = frozenset(int(i) for i in special_ids)
        self.pad_id = self._pad_id(tok) if pad_id is None else int(pad_id)
        self._truncate_at(max_length)

    def with_max_length(self, max_length: int | None) -> Tokenizer:
        """A new Tokenizer truncating at ``max_length`` tokens (None or 0: no truncation); this one is
        left as it is. A ``tokenizers`` object must not be changed while another thread encodes with
        it (its "Already borrowed" error), so a setting is a new object, swapped in by the caller."""
        from tokenizers import Tokenizer as HFTokenizer

        new = copy.copy(self)
        new._tok = HFTokenizer.from_str(self._tok.to_str())  # the probe never changes: shared
        new._truncate_at(max_length)
        return new

    def _truncate_at(self, max_length: int | None) -> None:
        """Set the truncation of this (new, not yet shared) object."""
        self.max_length = int(max_length or 0)
        if self.max_length:
            self._tok.enable_truncation(
                max_length=self.max_length, strategy="longest_first", direction=self.truncation_side
            )
        else:
            self._tok.no_truncation()
        # a cut keeps a text's start: only right truncation keeps the start
        right = self.max_length and self.truncation_side == "right"
        self._cut_at = self.max_length * self.CHARS_PER_TOKEN_BOUND if right else 0

    @staticmethod
    def _pad_id(tok) -> int:
        for name in ("[PAD]", "<pad>", "<PAD>"):
            i = tok.token_to_id(name)
            if i is not None:
                return int(i)
        return 0

    def _prefix(self, text: str) -> str:
        """A prefix of ``text`` whose tokens start with the same first max_length + 1 tokens as the text's.

        The tokenizer's model (WordPiece, BPE, Unigram) encodes each pre-token (word) on its own, so
        the tokens of whole words before a cut do not depend on what follows the cut. The head
        ``text[:limit]`` is tokenized once; the cut is placed at the start of the second word that
        begins after token max_length, and at least one more word must begin in the head after it
        (a word at the very end of the head may be incomplete, and a pre-tokenizer's look-ahead
        reaches one character). The kept prefix is then checked to yield the head's first
        max_length + 1 tokens; when any condition fails the head doubles, up to the whole text.
        A text that is one single pre-token (e.g. 5 MB of CJK for a Metaspace/Unigram tokenizer,
        which splits only at spaces) cannot be cut and is tokenized whole: slow, never wrong.
        """
        limit, n = self._cut_at, self.max_length
        while limit < len(text):
            enc = self._probe.encode(text[:limit], add_special_tokens=False)
            words = enc.word_ids
            starts = [i for i in range(n + 1, len(words)) if words[i] is None or words[i] != words[i - 1]]
            if len(starts) >= 3:
                head = text[: enc.offsets[starts[1]][0]]
                if self._probe.encode(head, add_special_tokens=False).ids[: n + 1] == enc.ids[: n + 1]:
                    return head
            limit *= 2
        return text

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids (int64) of each text, with special tokens, truncated at max_length.

        A text with no tokens at all (an empty text, for a tokenizer that adds no special tokens:
        GPT-2, GPT-NeoX, BLOOM) is an InputError: no model runs an empty sequence, and
        sentence-transformers fails on it too (or, batched with longer texts, gives a vector that
        depends on the batch).
        """
        cut = [self._prefix(t) if self._cut_at and len(t) > self._cut_at else t for t in texts]
        # encode_batch_fast (tokenizers >= 0.21) skips computing character offsets: same ids, less work
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encode(cut)]
        if ids and min(map(len, ids)) == 0:
            empty = next(i for i, x in enumerate(ids) if not len(x))
            raise InputError(
                f"text {empty} ({texts[empty][:40]!r}) has no tokens: this model's tokenizer adds no special tokens "
                "(no BOS/EOS), so the text is an empty sequence, which the model cannot run (sentence-transformers "
                "fails on it too). Leave out empty texts, or give them a prompt."
            )
        return ids

    def prompt_length(self, prompt: str) -> int:
        """Tokens of ``prompt`` alone (with special tokens, truncated), less a trailing special token:
        sentence-transformers' prompt_length, the tokens include_prompt=False leaves out of pooling."""
        ids = self._tok.encode(prompt).ids
        return len(ids) - 1 if ids and ids[-1] in self.special_ids else len(ids)
