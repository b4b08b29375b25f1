"""A sentence-transformers folder's module stack, read into one typed description (no torch).

``read_stack(folder)`` reads modules.json, every module's config, sentence_bert_config.json and
config_sentence_transformers.json, exactly as sentence-transformers 5.x interprets them:

    Transformer ─▶ Pooling ─▶ (Dense | LayerNorm | Normalize | Dropout)*

* Pooling: every mode of sentence-transformers 5 (``cls``, ``mean``, ``max``,
  ``mean_sqrt_len_tokens``, ``weightedmean``, ``lasttoken``), several at once concatenated in the
  configured order, ``include_prompt``; the legacy ``pooling_mode_*`` flags are converted as
  sentence-transformers converts them (none set: mean).
* Dense: weights, bias and an activation among ``ACTIVATIONS`` (the torch class sentence-transformers
  instantiates with default arguments); a missing ``activation_function`` is Tanh, as in
  sentence-transformers.
* LayerNorm (``nn.LayerNorm(dimension)``, eps 1e-5), Normalize, Dropout (identity at inference).
* Prompts: ``{"query": "", "document": ""}`` updated with the config's ``prompts``, and
  ``default_prompt_name``; ``similarity_fn_name`` (default cosine) and ``truncate_dim``.

Anything else (another module type, a custom class, a Dense on token embeddings, a transformer
task other than feature extraction, model or config kwargs) is an ``UnsupportedModelError``
naming the module, the option and the folder: the engine never approximates a model.

The description is plain data (``to_dict``/``from_dict``, stored in an export's meta.json); the
Dense and LayerNorm weights are read at export time (``load_weights``) and saved with the export,
so running a model needs only numpy.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UnsupportedModelError

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# the legacy flags, in the order sentence-transformers concatenates them
_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# torch activation class (as Dense's config names it) -> the kernels' activation name
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.SiLU": "silu",
}
SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")
_SBERT_CONFIGS = (
    "sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
    "sentence_camembert_config.json", "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
_DEFAULT_MODALITY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}


@dataclass(frozen=True)
class Pooling:
    modes: tuple[str, ...] = ("mean",)
    include_prompt: bool = True


@dataclass(frozen=True)
class Dense:
    in_features: int
    out_features: int
    bias: bool = True
    activation: str = "tanh"
    path: str = ""  # module folder inside the model folder (where its weights are)


@dataclass(frozen=True)
class LayerNorm:
    dimension: int
    eps: float = 1e-5
    path: str = ""


@dataclass(frozen=True)
class Normalize:
    pass


_HEAD_TYPES = {"Dense": Dense, "LayerNorm": LayerNorm, "Normalize": Normalize}


@dataclass(frozen=True)
class ModuleStack:
    """What a sentence-transformers model computes after its Transformer, and how it is fed."""

    hidden_size: int
    pooling: Pooling = Pooling()
    head: tuple = ()  # Dense | LayerNorm | Normalize, in order
    max_seq_length: int | None = None  # from sentence_bert_config.json; resolved with the tokenizer at export
    do_lower_case: bool = False
    processor_kwargs: dict = field(default_factory=dict)  # passed to AutoTokenizer, as sentence-transformers does
    prompts: dict = field(default_factory=lambda: {"query": "", "document": ""})
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"
    truncate_dim: int | None = None

    @property
    def dim(self) -> int:
        """Output dimension: the last Dense's out_features, else modes x hidden size; truncate_dim caps it."""
        d = len(self.pooling.modes) * self.hidden_size
        for m in self.head:
            if isinstance(m, Dense):
                d = m.out_features
        return min(d, self.truncate_dim) if self.truncate_dim else d

    @property
    def normalizes(self) -> bool:
        """Whether the model's own last module is Normalize (its raw output is unit length)."""
        return bool(self.head) and isinstance(self.head[-1], Normalize)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["pooling"]["modes"] = list(self.pooling.modes)
        d["head"] = [{"type": type(m).__name__, **dataclasses.asdict(m)} for m in self.head]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModuleStack:
        d = dict(d)
        p = d.pop("pooling")
        head = tuple(_HEAD_TYPES[m["type"]](**{k: v for k, v in m.items() if k != "type"}) for m in d.pop("head"))
        return cls(pooling=Pooling(tuple(p["modes"]), bool(p["include_prompt"])), head=head, **d)


