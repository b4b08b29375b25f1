"""Weights -> optimized ONNX files in the cache, exported once and reused (``load_or_export``).

One export is the folder ``<cache>/onnx/<key>/`` (``_cache_key``; int8 folders are named
``<model>-int8-v2.2-<recipe id>``, ``_version_tag``, and a folder of another recipe is refused)::

    model.onnx        the exported graph (optimized for CPU, or quantized): fused, portable, what
                      ``fingerprint`` and meta.json's ``onnx_sha256`` describe
    model.cpu.onnx    model.onnx with its layer norms decomposed (models/graph.py), loaded by the
                      CPU runtime (fp32, int8); absent when that changes nothing, or for a graph
                      over 1 GiB or with external data (the CPU runtime then loads model.onnx)
    model.cuda.onnx   model.onnx with mean pooling in the graph, loaded by the CUDA runtime;
                      absent unless pooling is plain mean (one mode, include_prompt)
    tokenizer.json    the tokenizer sentence-transformers runs, as one ``tokenizers`` file
    head.npz          the Dense / LayerNorm weights of the module stack (absent when it has none)
    meta.json         what built the export and how to run it (``_meta``); ``graphs`` names the
                      file each device loads

The folder is built in a temporary sibling and renamed into place, so a crash never leaves a
half-written export that later runs would trust. Running a model needs only onnxruntime: torch,
optimum and onnx are imported only when an export is needed (here, graph.py, quantize.py). An
export logs one INFO line when it starts ("exporting <model> (<precision>) to <folder> ...") and
one when it is done ("done in N s"); what the third-party tools warn or log meanwhile goes to this
module's logger at DEBUG (``_third_party_quiet``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import warnings
from pathlib import Path

from ..errors import ExportError, InputError, UnsupportedModelError, missing_extra
from ..precisions import MODEL_PRECISIONS
from .catalog import ModelSpec, lookup
from .fetch import (
    ResolvedModel,
    cache_root,
    onnx_data_files,
    position_limit,
    resolve,
    sha256_file,
    verify_weights,
)
from .stack import ModuleStack, read_config, read_modules

# Bump when the export pipeline changes in a way that changes the graph's outputs, or what the
# fingerprint covers: the cache folder's name changes, so older exports are never read again.
EXPORT_VERSION = 2
OPSET = 18
PRECISIONS = MODEL_PRECISIONS
#: The export variant of model_precision="int8" on runtime="openvino" (``export_variant``).
OPENVINO_INT8 = "int8-openvino"
# ...and per precision when only that precision's recipe changes.
RECIPE_VERSION = {"fp32": 1, "int8": 2, "fp16": 1, "bf16": 2, OPENVINO_INT8: 1}

_DEVICES_OF = {
    "fp32": "cpu and cuda",
    "int8": "cpu only",
    "bf16": "cpu only (openvino)",
    "fp16": "cuda only",
    OPENVINO_INT8: "cpu only (openvino)",
}


def export_variant(precision: str, runtime: str | None = None) -> str:
    """The export a model precision needs on ``runtime``: the precision itself, except int8 on OpenVINO
    (``OPENVINO_INT8``: a statically quantized OpenVINO IR, ``models.openvino_int8``; onnxruntime's int8 is
    a dynamically quantized ONNX graph). fp32 and bf16 exports serve every runtime that runs them."""
    return OPENVINO_INT8 if precision == "int8" and runtime == "openvino" else precision


def _model_precision(variant: str) -> str:
    """The model precision an export variant serves (``OPENVINO_INT8`` -> "int8")."""
    return "int8" if variant == OPENVINO_INT8 else variant


logger = logging.getLogger(__name__)


def _version_tag(precision: str) -> str:
    """Cache-folder suffix: ``v2`` (fp32, fp16), ``v2.2-vnni`` (int8 recipe 2, this CPU's recipe id).

    int8 folders carry the recipe id this CPU gets (``quantize.int8_recipe``: ``vnni`` on AMX /
    AVX-512 VNNI / AVX-VNNI, ``rr`` elsewhere), so a cache copied from another kind of CPU is
    never read here: this CPU looks up (or exports) its own recipe's folder.
    """
    r = RECIPE_VERSION.get(precision, 1)
    tag = f"v{EXPORT_VERSION}" if r == 1 else f"v{EXPORT_VERSION}.{r}"
    if precision == "int8":
        from .quantize import int8_recipe

        tag += f"-{int8_recipe()}"
    return tag


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """A ready-to-run ONNX model and what produced it."""

    spec: ModelSpec
    folder: Path
    fingerprint: str
    precision: str
    meta: dict

    @property
    def onnx_path(self) -> Path:
        """The exported graph (fused, portable); the runtime loads ``graph_path(device)``."""
        return self.folder / "model.onnx"

    def graph_path(self, device: str) -> Path:
        """The graph file the runtime loads on ``device`` ("cpu", "cuda" or "cuda:N"), as meta.json names it.

        Raises:
            ExportError: the precision has no graph for the device, or its file is missing (the message
                says how to complete or re-export the folder).
        """
        dev = device.lower().split(":")[0]
        name = (self.meta.get("graphs") or {}).get(dev)
        if name is None:
            raise ExportError(
                f"{self.folder} has no graph for {dev!r} (meta.json graphs: {self.meta.get('graphs')}); "
                f"{self.precision} runs on {_DEVICES_OF[self.precision]}"
            )
        path = _runtime_file(self.folder, name)
        if not path.is_file():
            raise ExportError(_incomplete_message(self.folder, f"{name} (the {dev} graph) is missing"))
        return path

    @property
    def tokenizer_path(self) -> Path:
        """The tokenizer sentence-transformers runs, as one ``tokenizers`` file."""
        return self.folder / "tokenizer.json"

    @property
    def stack(self) -> ModuleStack:
        """The module stack after the transformer (pooling, Dense, LayerNorm, Normalize) and the prompts."""
        return ModuleStack.from_dict(self.meta["stack"])

    @property
    def tokenizer_info(self) -> dict:
        """{"padding_side", "truncation_side", "pad_id", "special_ids"}: how sentence-transformers pads."""
        return self.meta["tokenizer"]

    def head_weights(self) -> dict:
        """The stack's Dense / LayerNorm parameters (``models.stack.load_weights`` names), float32."""
        path = self.folder / "head.npz"
        if not path.is_file():
            return {}
        import numpy as np

        with np.load(path) as z:
            return {k: z[k] for k in z.files}


def fingerprint(
    spec: ModelSpec, digests: dict[str, str], precision: str, export_settings: dict, content: dict | None = None
) -> str:
    """A stable id of everything that changes a vector: ``name/precision/dim/<16 hex>``.

    Only file contents and settings go in (no paths, no mtimes), so a copy of a folder anywhere has
    the same fingerprint. Two embedders with equal fingerprints produce interchangeable vectors; an
    index refuses queries whose fingerprint differs from the one it was built with.

    Args:
        spec: the model's spec (pooling, max_seq_length, normalize and dim go in).
        digests: {file: sha256} of the transformer's weights.
        precision: the export's precision.
        export_settings: the export recipe (opset, optimizer, fusions, quantization, ...).
        content: ``content_digests`` + the resolved module stack and tokenizer settings: covers the
            tokenizer files, config.json, every module's config and weights, max_seq_length and the
            prompt config.
    """
    payload = {
        "weights": sorted(digests.items()),
        "precision": precision,
        "pooling": spec.pooling,
        "max_seq_length": spec.max_seq_length,
        "normalize": spec.normalize,
        "dim": spec.dim,
        "export": export_settings,
        "content": content or {},
    }
    h = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{spec.name}/{precision}/{spec.dim}/{h}"


# Files of a model folder that change its vectors besides the weights: configs, tokenizer files,
# and (when trusted) its own code. Weights are hashed by verify_weights.
_CONTENT_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")


def content_files(folder: Path, trust_remote_code: bool = False) -> list[str]:
    """Relative paths of the folder's config / tokenizer files and every module folder's files.

    Every module folder is inside ``folder`` (``stack.read_modules``); with ``trust_remote_code`` the
    folder's own ``.py`` files are included.
    """
    folder = Path(folder)
    suffixes = _CONTENT_SUFFIXES + ((".py",) if trust_remote_code else ())
    # SOURCE.txt: where an ONNX-only package's files were linked from (paths, not content)
    out = [p.name for p in folder.iterdir() if p.is_file() and p.suffix in suffixes and p.name != "SOURCE.txt"]
    # read_modules resolves each module path once (inside the folder, or refused): the files read
    # here are the ones read_stack loads
    for m in read_modules(folder) or []:
        sub = m["path"]
        if sub and (folder / sub).is_dir():
            out += [p.relative_to(folder).as_posix() for p in (folder / sub).rglob("*") if p.is_file()]
    return sorted(set(out))


def content_digests(folder: Path, trust_remote_code: bool = False) -> dict[str, str]:
    """{relative path: sha256} of ``content_files``: small files, hashed on every export."""
    files = content_files(folder, trust_remote_code)
    return {f: hashlib.sha256((Path(folder) / f).read_bytes()).hexdigest() for f in files}


def _cache_key(model: ResolvedModel, precision: str, trust_remote_code: bool = False) -> str:
    """The export's folder name under ``<cache>/onnx``: ``<model>-<precision>-<version tag>``."""
    if model.catalogued and not model.source.startswith("local:"):
        base = model.spec.name
    else:  # a local folder: key on its path and the size and mtime of every file that changes a vector
        files = [w.relative_to(model.folder).as_posix() for w in model.weight_files]
        files += content_files(model.folder, trust_remote_code)
        ident = [str(model.folder), model.spec.name, trust_remote_code]
        for f in sorted(files):
            st = (model.folder / f).stat()
            ident.append(f"{f}|{st.st_size}|{st.st_mtime_ns}")
        base = f"{model.folder.name}-{hashlib.sha1(json.dumps(ident).encode()).hexdigest()[:10]}"
    return f"{base}-{precision}-{_version_tag(precision)}"


def load_or_export(
    model: str | os.PathLike | ResolvedModel,
    precision: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    runtime: str | None = None,
) -> ExportedModel:
    """Return the cached export of ``model`` at ``precision``, exporting it first if needed.

    Args:
        model: a catalogue name or alias, a folder path, a hub id, or a ``ResolvedModel``.
        precision: one of ``PRECISIONS`` (fp32, int8, fp16, bf16).
        cache_dir: the engine's cache folder (``fetch.cache_root``).
        trust_remote_code: let a model whose config or tokenizer maps to code in its folder be
            exported (that code runs during the export); without it such a model is refused.
        runtime: the runtime that will run it (``engine.runtime.RUNTIMES``; None: onnxruntime's export).
            Only int8 differs by runtime (``export_variant``).

    Raises:
        InputError: an unknown precision, or bf16 where it cannot run (a CPU without bf16 units).
        ModelNotFoundError, WeightsVerificationError: no weights, or weights that fail their digest.
        UnsupportedModelError: a model the engine cannot reproduce or export (the message names why).
        ExportError: the export failed, or a cached export cannot be used (the message names the
            folder and the fix).
        ImportError: the export tools (or, for bf16, OpenVINO) are not installed; the message names the extra.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":  # before anything is exported: bf16 is measured against fp32 at export
        from ..runtime import _openvino, choose_runtime

        choose_runtime("bf16")
        _openvino()
    precision = export_variant(precision, runtime)
    spec = lookup(str(model)) if isinstance(model, str) and not Path(model).expanduser().is_dir() else None
    if spec is not None:  # a catalogued export runs without its weight package installed
        folder = cache_root(cache_dir) / "onnx" / f"{spec.name}-{precision}-{_version_tag(precision)}"
        cached = _cached(folder, spec, precision)
        if cached is not None:
            return cached
    resolved = model if isinstance(model, ResolvedModel) else resolve(model, cache_dir, trust_remote_code)
    folder = cache_root(cache_dir) / "onnx" / _cache_key(resolved, precision, trust_remote_code)
    return _cached(folder, resolved.spec, precision) or _export(resolved, precision, folder, trust_remote_code)


def _cached(folder: Path, spec: ModelSpec, precision: str) -> ExportedModel | None:
    """The export in ``folder`` (completed when it lacks a runtime graph, ``_complete``); None when absent."""
    meta_path = folder / "meta.json"
    if not (meta_path.is_file() and (folder / "model.onnx").is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    if "stack" not in meta or "tokenizer" not in meta:
        raise ExportError(
            f"{folder} was written by another version of the engine (its meta.json has no module stack); "
            f"delete {folder} to export the model again"
        )
    if precision == "int8":
        _check_int8_recipe(folder, meta)
    graphs = meta.get("graphs")
    if not isinstance(graphs, dict) or any(not _runtime_file(folder, n).is_file() for n in graphs.values()):
        meta = _complete(folder, spec, precision, meta)
    return ExportedModel(spec, folder, meta["fingerprint"], _model_precision(precision), meta)


def _check_int8_recipe(folder: Path, meta: dict) -> None:
    """Refuse an int8 export whose recipe is not the one this CPU gets.

    The folder name carries the recipe id, so this happens only to a folder renamed or copied
    under another name; an export of the same recipe built on another ISA class (AMX vs AVX-512
    VNNI) is the same graph and loads. Refusing (not re-exporting) keeps a hand-placed folder
    intact and needs no weights.
    """
    from .quantize import cpu_isa, int8_recipe

    built = ((meta.get("export") or {}).get("quantization") or {}).get("recipe")
    want = int8_recipe()
    if built != want:
        raise ExportError(
            f"{folder} holds an int8 export made with recipe {built or '(none recorded)'!r} on a CPU of ISA "
            f"class {meta.get('int8_isa') or '(not recorded)'}; this CPU ({cpu_isa()}) needs recipe {want!r} "
            f"(engine.models.quantize.ISA_RECIPES). Delete {folder} to export it again for this CPU."
        )


def _runtime_file(folder: Path, name) -> Path:
    """``folder / name`` for a graph file named in meta.json: a plain file name, nothing else."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ExportError(
            f"{folder / 'meta.json'} names {name!r} as a runtime graph, which is not a file name inside "
            f"the export folder; the export is damaged: delete {folder} to export it again"
        )
    return folder / name


