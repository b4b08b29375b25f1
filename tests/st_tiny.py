"""Tiny random-weight sentence-transformers folders of every supported family, built in seconds.

``build_transformer(folder, family)`` writes the Transformer part (config, safetensors, a small
trained tokenizer wrapped in the family's *TokenizerFast); ``write_stack(folder, ...)`` writes
modules.json, the module folders (Pooling, Dense, LayerNorm, Normalize) and the
sentence-transformers configs. The heads are written with sentence_transformers' own module
classes (their ``save``), so the folders are exactly what sentence-transformers saves.
Nothing here downloads anything.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import SENTENCES

CORPUS = [
    *SENTENCES,
    "héllo wörld café naïve 日本語 テキスト 中文 文本",
    "tokenizers split words into word pieces",
    "query: passage: Represent this sentence for searching relevant passages:",
    "Instruct: Given a web search query, retrieve relevant passages",
    "https://example.com/a/b?c=d&e=f",
]

ENCODERS = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet")
DECODERS = ("qwen2", "llama", "mistral")
FAMILIES = ENCODERS + DECODERS
HIDDEN = 32


def _wordpiece(folder: Path, specials: list[str], lowercase: bool = True) -> Path:
    from tokenizers import BertWordPieceTokenizer

    wp = BertWordPieceTokenizer(lowercase=lowercase)
    wp.train_from_iterator(CORPUS * 4, vocab_size=400, min_frequency=1, special_tokens=specials)
    wp.save_model(str(folder))
    return folder / "vocab.txt"


def _bpe(specials: list[str], *, byte_level: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None if byte_level else specials[0]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok


def _unigram(specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok


def _template(tok, single: str, specials: list[str]):
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(s, tok.token_to_id(s)) for s in specials]
    )


def build_transformer(folder: Path, family: str, *, seed: int = 0, padding_side: str | None = None) -> Path:
    """The Transformer part of a tiny ``family`` model in ``folder`` (config, weights, tokenizer)."""
    import torch
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    small = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64)
    if family in ("bert", "distilbert"):
        vocab = _wordpiece(folder, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        cls = tf.BertTokenizerFast if family == "bert" else tf.DistilBertTokenizerFast
        tok = cls(vocab_file=str(vocab), do_lower_case=True)
        if family == "bert":
            cfg, model = tf.BertConfig(vocab_size=tok.vocab_size, **small), tf.BertModel
        else:
            cfg = tf.DistilBertConfig(vocab_size=tok.vocab_size, dim=HIDDEN, n_layers=2, n_heads=2, hidden_dim=64,
                                      max_position_embeddings=64)
            model = tf.DistilBertModel
    elif family == "mpnet":
        vocab = _wordpiece(folder, ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"])
        tok = tf.MPNetTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
        cfg, model = tf.MPNetConfig(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, **small), tf.MPNetModel
    elif family == "roberta":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        bpe = _bpe(specials)
        bpe.model.save(str(folder))
        tok = tf.RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
        cfg = tf.RobertaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                               **{**small, "max_position_embeddings": 66})
        model = tf.RobertaModel
    elif family == "xlm-roberta":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        uni = _unigram(specials)
        _template(uni, "<s> $A </s>", ["<s>", "</s>"])
        tok = tf.XLMRobertaTokenizerFast(tokenizer_object=uni, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                         cls_token="<s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
        cfg = tf.XLMRobertaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                  **{**small, "max_position_embeddings": 66})
        model = tf.XLMRobertaModel
    elif family == "qwen2":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        bpe = _bpe(specials)
        _template(bpe, "$A <|endoftext|>", ["<|endoftext|>"])  # as gte-Qwen2: eos appended, used by last-token pooling
        tok = tf.Qwen2TokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                    unk_token=None, bos_token=None)
        cfg = tf.Qwen2Config(vocab_size=len(tok), num_key_value_heads=1, **small)
        model = tf.Qwen2Model
    elif family in ("llama", "mistral"):
        specials = ["<unk>", "<s>", "</s>"]
        bpe = _bpe(specials)
        tok = tf.LlamaTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                    add_bos_token=True, add_eos_token=True, legacy=False)
        tok.pad_token = "</s>"
        cfg_cls, model = (tf.LlamaConfig, tf.LlamaModel) if family == "llama" else (tf.MistralConfig, tf.MistralModel)
        cfg = cfg_cls(vocab_size=len(tok), num_key_value_heads=1, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, **small)
    else:
        raise ValueError(family)
    if padding_side is not None:
        tok.padding_side = padding_side
    tok.model_max_length = 512
    tok.save_pretrained(str(folder))
    torch.manual_seed(seed)
    m = model(cfg).eval()
    with torch.no_grad():  # random init is tiny: widen it so layers actually mix tokens
        for p in m.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    m.save_pretrained(str(folder), safe_serialization=True)
    return folder


def write_stack(
    folder: Path,
    *,
    pooling="mean",
    include_prompt: bool = True,
    dense: list[tuple[int, str | None, bool]] = (),
    layer_norm: bool = False,
    normalize: bool = True,
    max_seq_length: int | None = 24,
    prompts: dict | None = None,
    default_prompt_name: str | None = None,
    similarity_fn_name: str | None = None,
    seed: int = 0,
) -> Path:
    """modules.json, module folders and configs of a sentence-transformers stack over ``folder``'s Transformer.

    ``dense``: (out_features, activation class path or None, bias) per Dense layer.
    """
    import torch
    from sentence_transformers.models import Dense, LayerNorm, Pooling

    for old in folder.glob("[0-9]_*"):
        shutil.rmtree(old)
    torch.manual_seed(seed)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]

    def add(kind: str, module=None):
        i = len(modules)
        path = f"{i}_{kind}"
        modules.append({"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"})
        (folder / path).mkdir()
        if module is not None:
            module.save(str(folder / path))

    pool = Pooling(HIDDEN, pooling_mode=pooling, include_prompt=include_prompt)
    add("Pooling", pool)
    dim = pool.get_embedding_dimension()
    for out, act, bias in dense:
        fn = None
        if act is not None:
            mod, name = act.rsplit(".", 1)
            fn = getattr(__import__(mod, fromlist=[name]), name)()
        d = Dense(dim, out, bias=bias, activation_function=fn)
        with torch.no_grad():
            d.linear.weight.normal_(0, 0.5)
            if bias:
                d.linear.bias.normal_(0, 0.5)
        add("Dense", d)
        dim = out
    if layer_norm:
        ln = LayerNorm(dim)
        with torch.no_grad():
            ln.norm.weight.normal_(1, 0.2)
            ln.norm.bias.normal_(0, 0.2)
        add("LayerNorm", ln)
    if normalize:
        add("Normalize")
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    sb = {"do_lower_case": False}
    if max_seq_length is not None:
        sb["max_seq_length"] = max_seq_length
    (folder / "sentence_bert_config.json").write_text(json.dumps(sb))
    cst = {"prompts": prompts or {}, "default_prompt_name": default_prompt_name}
    if similarity_fn_name is not None:
        cst["similarity_fn_name"] = similarity_fn_name
    (folder / "config_sentence_transformers.json").write_text(json.dumps(cst))
    return folder
