"""Tokenization exactly as sentence-transformers does it.

sentence-transformers truncates at ``max_seq_length`` from sentence_bert_config.json (256 for
all-MiniLM-L6-v2, 384 for all-mpnet-base-v2). The models' tokenizer.json carries its own
truncation/padding at 128: a trap that silently cuts documents in half. We clear both and set
truncation to ``max_seq_length``; padding is done per batch, to the longest text in it.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

_TRAILING_SPACE = re.compile(r"\s(?=\S*$)")


class Tokenizer:
    """HF ``tokenizers`` with sentence-transformers' truncation; returns id arrays."""

    # Texts longer than this many characters per allowed token are cut (at whitespace) before
    # tokenization, so a 1 MB string costs no more than a normal document. The cut keeps the
    # exact result: if the kept prefix does not yield more tokens than the limit, it doubles.
    CHARS_PER_TOKEN_BOUND = 16

    def __init__(self, path: str | Path, max_length: int):
        from tokenizers import Tokenizer as HFTokenizer

        self.max_length = int(max_length)
        tok = HFTokenizer.from_file(str(path))
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_length, strategy="longest_first")
        self._tok = tok
        self._probe = HFTokenizer.from_file(str(path))  # no truncation: counts a prefix's tokens
        self._probe.no_padding()
        self._probe.no_truncation()
        self._specials = self._tok.post_processor.num_special_tokens_to_add(False) if self._tok.post_processor else 0
        self.pad_id = self._pad_id(tok)

    @staticmethod
    def _pad_id(tok) -> int:
        for name in ("[PAD]", "<pad>", "<PAD>"):
            i = tok.token_to_id(name)
            if i is not None:
                return int(i)
        return 0

    def _prefix(self, text: str) -> str:
        """A whitespace-bounded prefix of ``text`` that tokenizes to the same first max_length tokens."""
        limit = self.max_length * self.CHARS_PER_TOKEN_BOUND
        while limit < len(text):
            head = text[:limit]
            m = _TRAILING_SPACE.search(head)
            if m is not None and m.start() > 0:
                head = head[: m.start()]
                # enough whole words that the cut cannot reach the kept tokens
                n = len(self._probe.encode(head, add_special_tokens=False).ids)
                if n > self.max_length:
                    return head
            limit *= 2
        return text

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids (int64) of each text, with special tokens, truncated at max_length."""
        cut = [self._prefix(t) if len(t) > self.max_length * self.CHARS_PER_TOKEN_BOUND else t for t in texts]
        # encode_batch_fast (tokenizers >= 0.21) skips character offsets: same ids, ~15% faster
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [np.asarray(e.ids, dtype=np.int64) for e in encode(cut)]