def _incomplete_message(folder: Path, problem: str) -> str:
    """The error message of an export that lacks a runtime graph and cannot be completed here."""
    return (
        f"the export in {folder} is incomplete: {problem}. Its runtime graphs are built from model.onnx "
        "with onnx, which comes with the export tools: install them once (pip install 'embed-engine[export]') "
        f"and load the model again to add the graphs, or delete {folder} to export the model again "
        "(also with the export extra)."
    )


def _pool_in_graph(stack: ModuleStack) -> bool:
    """Whether the CUDA graph pools (plain mean pooling: one mode, prompt tokens included)."""
    return stack.pooling.modes == ("mean",) and stack.pooling.include_prompt


def _complete(folder: Path, spec: ModelSpec, precision: str, meta: dict) -> dict:
    """Write the runtime graphs an export lacks (an older layout, or a deleted file); return the new meta.

    Exports written before the runtime graphs existed (meta.json without ``graphs``), or whose
    runtime graph file has gone missing, are completed in place when onnx is importable: each
    missing graph is written to a temporary file and renamed into place, then meta.json likewise,
    so a concurrent process sees either the old folder or the complete new one (two processes
    doing it at once write the same bytes). Without onnx (a plain install) the meta is returned as
    it is when it names its graphs (``ExportedModel.graph_path`` raises if the device at hand needs
    a missing one): no silent fallback to model.onnx, which runs the same math slower.

    Raises:
        ExportError: meta.json names no graphs and onnx is not installed, or the folder is not
            writable; the message names the folder and the fix (install the ``export`` extra once,
            or delete the folder to export again).
    """
    try:
        import onnx  # noqa: F401  (the graph edits need it)
    except ImportError:
        if isinstance(meta.get("graphs"), dict):
            return meta  # graph_path raises if the device at hand needs a missing file
        problem = "its meta.json names no runtime graphs (written by an earlier version)"
        raise ExportError(_incomplete_message(folder, problem)) from None
    try:
        pooled = _pool_in_graph(ModuleStack.from_dict(meta["stack"])) if "stack" in meta else spec.pooling == "mean"
        meta = {**meta, "graphs": _write_runtime_graphs(folder, spec, precision, pooled)}
        _write_atomic(folder / "meta.json", json.dumps(meta, indent=2, default=str).encode())
        (folder / "model.pooled.onnx").unlink(missing_ok=True)  # what model.cuda.onnx replaces
    except OSError as e:
        raise ExportError(
            f"cannot add the runtime graphs to {folder}: {e}. Make it writable, or delete it to export again."
        ) from e
    return meta


