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

ENCODERS = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet")  # exported with onnxruntime's fusions
DECODERS = ("qwen2", "llama", "mistral")
FAMILIES = ENCODERS + DECODERS
# more families users publish sentence-transformers models in, exported unfused; T5 / mT5 run their
# encoder alone and BART / mBART the whole model (decoder fed the input shifted right), as in
# sentence-transformers; gemma3_text is bidirectional (EmbeddingGemma's config)
MORE_ENCODERS = ("electra", "albert", "deberta-v2", "camembert", "modernbert", "t5", "mt5", "bart", "mbart")
MORE_DECODERS = ("qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2", "gpt_neo", "gpt_neox", "bloom")
# tokenizers that add no special tokens: an empty text has no tokens at all
NO_SPECIAL_TOKENS = ("gpt2", "gpt_neo", "gpt_neox", "bloom")
HIDDEN = 32
# sliding / local attention windows: wider than the 16-token dummy input optimum exports with (a
# window the export never saw bite), narrower than the 24 tokens the long test texts keep
WINDOW = 20


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
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok


def _unigram(specials: list[str], unk: str = "<unk>"):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token=unk)
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
    small = dict(
        hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64
    )
    if family in (*MORE_ENCODERS, "ernie"):
        tok, cfg, model = _more_encoder(folder, family, small)
    elif family in MORE_DECODERS:
        tok, cfg, model = _more_decoder(folder, family, small)
    elif family in ("bert", "distilbert"):
        vocab = _wordpiece(folder, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        cls = tf.BertTokenizerFast if family == "bert" else tf.DistilBertTokenizerFast
        tok = cls(vocab_file=str(vocab), do_lower_case=True)
        if family == "bert":
            cfg, model = tf.BertConfig(vocab_size=tok.vocab_size, **small), tf.BertModel
        else:
            cfg = tf.DistilBertConfig(
                vocab_size=tok.vocab_size, dim=HIDDEN, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64
            )
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
        cfg = tf.RobertaConfig(
            vocab_size=len(tok), pad_token_id=tok.pad_token_id, **{**small, "max_position_embeddings": 66}
        )
        model = tf.RobertaModel
    elif family == "xlm-roberta":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        uni = _unigram(specials)
        _template(uni, "<s> $A </s>", ["<s>", "</s>"])
        tok = tf.XLMRobertaTokenizerFast(
            tokenizer_object=uni,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            pad_token="<pad>",
            unk_token="<unk>",
            mask_token="<mask>",
        )
        cfg = tf.XLMRobertaConfig(
            vocab_size=len(tok), pad_token_id=tok.pad_token_id, **{**small, "max_position_embeddings": 66}
        )
        model = tf.XLMRobertaModel
    elif family == "qwen2":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        bpe = _bpe(specials)
        _template(bpe, "$A <|endoftext|>", ["<|endoftext|>"])  # as gte-Qwen2: eos appended, used by last-token pooling
        tok = tf.Qwen2TokenizerFast(
            tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None
        )
        cfg = tf.Qwen2Config(vocab_size=len(tok), num_key_value_heads=1, **small)
        model = tf.Qwen2Model
    elif family in ("llama", "mistral"):
        specials = ["<unk>", "<s>", "</s>"]
        bpe = _bpe(specials)
        tok = tf.LlamaTokenizerFast(
            tokenizer_object=bpe,
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            add_bos_token=True,
            add_eos_token=True,
            legacy=False,
        )
        tok.pad_token = "</s>"
        cfg_cls, model = (tf.LlamaConfig, tf.LlamaModel) if family == "llama" else (tf.MistralConfig, tf.MistralModel)
        cfg = cfg_cls(
            vocab_size=len(tok),
            num_key_value_heads=1,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            **small,
        )
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


def _more_encoder(folder: Path, family: str, small: dict):
    """(tokenizer, config, model class) of MORE_ENCODERS (and ernie, which optimum cannot export: a
    refusal case)."""
    import transformers as tf

    seq2seq = dict(
        d_model=HIDDEN,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
    )
    if family in ("electra", "ernie"):
        vocab = _wordpiece(folder, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        if family == "ernie":
            tok = tf.BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
            return tok, tf.ErnieConfig(vocab_size=tok.vocab_size, **small), tf.ErnieModel
        tok = tf.ElectraTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
        return tok, tf.ElectraConfig(vocab_size=tok.vocab_size, embedding_size=16, **small), tf.ElectraModel
    if family in ("albert", "deberta-v2"):
        specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
        uni = _unigram(specials, unk="[UNK]")
        _template(uni, "[CLS] $A [SEP]", ["[CLS]", "[SEP]"])
        kw = dict(
            tokenizer_object=uni,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )
        if family == "albert":
            tok = tf.AlbertTokenizerFast(**kw, do_lower_case=True)
            return tok, tf.AlbertConfig(vocab_size=len(tok), embedding_size=16, pad_token_id=0, **small), tf.AlbertModel
        tok = tf.DebertaV2TokenizerFast(**kw)
        cfg = tf.DebertaV2Config(
            vocab_size=len(tok),
            pad_token_id=0,
            relative_attention=True,
            position_buckets=16,
            max_relative_positions=64,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            **small,
        )
        return tok, cfg, tf.DebertaV2Model
    if family == "camembert":
        uni = _unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        _template(uni, "<s> $A </s>", ["<s>", "</s>"])
        tok = tf.CamembertTokenizerFast(
            tokenizer_object=uni,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            pad_token="<pad>",
            unk_token="<unk>",
            mask_token="<mask>",
        )
        cfg = tf.CamembertConfig(vocab_size=len(tok), pad_token_id=1, **{**small, "max_position_embeddings": 66})
        return tok, cfg, tf.CamembertModel
    if family == "modernbert":  # one global and one local (WINDOW tokens, centred) attention layer
        bpe = _bpe(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        _template(bpe, "[CLS] $A [SEP]", ["[CLS]", "[SEP]"])
        tok = tf.PreTrainedTokenizerFast(
            tokenizer_object=bpe,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_input_names=["input_ids", "attention_mask"],
        )
        cfg = tf.ModernBertConfig(
            vocab_size=len(tok),
            pad_token_id=0,
            cls_token_id=2,
            sep_token_id=3,
            bos_token_id=2,
            eos_token_id=3,
            global_attn_every_n_layers=2,
            local_attention=WINDOW,
            **small,
        )
        return tok, cfg, tf.ModernBertModel
    if family in ("t5", "mt5"):  # saved as sentence-transformers loads them: the encoder alone
        uni = _unigram(["<pad>", "</s>", "<unk>"])
        _template(uni, "$A </s>", ["</s>"])
        tok = tf.T5TokenizerFast(
            tokenizer_object=uni, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0
        )
        cfg_cls, model = (tf.T5Config, tf.T5EncoderModel) if family == "t5" else (tf.MT5Config, tf.MT5EncoderModel)
        cfg = cfg_cls(
            vocab_size=len(tok),
            d_model=HIDDEN,
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_heads=2,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
        )
        return tok, cfg, model
    if family in ("bart", "mbart"):
        bpe = _bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        bpe.model.save(str(folder))
        tok = tf.BartTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
        cfg_cls, model = (tf.BartConfig, tf.BartModel) if family == "bart" else (tf.MBartConfig, tf.MBartModel)
        return (
            tok,
            cfg_cls(
                vocab_size=len(tok), pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, **seq2seq
            ),
            model,
        )
    raise ValueError(family)


def _more_decoder(folder: Path, family: str, small: dict):
    """(tokenizer, config, model class) of MORE_DECODERS."""
    import transformers as tf

    if family in ("qwen3", "gemma", "gemma2", "gemma3_text", "phi3"):
        bpe = _bpe(["<pad>", "<eos>", "<bos>", "<unk>"])
        _template(bpe, "<bos> $A <eos>", ["<bos>", "<eos>"])
        cls = tf.GemmaTokenizerFast if family.startswith("gemma") else tf.PreTrainedTokenizerFast
        tok = cls(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
        kw = dict(vocab_size=len(tok), num_key_value_heads=1, pad_token_id=0, bos_token_id=2, eos_token_id=1, **small)
        if family == "phi3":
            return tok, tf.Phi3Config(**kw), tf.Phi3Model
        if family == "qwen3":
            return tok, tf.Qwen3Config(head_dim=16, **kw), tf.Qwen3Model
        if family == "gemma":
            return tok, tf.GemmaConfig(head_dim=16, **kw), tf.GemmaModel
        if family == "gemma2":  # every other layer attends to a sliding window
            return tok, tf.Gemma2Config(head_dim=16, sliding_window=WINDOW, **kw), tf.Gemma2Model
        cfg = tf.Gemma3TextConfig(head_dim=16, sliding_window=WINDOW, use_bidirectional_attention=True, **kw)
        return tok, cfg, tf.Gemma3TextModel
    # GPT-2 style: byte-level BPE, no special tokens added, the end-of-text token pads
    bpe = _bpe(["<|endoftext|>"])
    bpe.model.save(str(folder))
    tok = tf.GPT2TokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    tok.pad_token = tok.eos_token
    if family == "gpt2":  # n_positions: its position limit's name
        return (
            tok,
            tf.GPT2Config(
                vocab_size=len(tok), n_embd=HIDDEN, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0
            ),
            tf.GPT2Model,
        )
    if family == "gpt_neo":  # a global and a local (WINDOW) layer, as SGPT's GPT-Neo
        return (
            tok,
            tf.GPTNeoConfig(
                vocab_size=len(tok),
                hidden_size=HIDDEN,
                num_layers=2,
                num_heads=2,
                intermediate_size=64,
                max_position_embeddings=64,
                window_size=WINDOW,
                attention_types=[[["global", "local"], 1]],
                bos_token_id=0,
                eos_token_id=0,
            ),
            tf.GPTNeoModel,
        )
    if family == "gpt_neox":
        return tok, tf.GPTNeoXConfig(vocab_size=len(tok), bos_token_id=0, eos_token_id=0, **small), tf.GPTNeoXModel
    if family == "bloom":
        return (
            tok,
            tf.BloomConfig(
                vocab_size=len(tok), hidden_size=HIDDEN, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
            ),
            tf.BloomModel,
        )
    raise ValueError(family)


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