def _read_json(path: Path) -> dict | list | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UnsupportedModelError(f"{path} is not valid JSON ({e}); re-save the model") from e


def _refuse(folder: Path, module: str, what: str, fix: str = "") -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{folder}: {module}: {what} is not supported by the engine (it would not give the vectors "
        f"sentence-transformers gives)." + (f" {fix}" if fix else "")
    )


def _module_kind(folder: Path, entry: dict) -> str:
    """'Transformer', 'Pooling', ... for a sentence_transformers class; refuse anything else."""
    ref = str(entry.get("type", ""))
    name = ref.rsplit(".", 1)[-1]
    if not ref.startswith("sentence_transformers."):
        raise _refuse(folder, f"module {entry.get('idx')} ({ref})", "a custom module class (remote code)",
                      "Only sentence-transformers' own modules can be reproduced.")
    if name not in ("Transformer", "Pooling", "Dropout", *_HEAD_TYPES):
        raise _refuse(folder, f"module {entry.get('idx')} ({ref})", f"the module type {name}",
                      "Supported: Transformer, Pooling, Dense, LayerNorm, Normalize, Dropout.")
    return name


def _pooling(folder: Path, path: str, hidden: int) -> Pooling:
    cfg = dict(_read_json(folder / path / "config.json") or {})
    where = f"Pooling ({path}/config.json)"
    legacy = [k for k in _LEGACY_POOLING if k in cfg]
    if legacy and "pooling_mode" not in cfg:
        active = tuple(m for k, m in _LEGACY_POOLING.items() if cfg.get(k))
        cfg["pooling_mode"] = active or ("mean",)
    for k in legacy:
        del cfg[k]
    mode = cfg.pop("pooling_mode", "mean")
    modes = (mode,) if isinstance(mode, str) else tuple(mode)
    include_prompt = cfg.pop("include_prompt", True)
    # embedding_dimension only sizes sentence-transformers' get_embedding_dimension(); the vectors
    # pool the transformer's actual hidden states, as here
    cfg.pop("embedding_dimension", None)
    cfg.pop("word_embedding_dimension", None)
    if cfg:
        raise _refuse(folder, where, f"the option(s) {', '.join(sorted(cfg))}")
    for m in modes:
        if m not in POOLING_MODES:
            raise _refuse(folder, where, f"pooling mode {m!r}", f"Known modes: {', '.join(POOLING_MODES)}.")
    if not modes:
        raise _refuse(folder, where, "an empty pooling_mode")
    return Pooling(modes, bool(include_prompt))


def _dense(folder: Path, path: str, dim: int) -> Dense:
    cfg = dict(_read_json(folder / path / "config.json") or {})
    where = f"Dense ({path}/config.json)"
    act = cfg.pop("activation_function", "torch.nn.modules.activation.Tanh")  # sentence-transformers' default
    if act not in ACTIVATIONS:
        raise _refuse(folder, where, f"the activation function {act!r}",
                      f"Supported: {', '.join(sorted(ACTIVATIONS))}.")
    for key, want in (("module_input_name", "sentence_embedding"), ("module_output_name", "sentence_embedding")):
        got = cfg.pop(key, want) or want
        if got != want:
            raise _refuse(folder, where, f"{key}={got!r} (only Dense layers on the sentence embedding are)")
    d = Dense(int(cfg.pop("in_features")), int(cfg.pop("out_features")), bool(cfg.pop("bias", True)),
              ACTIVATIONS[act], path)
    if cfg:
        raise _refuse(folder, where, f"the option(s) {', '.join(sorted(cfg))}")
    if d.in_features != dim:
        raise _refuse(folder, where, f"in_features {d.in_features} after a {dim}-dimensional module")
    return d


