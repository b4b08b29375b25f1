"""engine.tokenize: texts without tokens and the character cut before tokenizing, against the tokenizer
itself and sentence-transformers (the oracles), on tiny random-weight folders of several families
(tests/st_tiny.py)."""

from __future__ import annotations

import pytest

from engine import Embedder, InputError
from engine.tokenize import Tokenizer
from tests.models.folders import family_folder, rel_diff, st_model
from tests.st_tiny import NO_SPECIAL_TOKENS


@pytest.mark.parametrize("family", NO_SPECIAL_TOKENS)
def test_text_without_tokens_is_refused(transformers_dir, st_cache, tmp_path, family):
    """A tokenizer that adds no special tokens gives "" no tokens: sentence-transformers fails on it,
    the engine refuses it by its index; with a prompt it has tokens and matches."""
    folder = family_folder(transformers_dir, tmp_path, family, prompts={"query": "query: "})
    emb = Embedder(str(folder), cache_dir=st_cache)
    st = st_model(folder)
    with pytest.raises(Exception):  # noqa: B017  (torch's reshape error: no vector to compare with)
        st.encode([""])
    with pytest.raises(InputError, match=r"text 1 \(''\) has no tokens.*no special tokens"):
        emb.encode(["a", "", "b"])
    assert rel_diff(emb.encode_query(["", "a"], normalize=False), st.encode_query(["", "a"])) <= 1e-4


# -- the character cut before tokenizing -----------------------------------------------------------


LONG_TEXTS = {
    "cjk": "日本語のテキスト中文文本한국어" * 20_000,  # no whitespace at all
    "url": "https://example.com/" + "a1b2c3/" * 40_000 + "?q=x",
    "words": "the quick brown fox jumps over the lazy dog " * 5_000,
    "mixed": ("naïve café, 日本語! emoji 🙂🙂 " + "x" * 50 + " ") * 3_000,
    "one-word": "a" * 300_000,
}


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "qwen2"])
@pytest.mark.parametrize("kind", list(LONG_TEXTS))
def test_cut_before_tokenizing_keeps_the_first_tokens(transformers_dir, family, kind):
    tok = Tokenizer(transformers_dir(family) / "tokenizer.json", 24)
    text = LONG_TEXTS[kind]
    oracle = tok._tok.encode(text).ids  # the whole text, truncated by the tokenizer itself
    assert tok.encode([text])[0].tolist() == oracle
    head = tok._prefix(text)
    assert text.startswith(head)
    # a text the pre-tokenizer splits is cut; one single pre-token is tokenized whole (CJK runs are one
    # "word" for byte-level BPE and Metaspace, a URL too for Metaspace; one 300k-letter word for all)
    splits = {"words": True, "mixed": True, "url": family != "xlm-roberta", "cjk": family == "bert", "one-word": False}
    if splits[kind]:
        assert len(head) < 24 * Tokenizer.CHARS_PER_TOKEN_BOUND * 4, (family, kind, len(head))