def _write_runtime_graphs(
    folder: Path, spec: ModelSpec, precision: str, pool_in_graph: bool | None = None
) -> dict[str, str]:
    """Write the graphs the runtime loads beside ``folder/model.onnx`` (those not already there).

    Every graph the runtime loads is written at export time, so running a model needs only
    onnxruntime (no onnx, torch or optimum at load time). The runtime graphs compute the same math
    as model.onnx, so they are not part of the fingerprint. Files are written atomically (tempfile
    + rename).

    Args:
        folder: the export folder holding model.onnx.
        spec: the model's spec (its pooling decides ``pool_in_graph`` when that is None).
        precision: bf16 loads model.onnx on the CPU (OpenVINO) and has no CUDA graph; fp32 and
            int8 get a CPU graph (``graph.cpu_model``); every other precision a CUDA graph.
        pool_in_graph: whether the CUDA graph pools (default: the spec's pooling is mean).

    Returns:
        {device: file name}, e.g. {"cpu": "model.cpu.onnx", "cuda": "model.onnx"}.
    """
    if pool_in_graph is None:
        pool_in_graph = spec.pooling == "mean"
    from .graph import add_mean_pooling, cpu_model

    src = folder / "model.onnx"
    if precision == "bf16":  # OpenVINO loads the export as it is; no CUDA graph
        return {"cpu": "model.onnx"}
    if precision == OPENVINO_INT8:  # the IR _precision_graph quantized; it needs nncf to rebuild
        if not (folder / OPENVINO_INT8_IR).is_file():
            raise ExportError(
                f"the export in {folder} is incomplete: {OPENVINO_INT8_IR} (its static int8 graph) is missing; "
                f"delete {folder} to export the model again"
            )
        return {"cpu": OPENVINO_INT8_IR}
    builders = {}
    if precision in ("fp32", "int8"):
        builders["cpu"] = ("model.cpu.onnx", lambda: cpu_model(src))
    builders["cuda"] = ("model.cuda.onnx", lambda: add_mean_pooling(src) if pool_in_graph else None)
    graphs = {}
    for device, (name, build) in builders.items():
        if not (folder / name).is_file():
            model = build()
            if model is None:  # the device loads the export as it is
                name = "model.onnx"
            else:
                _write_atomic(folder / name, model.SerializeToString())
        graphs[device] = name
    return graphs


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through the engine's one atomic writer (temp sibling, fsync, rename; umask)."""
    from ..files import replace_atomically

    replace_atomically(path, [data], prefix=path.name + ".tmp-")