def _transformer_config(folder: Path) -> dict:
    """sentence_bert_config.json (or a legacy name), checked: only options the engine reproduces."""
    cfg = next((c for n in _SBERT_CONFIGS if (c := _read_json(folder / n)) is not None), None) or {}
    cfg = dict(cfg)
    where = "Transformer (sentence_bert_config.json)"
    out = {"max_seq_length": cfg.pop("max_seq_length", None), "do_lower_case": bool(cfg.pop("do_lower_case", False))}
    processor = {**(cfg.pop("tokenizer_args", None) or {}), **(cfg.pop("processor_kwargs", None) or {})}
    processor.pop("trust_remote_code", None)
    out["processor_kwargs"] = processor
    for key in ("model_kwargs", "model_args", "config_kwargs", "config_args"):
        extra = {k: v for k, v in (cfg.pop(key, None) or {}).items() if k != "trust_remote_code"}
        dtype = extra.pop("torch_dtype", extra.pop("dtype", "float32"))
        if extra or dtype not in ("float32", "torch.float32"):
            extra = {**extra, **({"dtype": dtype} if dtype not in ("float32", "torch.float32") else {})}
            raise _refuse(folder, where, f"{key} {extra}", "The engine exports the model in float32 as configured.")
    task = cfg.pop("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise _refuse(folder, where, f"transformer_task={task!r}")
    modality = cfg.pop("modality_config", None)
    if modality not in (None, _DEFAULT_MODALITY):
        raise _refuse(folder, where, f"modality_config {modality}", "Only text through the model's forward is.")
    if cfg.pop("module_output_name", "token_embeddings") != "token_embeddings":
        raise _refuse(folder, where, "a module_output_name other than token_embeddings")
    if cfg.pop("processing_kwargs", None):
        raise _refuse(folder, where, "processing_kwargs")
    cfg.pop("unpad_inputs", None)  # flash-attention only; the padded result is the same
    cfg.pop("backend", None)
    if cfg:
        raise _refuse(folder, where, f"the option(s) {', '.join(sorted(cfg))}")
    return out


def _read_modules(folder: Path, modules: list, hidden_size: int) -> tuple[Pooling, tuple]:
    """The Pooling and the head modules of modules.json, checked in order."""
    pooling, head = Pooling(), []
    entries = sorted(modules, key=lambda m: int(m.get("idx", 0)))
    kinds = [_module_kind(folder, m) for m in entries]
    if not kinds or kinds[0] != "Transformer":
        raise _refuse(folder, "modules.json", f"a stack that starts with {kinds[:1] or 'nothing'}",
                      "The first module must be a Transformer.")
    if entries[0].get("path", "") not in ("", "."):
        raise _refuse(folder, "module 0 (Transformer)", f"a Transformer in the sub-folder {entries[0]['path']!r}",
                      "Move its files to the model folder's root.")
    if "Pooling" not in kinds:
        raise _refuse(folder, "modules.json", "a stack without a Pooling module (token embeddings only)")
    dim, seen_pooling = hidden_size, False
    for entry, kind in zip(entries[1:], kinds[1:]):
        path = str(entry.get("path", ""))
        if kind == "Pooling":
            if seen_pooling:
                raise _refuse(folder, f"Pooling ({path})", "a second Pooling module")
            pooling, seen_pooling = _pooling(folder, path, hidden_size), True
            dim = len(pooling.modes) * hidden_size
            continue
        if not seen_pooling:
            raise _refuse(folder, f"{kind} ({path})", f"a {kind} module before Pooling (on token embeddings)")
        if kind == "Dense":
            d = _dense(folder, path, dim)
            head.append(d)
            dim = d.out_features
        elif kind == "LayerNorm":
            cfg = _read_json(folder / path / "config.json") or {}
            if int(cfg.get("dimension", -1)) != dim or set(cfg) - {"dimension"}:
                raise _refuse(folder, f"LayerNorm ({path})", f"the config {cfg} after a {dim}-dimensional module")
            head.append(LayerNorm(dim, path=path))
        elif kind == "Normalize":
            head.append(Normalize())
        # Dropout: the identity at inference
    return pooling, tuple(head)


def read_stack(folder: str | Path, hidden_size: int) -> ModuleStack:
    """The module stack of the sentence-transformers (or plain Hugging Face) model in ``folder``.

    Without modules.json sentence-transformers builds Transformer + mean Pooling; so does this.
    """
    folder = Path(folder)
    modules = _read_json(folder / "modules.json")
    tcfg = _transformer_config(folder)
    pooling, head = _read_modules(folder, modules, hidden_size) if modules is not None else (Pooling(), ())
    st = _read_json(folder / "config_sentence_transformers.json") or {}
    kind = st.get("model_type", "SentenceTransformer")
    if kind != "SentenceTransformer":
        raise _refuse(folder, "config_sentence_transformers.json", f"model_type {kind!r}",
                      "Only SentenceTransformer (dense embedding) models are.")
    prompts: dict = {"query": None, "document": None}
    for name, text in (st.get("prompts") or {}).items():
        if name not in prompts or prompts[name] is None:
            prompts[name] = text
    prompts = {k: ("" if v is None else str(v)) for k, v in prompts.items()}
    default = st.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise _refuse(folder, "config_sentence_transformers.json",
                      f"default_prompt_name {default!r} without such a prompt")
    sim = st.get("similarity_fn_name") or "cosine"
    if sim not in SIMILARITIES:
        raise _refuse(folder, "config_sentence_transformers.json", f"similarity_fn_name {sim!r}",
                      f"Known: {', '.join(SIMILARITIES)}.")
    truncate = st.get("truncate_dim")
    return ModuleStack(
        hidden_size=hidden_size,
        pooling=pooling,
        head=head,
        max_seq_length=None if tcfg["max_seq_length"] is None else int(tcfg["max_seq_length"]),
        do_lower_case=tcfg["do_lower_case"],
        processor_kwargs=tcfg["processor_kwargs"],
        prompts=prompts,
        default_prompt_name=default,
        similarity_fn_name=sim,
        truncate_dim=None if truncate is None else int(truncate),
    )


def load_weights(folder: str | Path, stack: ModuleStack) -> dict:
    """The head's parameters as float32 arrays: ``{"<i>.weight": ..., "<i>.bias": ...}`` (i: head index).

    Read from each module folder's model.safetensors (numpy, no torch) or pytorch_model.bin (torch,
    export time only), under the names sentence-transformers saves (``linear.*``, ``norm.*``).
    """
    import numpy as np

    out = {}
    for i, m in enumerate(stack.head):
        if isinstance(m, Normalize):
            continue
        sub = Path(folder) / m.path
        prefix = "linear" if isinstance(m, Dense) else "norm"
        if (sub / "model.safetensors").is_file():
            from safetensors.numpy import load_file

            tensors = load_file(str(sub / "model.safetensors"))
        elif (sub / "pytorch_model.bin").is_file():
            import torch

            tensors = {k: v.float().numpy() for k, v in torch.load(sub / "pytorch_model.bin", map_location="cpu",
                                                                    weights_only=True).items()}
        else:
            raise UnsupportedModelError(f"{sub}: {type(m).__name__} has no model.safetensors or pytorch_model.bin")
        names = ["weight"] + (["bias"] if not isinstance(m, Dense) or m.bias else [])
        for n in names:
            t = tensors.get(f"{prefix}.{n}")
            if t is None:
                raise UnsupportedModelError(
                    f"{sub}: {type(m).__name__} weights lack {prefix}.{n} (keys: {sorted(tensors)})"
                )
            out[f"{i}.{n}"] = np.ascontiguousarray(t, dtype=np.float32)
        want = (m.out_features, m.in_features) if isinstance(m, Dense) else (m.dimension,)
        if out[f"{i}.weight"].shape != want:
            raise UnsupportedModelError(f"{sub}: weight shape {out[f'{i}.weight'].shape}, config says {want}")
    return out
