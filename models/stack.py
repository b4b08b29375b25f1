"""A sentence-transformers folder's module stack, read into one typed description (no torch).

``read_stack(folder)`` reads modules.json, every module's config, sentence_bert_config.json and
config_sentence_transformers.json, exactly as sentence-transformers 5.x interprets them:

    Transformer ─▶ Pooling ─▶ (Dense | LayerNorm | Normalize | Dropout)*

* Pooling: every mode of sentence-transformers 5 (``cls``, ``mean``, ``max``,
  ``mean_sqrt_len_tokens``, ``weightedmean``, ``lasttoken``), several at once concatenated in the
  configured order, ``include_prompt``; the legacy ``pooling_mode_*`` flags are converted as
  sentence-transformers converts them (none set: mean).
* Dense: weights, bias and an activation among ``ACTIVATIONS`` (the torch class sentence-transformers
  instantiates with default arguments); a missing ``activation_function`` is Tanh, as there.
* LayerNorm (``nn.LayerNorm(dimension)``, eps 1e-5), Normalize, Dropout (identity at inference).
* Prompts: ``{"query": "", "document": ""}`` updated with the config's ``prompts``, and
  ``default_prompt_name``; ``similarity_fn_name`` (default cosine) and ``truncate_dim``.

Anything else (another module type, a custom class, a Dense on token embeddings, a transformer task
other than feature extraction, model or config kwargs) is an ``UnsupportedModelError`` naming the
module, the option and the folder: the engine never approximates a model.

The description is plain data (``to_dict``/``from_dict``, stored in an export's meta.json); the
Dense and LayerNorm weights are read at export time (``load_weights``) and saved with the export.
Every config file is read by ``read_config`` (models/fetch.py uses it too).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PureWindowsPath

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
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
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
        """The stack as plain JSON data (what an export's meta.json stores)."""
        d = dataclasses.asdict(self)
        d["pooling"]["modes"] = list(self.pooling.modes)
        d["head"] = [{"type": type(m).__name__, **dataclasses.asdict(m)} for m in self.head]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModuleStack:
        """The stack ``to_dict`` wrote."""
        d = dict(d)
        p = d.pop("pooling")
        head = tuple(_HEAD_TYPES[m["type"]](**{k: v for k, v in m.items() if k != "type"}) for m in d.pop("head"))
        return cls(pooling=Pooling(tuple(p["modes"]), bool(p["include_prompt"])), head=head, **d)


def _load_json(path: Path):
    """The JSON value in the model file ``path``; FileNotFoundError when there is no such file.

    Raises:
        UnsupportedModelError: the file cannot be read or parsed (invalid JSON, a number of > 4300
            digits, deep nesting); the message names it.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RecursionError) as e:
        raise UnsupportedModelError(
            f"{path} is not valid JSON ({type(e).__name__}: {str(e)[:200]}); re-save the model"
        ) from e


def read_config(path: Path) -> dict:
    """The JSON object in the model folder's config file ``path`` ({} when there is no such file).

    The one reader of a model folder's JSON configs, here and in models/fetch.py.

    Raises:
        UnsupportedModelError: the file cannot be read, is not JSON, or holds anything but an
            object (null, a list, ...); the message names the file.
    """
    try:
        cfg = _load_json(path)
    except FileNotFoundError:
        return {}
    if not isinstance(cfg, dict):
        kind = "null" if cfg is None else type(cfg).__name__
        raise UnsupportedModelError(f"{path} holds a JSON {kind}, not an object; re-save the model")
    return cfg


def _invalid(path: Path, key: str, value, want: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{path}: {key} is {value!r:.80}, which is not {want}; fix the file (or save the model again with "
        "sentence-transformers)"
    )


def check_int(path: Path, key: str, value, low: int = 1, optional: bool = False) -> int | None:
    """``value`` as an int >= ``low`` (None allowed when ``optional``).

    Booleans and floats are refused (torch and tokenizers refuse them too).

    Raises:
        UnsupportedModelError: any other value; the message names the file ``path`` and the ``key``.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _invalid(path, key, value, f"an integer >= {low}" + (" or null" if optional else ""))
    return value


def _check_bool(path: Path, key: str, value) -> bool:
    if not isinstance(value, bool):
        raise _invalid(path, key, value, "true or false")
    return value


def _check_str(path: Path, key: str, value, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _invalid(path, key, value, "a string" + (" or null" if optional else ""))
    return value


def _check_dict(path: Path, key: str, value) -> dict:
    """A mapping option (None: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(path, key, value, "an object or null")
    return value


def read_modules(folder: str | Path) -> list[dict] | None:
    """modules.json's entries, checked, in the file's order (sentence-transformers' order, whatever their idx).

    Each ``path`` is resolved once: a relative path inside the folder, written back normalized (``""``:
    the folder itself), so every file a module loads is inside the folder (and in its fingerprint,
    ``export.content_files``).

    Returns:
        The entries, or None when the folder has no modules.json.

    Raises:
        UnsupportedModelError: modules.json is not a list of module objects, an entry's idx, type or
            path is of the wrong type, or a path is absolute, leads out of the folder with ``..`` or a
            symlink (the message names it).
    """
    folder = Path(folder)
    path = folder / "modules.json"
    if not path.is_file():
        return None
    modules = _load_json(path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise UnsupportedModelError(
            f"{path} must hold a list of module objects (idx, name, path, type); "
            f"it holds {json.dumps(modules)[:80]}. Re-save the model"
        )
    root = folder.resolve()
    out = []
    for i, m in enumerate(modules):
        where = f"modules.json entry {i} "
        idx = check_int(path, where + "idx", m.get("idx", i), low=0)
        kind = _check_str(path, where + "type", m.get("type", ""))
        rel = _check_str(path, where + "path", m.get("path", ""))
        inside = "\0" not in rel and not PurePath(rel).is_absolute() and not PureWindowsPath(rel).drive
        target = (root / rel).resolve() if inside else root
        if not inside or not target.is_relative_to(root):
            raise UnsupportedModelError(
                f"{path}: module {idx} ({kind}) has the path {rel!r}, which is not inside the model folder {root}; "
                "a model folder is loaded and fingerprinted from its own files only: copy the module into the "
                "folder and give its path relative to it"
            )
        rel = "" if target == root else target.relative_to(root).as_posix()
        out.append({**m, "idx": idx, "type": kind, "path": rel})
    return out


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
        raise _refuse(
            folder,
            f"module {entry.get('idx')} ({ref})",
            "a custom module class (remote code)",
            "Only sentence-transformers' own modules can be reproduced.",
        )
    if name not in ("Transformer", "Pooling", "Dropout", *_HEAD_TYPES):
        raise _refuse(
            folder,
            f"module {entry.get('idx')} ({ref})",
            f"the module type {name}",
            "Supported: Transformer, Pooling, Dense, LayerNorm, Normalize, Dropout.",
        )
    return name


def _pooling(folder: Path, path: str, hidden: int) -> Pooling:
    file = folder / path / "config.json"
    cfg = read_config(file)
    where = f"Pooling ({path}/config.json)"
    legacy = [k for k in _LEGACY_POOLING if k in cfg]
    if legacy and "pooling_mode" not in cfg:
        active = tuple(m for k, m in _LEGACY_POOLING.items() if k in cfg and _check_bool(file, k, cfg[k]))
        cfg["pooling_mode"] = active or ("mean",)
    for k in legacy:
        del cfg[k]
    mode = cfg.pop("pooling_mode", "mean")
    if isinstance(mode, (list, tuple)) and all(isinstance(m, str) for m in mode):
        modes = tuple(mode)
    else:
        modes = (_check_str(file, "pooling_mode", mode),)
    include_prompt = _check_bool(file, "include_prompt", cfg.pop("include_prompt", True))
    # embedding_dimension only sizes sentence-transformers' get_embedding_dimension(); the vectors
    # pool the transformer's actual hidden states, as here
    # (sentence-transformers refuses a config without it)
    dims = [k for k in ("embedding_dimension", "word_embedding_dimension") if k in cfg]
    if not dims:
        raise _invalid(file, "embedding_dimension", None, "an integer >= 1 (sentence-transformers needs it)")
    for k in dims:
        check_int(file, k, cfg.pop(k))
    if cfg:
        raise _refuse(folder, where, f"the option(s) {', '.join(sorted(cfg))}")
    for m in modes:
        if m not in POOLING_MODES:
            raise _refuse(folder, where, f"pooling mode {m!r}", f"Known modes: {', '.join(POOLING_MODES)}.")
    if not modes:
        raise _refuse(folder, where, "an empty pooling_mode")
    return Pooling(modes, include_prompt)


def _dense(folder: Path, path: str, dim: int) -> Dense:
    file = folder / path / "config.json"
    cfg = read_config(file)
    where = f"Dense ({path}/config.json)"
    act = _check_str(
        file,
        "activation_function",  # sentence-transformers' default
        cfg.pop("activation_function", "torch.nn.modules.activation.Tanh"),
    )
    if act not in ACTIVATIONS:
        raise _refuse(
            folder, where, f"the activation function {act!r}", f"Supported: {', '.join(sorted(ACTIVATIONS))}."
        )
    for key, want in (("module_input_name", "sentence_embedding"), ("module_output_name", "sentence_embedding")):
        got = _check_str(file, key, cfg.pop(key, want), optional=True) or want
        if got != want:
            raise _refuse(folder, where, f"{key}={got!r} (only Dense layers on the sentence embedding are)")
    sizes = [check_int(file, k, cfg.pop(k, None)) for k in ("in_features", "out_features")]
    d = Dense(*sizes, _check_bool(file, "bias", cfg.pop("bias", True)), ACTIVATIONS[act], path)
    if cfg:
        raise _refuse(folder, where, f"the option(s) {', '.join(sorted(cfg))}")
    if d.in_features != dim:
        raise _refuse(folder, where, f"in_features {d.in_features} after a {dim}-dimensional module")
    return d


def _transformer_config(folder: Path) -> dict:
    """sentence_bert_config.json (or a legacy name), checked: only options the engine reproduces."""
    file = next((folder / n for n in _SBERT_CONFIGS if (folder / n).is_file()), folder / _SBERT_CONFIGS[0])
    cfg = read_config(file)
    where = f"Transformer ({file.name})"
    out = {
        "max_seq_length": check_int(file, "max_seq_length", cfg.pop("max_seq_length", None), optional=True),
        "do_lower_case": _check_bool(file, "do_lower_case", cfg.pop("do_lower_case", False)),
    }
    processor = {
        **_check_dict(file, "tokenizer_args", cfg.pop("tokenizer_args", None)),
        **_check_dict(file, "processor_kwargs", cfg.pop("processor_kwargs", None)),
    }
    processor.pop("trust_remote_code", None)
    if "model_max_length" in processor:
        check_int(file, "processor_kwargs.model_max_length", processor["model_max_length"])
    out["processor_kwargs"] = processor
    for key in ("model_kwargs", "model_args", "config_kwargs", "config_args"):
        extra = {k: v for k, v in _check_dict(file, key, cfg.pop(key, None)).items() if k != "trust_remote_code"}
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


def _read_modules(folder: Path, entries: list, hidden_size: int) -> tuple[Pooling, tuple]:
    """The Pooling and the head modules of modules.json (``read_modules``' entries), checked in order."""
    pooling, head = Pooling(), []
    kinds = [_module_kind(folder, m) for m in entries]
    if not kinds or kinds[0] != "Transformer":
        raise _refuse(
            folder,
            "modules.json",
            f"a stack that starts with {kinds[:1] or 'nothing'}",
            "The first module must be a Transformer.",
        )
    if entries[0]["path"]:
        raise _refuse(
            folder,
            "module 0 (Transformer)",
            f"a Transformer in the sub-folder {entries[0]['path']!r}",
            "Move its files to the model folder's root.",
        )
    if "Pooling" not in kinds:
        raise _refuse(folder, "modules.json", "a stack without a Pooling module (token embeddings only)")
    dim, seen_pooling = hidden_size, False
    for entry, kind in zip(entries[1:], kinds[1:]):
        path = entry["path"]
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
            cfg = read_config(folder / path / "config.json")
            if cfg.get("dimension") != dim or isinstance(cfg.get("dimension"), bool) or set(cfg) - {"dimension"}:
                raise _refuse(
                    folder, f"LayerNorm ({path})", f"the config {json.dumps(cfg)[:80]} after a {dim}-dimensional module"
                )
            head.append(LayerNorm(dim, path=path))
        elif kind == "Normalize":
            head.append(Normalize())
        # Dropout: the identity at inference
    return pooling, tuple(head)


def read_stack(folder: str | Path, hidden_size: int) -> ModuleStack:
    """The module stack of the sentence-transformers (or plain Hugging Face) model in ``folder``.

    Without modules.json sentence-transformers builds Transformer + mean Pooling; so does this.

    Args:
        folder: the model folder.
        hidden_size: the transformer's hidden size (config.json).

    Raises:
        UnsupportedModelError: a file or value of the wrong type or range (naming the file and the
            key), or a module or option the engine does not reproduce (naming it).
    """
    folder = Path(folder)
    modules = read_modules(folder)
    tcfg = _transformer_config(folder)
    pooling, head = _read_modules(folder, modules, hidden_size) if modules is not None else (Pooling(), ())
    file = folder / "config_sentence_transformers.json"
    st = read_config(file)
    kind = st.get("model_type", "SentenceTransformer")
    if kind != "SentenceTransformer":
        raise _refuse(
            folder,
            "config_sentence_transformers.json",
            f"model_type {kind!r}",
            "Only SentenceTransformer (dense embedding) models are.",
        )
    given = _check_dict(file, "prompts", st.get("prompts"))
    prompts: dict = {"query": None, "document": None}
    for name, text in given.items():
        _check_str(file, f"prompts[{name!r}]", text, optional=True)
        if name not in prompts or prompts[name] is None:
            prompts[name] = text
    prompts = {k: ("" if v is None else v) for k, v in prompts.items()}
    default = _check_str(file, "default_prompt_name", st.get("default_prompt_name"), optional=True)
    if default is not None and default not in prompts:
        raise _refuse(
            folder, "config_sentence_transformers.json", f"default_prompt_name {default!r} without such a prompt"
        )
    sim = _check_str(file, "similarity_fn_name", st.get("similarity_fn_name"), optional=True) or "cosine"
    if sim not in SIMILARITIES:
        raise _refuse(
            folder,
            "config_sentence_transformers.json",
            f"similarity_fn_name {sim!r}",
            f"Known: {', '.join(SIMILARITIES)}.",
        )
    return ModuleStack(
        hidden_size=hidden_size,
        pooling=pooling,
        head=head,
        max_seq_length=tcfg["max_seq_length"],
        do_lower_case=tcfg["do_lower_case"],
        processor_kwargs=tcfg["processor_kwargs"],
        prompts=prompts,
        default_prompt_name=default,
        similarity_fn_name=sim,
        truncate_dim=check_int(file, "truncate_dim", st.get("truncate_dim"), optional=True),
    )


def load_weights(folder: str | Path, stack: ModuleStack) -> dict:
    """The head's parameters as float32 arrays: ``{"<i>.weight": ..., "<i>.bias": ...}`` (i: head index).

    Read from each module folder's model.safetensors (numpy, no torch) or pytorch_model.bin (torch,
    export time only), under the names sentence-transformers saves (``linear.*``, ``norm.*``).

    Raises:
        UnsupportedModelError: a module without weights, with unreadable weights, or whose weights
            lack a parameter or do not have the configured shape.
    """
    import numpy as np

    out = {}
    for i, m in enumerate(stack.head):
        if isinstance(m, Normalize):
            continue
        sub = Path(folder) / m.path
        prefix = "linear" if isinstance(m, Dense) else "norm"
        tensors = _head_tensors(sub, type(m).__name__)
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


def _head_tensors(sub: Path, kind: str) -> dict:
    """A head module's tensors: model.safetensors (numpy), else pytorch_model.bin through torch's
    ``weights_only=True`` unpickler (no code runs). Any failure (a truncated file, a pickle that
    needs other globals) is an UnsupportedModelError naming the file."""
    st, pt = sub / "model.safetensors", sub / "pytorch_model.bin"
    if not st.is_file() and not pt.is_file():
        raise UnsupportedModelError(f"{sub}: {kind} has no model.safetensors or pytorch_model.bin")
    file = st if st.is_file() else pt
    try:
        if file is st:
            from safetensors.numpy import load_file

            return load_file(str(st))
        tensors = torch_weights(pt)
    except UnsupportedModelError:
        raise
    except Exception as e:  # safetensors' SafetensorError, an unpickling error, ...: the file is unusable
        raise UnsupportedModelError(
            f"{file}: the {kind} weights cannot be read ({type(e).__name__}: "
            f"{str(e)[:300]}); save the model again (model.safetensors)"
        ) from e
    if not isinstance(tensors, dict):
        raise UnsupportedModelError(f"{file} holds a {type(tensors).__name__}, not a state dict of tensors")
    return {k: v.float().numpy() for k, v in tensors.items() if hasattr(v, "float")}


def torch_weights(path: Path):
    """``torch.load(path, weights_only=True)``: torch's restricted unpickler.

    It refuses any global but tensors and plain containers, so a booby-trapped pickle runs no code.

    Raises:
        UnsupportedModelError: torch refuses the file or cannot read it (naming the file and torch's reason).
        ImportError: torch is not installed (the message names the extra).
    """
    try:
        import torch
    except ImportError as e:
        from ..errors import missing_extra

        raise missing_extra("torch", "export") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):  # a legacy (non-zip) checkpoint cannot be memory-mapped
            raise _pickle_refused(path, e) from e
    except Exception as e:
        raise _pickle_refused(path, e) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _pickle_refused(path, e) from e


def _pickle_refused(path: Path, e: Exception) -> UnsupportedModelError:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [""]
    # torch's own reason ("Unsupported global: GLOBAL posix.system ...") is inside a long explanation
    why = next((ln for ln in lines if "GLOBAL" in ln or "WeightsUnpickler error" in ln), lines[0])
    return UnsupportedModelError(
        f"{path} cannot be loaded as plain weights (torch.load(weights_only=True): {type(e).__name__}: "
        f"{why[:300]}); the engine never runs code from a pickle. Convert the weights to safetensors with a "
        "tool you trust, or use a model that ships model.safetensors"
    )