def _export(model: ResolvedModel, precision: str, dest: Path, trust_remote_code: bool = False) -> ExportedModel:
    """Export ``model`` into ``dest``: one INFO line before and one after; third-party noise at DEBUG."""
    logger.info("exporting %s (%s) to %s ...", model.spec.name, precision, dest)
    start = time.perf_counter()
    with _third_party_quiet():
        out = _export_quietly(model, precision, dest, trust_remote_code)
    logger.info("done in %.1f s", time.perf_counter() - start)
    return out


# Libraries with handlers of their own (their records do not reach the root logger's handlers).
_OWN_HANDLER_LOGGERS = ("transformers", "optimum")
_OWN_CODE = Path(__file__).resolve().parent  # models/: the export's own code


class _Divert(logging.Handler):
    """Passes the engine's own records; hands any other to this module's logger at DEBUG and drops it.
    Used as a filter on the root logger's handlers and as the only handler of transformers' and
    optimum's loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] == "engine":
            return True
        logger.debug("%s %s: %s", record.name, record.levelname, record.getMessage())
        return False

    def emit(self, record: logging.LogRecord) -> None:
        pass


@contextlib.contextmanager
def _third_party_quiet():
    """Show what torch, transformers, optimum and onnxruntime print during an export (torch_dtype
    deprecation, TracerWarning, "requires accelerate", onnxruntime's optimizer and "consider
    pre-processing" records, ...) only at DEBUG, on this module's logger.

    Their log records: transformers' and optimum's loggers (configured first, so they do not add
    their stderr handler midway) get ``_Divert`` as their only handler; every handler of the root
    logger gets it as a filter (a NullHandler is added when the root has none, so a library's
    ``logging.warning`` cannot call basicConfig). Warnings are recorded; those raised by the
    export's own code are re-issued. Everything is restored afterwards.
    """
    with contextlib.suppress(ImportError):
        import transformers.utils.logging as tl

        tl.get_logger("transformers")
    with contextlib.suppress(ImportError):
        import optimum.utils.logging as ol

        ol.get_logger("optimum")
    divert = _Divert()
    saved = []
    for name in _OWN_HANDLER_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.handlers[:]))
        lg.handlers = [divert]
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    if guard is not None:
        root.addHandler(guard)
    filtered = root.handlers[:]
    for h in filtered:
        h.addFilter(divert)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for h in filtered:
            h.removeFilter(divert)
        if guard is not None:
            root.removeHandler(guard)
        for lg, handlers in saved:
            lg.handlers = handlers
    for w in caught:
        if Path(w.filename).resolve().is_relative_to(_OWN_CODE):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        else:
            logger.debug("%s: %s (%s:%s)", w.category.__name__, w.message, w.filename, w.lineno)


# An export's temporary folder names its owner (host, pid): one whose process is gone is removed by
# the next export into the same cache (a kill -9 cannot clean up after itself).
_OWNER = ".owner.json"
_STALE_AFTER = 24 * 3600  # s: a folder of another host (or without an owner) older than this is stale


def _remove_stale_temps(parent: Path) -> None:
    """Delete the ``*.tmp-*`` export folders in ``parent`` whose exporter is gone: its process
    (on this host) has exited, or (another host, or no owner recorded) it is older than a day.
    A live exporter's folder is left alone."""
    host, now = socket.gethostname(), time.time()
    for tmp in parent.glob("*.tmp-*"):
        try:
            if not tmp.is_dir() or tmp.is_symlink():
                continue
            try:
                owner = json.loads((tmp / _OWNER).read_text())
            except (OSError, ValueError):
                owner = None
            if isinstance(owner, dict) and owner.get("host") == host and isinstance(owner.get("pid"), int):
                stale = not _alive(owner["pid"])
            else:
                stale = now - tmp.stat().st_mtime > _STALE_AFTER
        except OSError:
            continue
        if stale:
            logger.info("removing %s, left by an export that did not finish", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` on this host is running."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    return True


def _export_quietly(model: ResolvedModel, precision: str, dest: Path, trust_remote_code: bool) -> ExportedModel:
    """Build the export of ``model`` at ``precision`` in a temporary sibling of ``dest``, then rename it into place.

    Everything that can refuse the model (its weights, module stack, model type) is checked before
    anything is written.
    """
    import numpy as np

    spec = model.spec
    source = _read_source(model, trust_remote_code)
    fusion = _FUSION_TYPES.get(spec.model_type)
    settings = {
        "version": EXPORT_VERSION,
        "opset": OPSET,
        "optimizer": f"ort-transformers-o1:{fusion}" if fusion else "none",
    }
    with _temp_export_folder(dest) as tmp:
        tokenizer, max_len = _export_tokenizer(model, source.stack, tmp / "tokenizer.json", trust_remote_code)
        stack = dataclasses.replace(source.stack, max_seq_length=max_len)
        raw = tmp / "raw"
        _export_transformer(model, source, raw, settings, trust_remote_code)
        calibration = _precision_graph(raw / "model.onnx", tmp / "model.onnx", precision, model, fusion, settings)
        shutil.rmtree(raw)
        graphs = _write_runtime_graphs(tmp, spec, precision, _pool_in_graph(stack))
        if source.head:
            np.savez(tmp / "head.npz", **source.head)
        meta = _meta(model, precision, tmp, source, stack, tokenizer, settings, graphs, calibration, trust_remote_code)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        _move_into_place(tmp, dest)
    meta = json.loads((dest / "meta.json").read_text())
    return ExportedModel(spec, dest, meta["fingerprint"], _model_precision(precision), meta)


@dataclasses.dataclass(frozen=True)
class _Source:
    """What an export is built from, read and checked before anything is written (``_read_source``)."""

    digests: dict[str, str]  # weight file (relative to the model folder) -> sha256, fingerprinted
    stack: ModuleStack
    head: dict  # the stack's Dense / LayerNorm weights (``stack.load_weights``)
    model_type: str | None  # ``_exportable``'s answer; None for a shipped ONNX graph
    external: list[Path]  # a shipped ONNX graph's external data files


def _read_source(model: ResolvedModel, trust_remote_code: bool) -> _Source:
    """Verify ``model``'s weights and read what its export is built from.

    Raises:
        WeightsVerificationError, ModelNotFoundError: a catalogued weight file differs or is missing.
        UnsupportedModelError: a pickle that is not plain tensors, a module stack the engine cannot
            reproduce, a model type it cannot export, or external data outside the model folder.
        ImportError: the export tools are not installed (the message names the extra).
    """
    from .stack import load_weights, read_stack, torch_weights

    digests = verify_weights(model)  # before anything is built from the weights
    if model.weights.name == "pytorch_model.bin":  # transformers would unpickle it: check it is plain tensors
        torch_weights(model.weights)
    stack = read_stack(model.folder, model.spec.hidden_size)
    head = load_weights(model.folder, stack)
    shipped = model.weights.suffix == ".onnx"
    # refused here: a model type optimum cannot export, an unverified encoder-decoder
    model_type = None if shipped else _exportable(model.folder, trust_remote_code)
    # an ONNX graph's external data: files inside the folder (refused by name otherwise), fingerprinted
    external = onnx_data_files(model.weights, model.folder) if shipped else []
    for f in external:
        digests.setdefault(f.relative_to(model.folder).as_posix(), sha256_file(f))
    return _Source(digests, stack, head, model_type, external)


@contextlib.contextmanager
def _temp_export_folder(dest: Path):
    """A new temporary sibling of ``dest`` that names its owner (host, pid), removed on exit unless renamed.

    Temporary folders of earlier exports whose exporter is gone are removed first (``_remove_stale_temps``).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dest.parent)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        (tmp / _OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_transformer(
    model: ResolvedModel, source: _Source, raw: Path, settings: dict, trust_remote_code: bool
) -> None:
    """``raw/model.onnx``: the transformer as one ONNX graph whose output is its token embeddings.

    A shipped ONNX graph is copied (``_copy_onnx``) and cut to its token output
    (``_keep_token_output``; the output's original name goes into ``settings["onnx_output"]``);
    any other model is exported by optimum (``_optimum_export``), which validates the graph against
    torch for model types outside ``_VERIFIED``.
    """
    if model.weights.suffix == ".onnx":
        _copy_onnx(model.weights, source.external, raw)
        settings["onnx_output"] = _keep_token_output(raw / "model.onnx", model.spec)
    else:
        _optimum_export(model.folder, raw, trust_remote_code, source.model_type not in _VERIFIED, source.model_type)


def _meta(
    model: ResolvedModel,
    precision: str,
    folder: Path,
    source: _Source,
    stack: ModuleStack,
    tokenizer: dict,
    settings: dict,
    graphs: dict[str, str],
    calibration: dict | None,
    trust_remote_code: bool,
) -> dict:
    """meta.json of the export built in ``folder``: what built it and how to run it.

    Keys: ``fingerprint``; ``spec``, ``precision``, ``source``; ``weights_sha256`` and
    ``content_sha256`` (digests the fingerprint covers); ``stack`` (the module stack,
    models/stack.py, with max_seq_length resolved); ``tokenizer`` (padding side, pad id, special
    ids); ``export`` (the fingerprinted settings; int8's recipe id is in ``export.quantization``);
    ``onnx_sha256`` of model.onnx; ``graphs``: the file each device loads, e.g.
    {"cpu": "model.cpu.onnx", "cuda": "model.onnx"}; ``position_limit``: the most tokens the
    position embeddings allow (the ceiling of a settable max_seq_length; None: no limit; absent in
    exports written before it); ``<precision>_calibration_cosine`` (int8, bf16) and ``int8_isa``
    (the CPU's ISA class the int8 recipe was chosen for), both outside the fingerprint; and the
    ``versions`` of the export tools.
    """
    from . import quantize

    content = {
        "files": content_digests(model.folder, trust_remote_code),
        "stack": stack.to_dict(),
        "tokenizer": tokenizer,
    }
    return {
        "fingerprint": fingerprint(model.spec, source.digests, precision, settings, content),
        "spec": dataclasses.asdict(model.spec),
        "precision": precision,
        "source": model.source,
        "weights_sha256": source.digests,
        "content_sha256": content["files"],
        "stack": stack.to_dict(),
        "tokenizer": tokenizer,
        "export": settings,
        "onnx_sha256": sha256_file(folder / "model.onnx"),
        "graphs": graphs,
        "position_limit": _position_limit(model.folder),
        **({f"{_model_precision(precision)}_calibration_cosine": calibration} if calibration else {}),
        "int8_isa": quantize.cpu_isa() if precision == "int8" else None,
        "versions": _versions(),
    }


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Rename the finished export ``tmp`` to ``dest``, atomically: an export is either complete or absent.

    A ``dest`` without meta.json is replaced; one with meta.json is a concurrent exporter's that won
    the race, and is kept (``tmp`` is then removed by ``_temp_export_folder``).
    """
    (tmp / _OWNER).unlink()
    try:
        os.replace(tmp, dest)
    except OSError:
        if not (dest / "meta.json").is_file():  # not a concurrent exporter that won the race
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)


def _precision_graph(
    raw: Path, dst: Path, precision: str, model: ResolvedModel, fusion: str | None, settings: dict
) -> dict | None:
    """The graph of ``precision`` at ``dst`` from optimum's export ``raw``; its settings go into ``settings``.

    fp32: onnxruntime's fusions (``_optimize``). int8: the fused graph, dynamically quantized with
    this CPU's recipe. fp16: the fused graph in fp16 (CUDA). bf16: the standard-op graph as
    exported (OpenVINO fuses it for its own kernels; the bf16 cast happens when it compiles).
    Returns the calibration cosines of int8 and bf16 to fp32 (``{"mean", "min"}``), else None.
    """
    from . import quantize

    if precision == "bf16":
        settings.update(optimizer="none", runtime={"name": "openvino", "inference_precision": "bf16"})
        for f in (raw, raw.with_name(raw.name + "_data")):  # the graph, and its external data when it has one
            if f.is_file():
                os.replace(f, dst.parent / f.name)
        return quantize.check_bf16_parity(dst, model.spec, dst.parent)
    optimized = dst.parent / "model.fp32.onnx"
    settings["fusions"] = _optimize(raw, optimized, model.spec, fusion)
    calibration = None
    if precision == "fp32":
        os.replace(optimized, dst)
        return None
    if precision == OPENVINO_INT8:
        return _openvino_int8_graph(optimized, dst, model, settings)
    if precision == "int8":
        spec = model.spec
        config = {"exclude": spec.int8_exclude} if spec.int8_exclude else None
        settings["quantization"] = quantize.quantize_int8(optimized, dst, spec, model.folder, config=config)
        calibration = quantize.check_int8_parity(optimized, dst, spec, model.folder)
    else:  # fp16
        settings["fp16"] = quantize.convert_fp16(optimized, dst)
    optimized.unlink()
    return calibration


#: The statically quantized OpenVINO IR of an ``OPENVINO_INT8`` export (its weights: the same name, ``.bin``).
OPENVINO_INT8_IR = "model.cpu.int8.xml"


def _openvino_int8_graph(optimized: Path, dst: Path, model: ResolvedModel, settings: dict) -> dict | None:
    """``OPENVINO_INT8``: ``dst`` is the fp32 fused graph (the export's model.onnx, as for fp32); its CPU
    graph (``graph.cpu_model``) quantized by NNCF becomes ``OPENVINO_INT8_IR`` beside it, gated against the
    CPU graph in fp32 (``openvino_int8.check_static_int8_parity``). Returns the calibration cosines."""
    from . import openvino_int8
    from .graph import cpu_model

    os.replace(optimized, dst)
    cpu = cpu_model(dst)
    cpu_graph = dst if cpu is None else dst.parent / "model.cpu.fp32.onnx"  # None: the CPU runs the export as is
    if cpu is not None:
        _write_atomic(cpu_graph, cpu.SerializeToString())
    ir = dst.parent / OPENVINO_INT8_IR
    settings["quantization"] = openvino_int8.quantize_static_int8(cpu_graph, ir, model.spec, dst.parent)
    settings["runtime"] = {"name": "openvino", "inference_precision": "f32"}
    calibration = openvino_int8.check_static_int8_parity(cpu_graph, ir, model.spec, dst.parent)
    if cpu_graph != dst:
        cpu_graph.unlink()
    return calibration


def _export_tokenizer(model: ResolvedModel, stack: ModuleStack, dest: Path, trust_remote_code: bool):
    """Write the tokenizer sentence-transformers runs as one tokenizer.json; return (info, max_seq_length).

    sentence-transformers tokenizes with ``AutoTokenizer.from_pretrained(folder, **processor_kwargs)``
    (model_max_length = max_seq_length when set), lowercases first when do_lower_case (a Lowercase
    normalizer in front), pads on the tokenizer's padding_side with its pad token, truncates on its
    truncation_side, and counts a prompt's tokens without a trailing special token. The backend
    ``tokenizers`` object of that tokenizer is what is saved, so transformers-side settings
    (add_bos/add_eos, lowercasing flags) are in the file. A folder without a tokenizer config (an
    ONNX-only package with a donor tokenizer.json) keeps its tokenizer.json, padded right.
    """
    from .fetch import max_seq_length_of

    folder = model.folder
    if not (folder / "tokenizer_config.json").is_file():
        shutil.copy2(folder / "tokenizer.json", dest)
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(dest))
        pad = next((i for n in ("[PAD]", "<pad>", "<PAD>") if (i := tok.token_to_id(n)) is not None), 0)
        specials = sorted(int(i) for i, t in tok.get_added_tokens_decoder().items() if t.special)
        info = {"padding_side": "right", "truncation_side": "right", "pad_id": int(pad), "special_ids": specials}
        return info, stack.max_seq_length or model.spec.max_seq_length
    try:
        from transformers import AutoConfig, AutoTokenizer
    except ImportError as e:
        raise missing_extra("transformers", "export") from e
    kwargs = dict(stack.processor_kwargs)
    if stack.max_seq_length is not None:
        kwargs.setdefault("model_max_length", stack.max_seq_length)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code, **kwargs)
    except Exception as e:
        raise ExportError(f"{folder}: transformers cannot load the tokenizer ({type(e).__name__}: {e})") from e
    if not getattr(tok, "is_fast", False):
        raise ExportError(f"{folder}: the tokenizer has no fast (tokenizers) form; the engine needs tokenizer.json")
    backend = tok.backend_tokenizer
    if stack.do_lower_case:  # as sentence-transformers: a Lowercase in front unless one is there
        from tokenizers.normalizers import Lowercase, Sequence

        norm = backend.normalizer
        parts = list(norm) if isinstance(norm, Sequence) else [] if norm is None else [norm]
        if not any(isinstance(n, Lowercase) for n in parts):
            backend.normalizer = Sequence([Lowercase(), *parts])
    if tok.pad_token_id is None:
        raise ExportError(
            f"{folder}: the tokenizer has no pad token, so sentence-transformers cannot batch it either; "
            "set one (tokenizer.pad_token = tokenizer.eos_token) and save the model again"
        )
    dest.write_text(backend.to_str())
    cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code).to_dict()
    tok_cfg = {"model_max_length": tok.model_max_length}
    max_len = max_seq_length_of(cfg, tok_cfg, dataclasses.replace(stack, processor_kwargs=kwargs))
    if model.spec.max_seq_length and max_len != model.spec.max_seq_length:
        raise ExportError(
            f"{folder}: max_seq_length {max_len} from transformers' tokenizer differs from {model.spec.max_seq_length} "
            "read from the folder's configs; the folder's tokenizer settings are inconsistent"
        )
    info = {
        "padding_side": tok.padding_side,
        "truncation_side": tok.truncation_side,
        "pad_id": int(tok.pad_token_id),
        "special_ids": sorted(int(i) for i in tok.all_special_ids),
    }
    return info, max_len


def _position_limit(folder: Path) -> int | None:
    """``fetch.position_limit`` of the folder's config.json (None when it cannot be read)."""
    try:
        return position_limit(read_config(Path(folder) / "config.json"))
    except UnsupportedModelError:
        return None


# onnxruntime's transformer optimizer: the fusion family per model_type. Only families whose fused
# graphs are verified against sentence-transformers (tests/models/test_export.py, the catalogue's
# parity tests) are fused; any other exports unfused (same math, no risk of a wrong fusion).
_FUSION_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert", "mpnet": "bert"}
# model types whose exports tests/models/test_export.py checks against sentence-transformers; others
# are exported with optimum's own output validation against torch
_VERIFIED = (
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "mpnet",
    "electra",
    "albert",
    "deberta-v2",
    "camembert",
    "modernbert",
    "t5",
    "mt5",
    "bart",
    "mbart",
    "qwen2",
    "qwen3",
    "llama",
    "mistral",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "gpt2",
    "gpt_neo",
    "gpt_neox",
    "bloom",
)
# Encoder-decoder model types, exported as sentence-transformers runs them: T5 and mT5 through the
# encoder alone (its Transformer module loads T5EncoderModel / MT5EncoderModel), BART and mBART
# through the whole model, whose forward feeds the decoder the input shifted right. Either way the
# graph is forward(input_ids, attention_mask) -> last_hidden_state (``_export_seq2seq``). Other
# encoder-decoder types (pegasus, marian, m2m_100, umt5, ...) are refused: none is verified.
_SEQ2SEQ = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "bart": "BartModel", "mbart": "MBartModel"}


def _exportable(folder: Path, trust_remote_code: bool = False) -> str:
    """The folder's model_type, when the engine can export it as sentence-transformers runs it.

    Refused (UnsupportedModelError naming the model_type): a type optimum has no ONNX export of
    (text feature extraction), and an encoder-decoder type outside ``_SEQ2SEQ``.
    """
    try:
        import optimum.exporters.onnx.model_configs  # noqa: F401  (registers optimum's ONNX configs)
        from optimum.exporters.tasks import TasksManager
        from transformers import AutoConfig
    except ImportError as e:
        raise missing_extra("optimum-onnx (and torch)", "export") from e
    try:
        cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as e:  # transformers raises ValueError, KeyError, OSError... for an unknown config
        raise UnsupportedModelError(
            f"{folder}: transformers cannot read config.json ({type(e).__name__}: {e}); the engine exports "
            "models transformers knows (upgrade transformers, or pass trust_remote_code=True for a model with its "
            "own code)"
        ) from e
    model_type = str(cfg.model_type)
    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(model_type, "onnx", library_name="transformers")
    except (KeyError, ValueError):
        tasks = {}
    if "feature-extraction" not in tasks:
        from importlib.metadata import version

        raise UnsupportedModelError(
            f"{folder}: model_type {model_type!r} is not supported: optimum-onnx {version('optimum-onnx')} has no "
            "ONNX export for it, and the engine runs only models optimum exports (it never approximates one). "
            "Use a model of a family optimum exports (bert, xlm-roberta, modernbert, t5, qwen2, qwen3, gemma3_text, "
            "...), or sentence-transformers itself for this one."
        )
    if getattr(cfg, "is_encoder_decoder", False) and model_type not in _SEQ2SEQ:
        raise UnsupportedModelError(
            f"{folder}: model_type {model_type!r} is not supported: it is an encoder-decoder model, and the engine "
            f"exports only {', '.join(sorted(_SEQ2SEQ))} the way sentence-transformers runs them (verified against "
            "it); use sentence-transformers itself for this one."
        )
    return model_type


def _optimum_export(
    folder: Path, out: Path, trust_remote_code: bool = False, validate: bool = False, model_type: str | None = None
) -> None:
    """The folder's model as one ONNX graph, ``out/model.onnx`` (``model_type``: ``_exportable``'s answer)."""
    if model_type is None:
        model_type = _exportable(folder, trust_remote_code)
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as e:
        raise missing_extra("optimum-onnx (and torch)", "export") from e
    try:
        if model_type in _SEQ2SEQ:
            _export_seq2seq(folder, out, model_type, validate)
        else:
            main_export(
                str(folder),
                str(out),
                task="feature-extraction",
                library_name="transformers",
                opset=OPSET,
                do_validation=validate,
                local_files_only=True,
                trust_remote_code=trust_remote_code,
            )
    except Exception as e:  # optimum raises many types; the user needs one clear message
        raise ExportError(
            f"exporting {folder} (model_type {model_type!r}) to ONNX with optimum failed: {type(e).__name__}: {e}"
        ) from e
    if not (out / "model.onnx").is_file():
        raise ExportError(f"optimum wrote no model.onnx into {out} (model_type {model_type!r})")


def _export_seq2seq(folder: Path, out: Path, model_type: str, validate: bool) -> None:
    """Export an encoder-decoder model as sentence-transformers runs it (``_SEQ2SEQ``): the model
    class it loads, called with input_ids and attention_mask only, giving last_hidden_state.

    optimum's own ONNX config of the model type is kept (its dummy inputs, normalized config) with
    the inputs and outputs narrowed to those.
    """
    import transformers
    from optimum.exporters.onnx import onnx_export_from_model
    from optimum.exporters.tasks import TasksManager

    model = getattr(transformers, _SEQ2SEQ[model_type]).from_pretrained(str(folder), local_files_only=True).eval()
    base = TasksManager.get_exporter_config_constructor(
        "onnx", model=model, task="feature-extraction", library_name="transformers"
    )(model.config)
    axes = {0: "batch_size", 1: "sequence_length"}

    class TextOnly(type(base)):
        inputs = property(lambda self: {"input_ids": dict(axes), "attention_mask": dict(axes)})
        outputs = property(lambda self: {"last_hidden_state": dict(axes)})

    config = TextOnly(model.config, task="feature-extraction")
    onnx_export_from_model(
        model,
        str(out),
        opset=OPSET,
        task="feature-extraction",
        do_validation=validate,
        custom_onnx_configs={"model": config},
    )


def _copy_onnx(graph: Path, external: list[Path], raw: Path) -> None:
    """``raw/model.onnx``: the shipped graph; with external data, re-saved with all of it in one
    ``raw/model.onnx_data`` (the layout the later steps copy), whatever its files were called."""
    raw.mkdir()
    if not external:
        shutil.copy2(graph, raw / "model.onnx")
        return
    import onnx

    try:
        model = onnx.load(str(graph))  # reads the data files beside the graph (checked: onnx_data_files)
    except Exception as e:
        raise ExportError(
            f"{graph}: onnx cannot read the graph with its external data ({type(e).__name__}: {e})"
        ) from e
    onnx.save(
        model,
        str(raw / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx_data",
    )


def _keep_token_output(path: Path, spec: ModelSpec) -> str:
    """Cut a shipped ONNX graph down to its token-embedding output, renamed ``last_hidden_state``.

    Whole-pipeline exports (e.g. torch.onnx of a SentenceTransformer) also output input_ids,
    the mask and an in-graph pooled vector; the engine pools itself, so only the
    (batch, seq, hidden) float output is kept and the nodes that fed only the others are dropped.
    Returns the original name of the kept output.
    """
    import onnx

    m = onnx.load(str(path))
    g = m.graph

    def is_tokens(o) -> bool:
        t = o.type.tensor_type
        dims = t.shape.dim
        return t.elem_type == onnx.TensorProto.FLOAT and len(dims) == 3 and dims[2].dim_value in (0, spec.hidden_size)

    hits = [o for o in g.output if is_tokens(o)]
    if not hits:
        raise ExportError(
            f"{spec.name}: the ONNX graph has no (batch, sequence, {spec.hidden_size}) float output "
            f"(outputs: {', '.join(o.name for o in g.output)}); cannot pool it"
        )
    keep = next((o for o in hits if o.name in ("last_hidden_state", "token_embeddings")), hits[0])
    name = keep.name
    if len(g.output) == 1 and name == "last_hidden_state":
        return name
    needed, kept_nodes = {name}, []
    for node in reversed(list(g.node)):  # nodes are topologically sorted: walk back from the output
        if any(o in needed for o in node.output):
            kept_nodes.append(node)
            needed.update(i for i in node.input if i)
    for node in kept_nodes:
        node.output[:] = ["last_hidden_state" if o == name else o for o in node.output]
        node.input[:] = ["last_hidden_state" if i == name else i for i in node.input]
    del g.node[:]
    g.node.extend(reversed(kept_nodes))
    out = onnx.ValueInfoProto()
    out.CopyFrom(keep)
    out.name = "last_hidden_state"
    del g.output[:]
    g.output.append(out)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    data = path.parent / "model.onnx_data"  # a graph with external data keeps it external (over 2 GB otherwise)
    if data.is_file():
        data.unlink()  # loaded already; onnx appends to an existing data file
        onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
    else:
        onnx.save(m, str(path))
    return name


def _optimize(src: Path, dst: Path, spec: ModelSpec, fusion: str | None) -> dict:
    """onnxruntime's transformer fusions (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm).

    opt_level=1 keeps the graph portable across CPUs (no hardware-specific layouts); the
    runtime session applies the remaining ORT_ENABLE_ALL rewrites at load.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    if fusion is None:  # a family without verified fusions: the exported graph as it is
        shutil.copy2(src, dst)
        for extra in src.parent.glob("model.onnx_data"):
            shutil.copy2(extra, dst.parent / extra.name)
        return {}
    opt = optimize_model(
        str(src),
        model_type=fusion,
        num_heads=spec.num_heads,
        hidden_size=spec.hidden_size,
        opt_level=1,
        use_gpu=False,
        only_onnxruntime=False,
    )
    opt.save_model_to_file(str(dst))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def _versions() -> dict:
    """{package: version} of the export tools that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnxruntime", "onnx", "optimum-onnx", "transformers", "torch", "tokenizers"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out
