"""Weights -> optimized ONNX files in the cache, done once and reused.

Layout of one exported model (``<cache>/onnx/<key>/``)::

    model.onnx        the exported graph (optimized for CPU, or quantized): fused, portable,
                      what ``fingerprint`` and ``onnx_sha256`` describe
    model.cpu.onnx    model.onnx with its layer norms decomposed (models/graph.py): what the CPU
                      runtime loads (fp32, int8); absent when that changes nothing, or for a graph
                      over 1 GiB or with external data (the CPU runtime then loads model.onnx)
    model.cuda.onnx   model.onnx with mean pooling in the graph: what the CUDA runtime loads;
                      absent unless pooling is mean
    tokenizer.json    the model's fast tokenizer (truncation/padding are set by the runtime)
    meta.json         spec, fingerprint, source, weight digests, tool versions, and ``graphs``:
                      the file each device loads, e.g. {"cpu": "model.cpu.onnx", "cuda": "model.onnx"}

Every graph the runtime loads is written here at export time, so running a model needs only
onnxruntime (``ExportedModel.graph_path``): no onnx, torch or optimum at load time. The runtime
graphs compute the same math as model.onnx, so they are not part of the fingerprint.

The folder is built in a temporary sibling and renamed into place, so a crash never leaves a
half-written export that later runs would trust. torch/optimum/onnx are imported only on this
path (here, graph.py, quantize.py), and only when an export is actually needed.

Exports written before the runtime graphs existed (meta.json without ``graphs``), or whose
runtime graph file has gone missing, are completed in place on first load when onnx is
importable: each missing graph is written to a temporary file and renamed into place, then
meta.json likewise, so a concurrent process sees either the old folder or the complete new one
(two processes doing it at once write the same bytes). Without onnx (a plain install) an old
export is an ExportError naming the folder and the fix (install the ``export`` extra once, or
delete the folder to export again), and so is a missing graph file when its device needs it:
no silent fallback to model.onnx, which would run the same math slower than the runtime graphs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ExportError, InputError, missing_extra
from .catalog import ModelSpec, lookup
from .fetch import ResolvedModel, cache_root, resolve, sha256_file, verify_weights

# Bump when the export pipeline changes in a way that changes the graph's outputs.
EXPORT_VERSION = 1
OPSET = 18
PRECISIONS = ("fp32", "int8", "fp16")
# ...and per precision when only that precision's recipe changes (int8 2: GELU in tanh form).
RECIPE_VERSION = {"fp32": 1, "int8": 2, "fp16": 1}
CPU_PRECISIONS = ("fp32", "int8")  # fp16 runs on CUDA only


def _version_tag(precision: str) -> str:
    """Cache-folder suffix: ``v1`` (fp32, fp16), ``v1.2`` (int8 recipe 2)."""
    r = RECIPE_VERSION.get(precision, 1)
    return f"v{EXPORT_VERSION}" if r == 1 else f"v{EXPORT_VERSION}.{r}"


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
        """The graph file the runtime loads on ``device`` ("cpu" or "cuda"), as meta.json names it."""
        dev = device.lower().split(":")[0]
        name = (self.meta.get("graphs") or {}).get(dev)
        if name is None:
            raise ExportError(
                f"{self.folder} has no graph for {dev!r} (meta.json graphs: {self.meta.get('graphs')}); "
                f"{self.precision} runs on {'cpu and cuda' if self.precision in CPU_PRECISIONS else 'cuda only'}"
            )
        path = _runtime_file(self.folder, name)
        if not path.is_file():
            raise ExportError(_incomplete_message(self.folder, f"{name} (the {dev} graph) is missing"))
        return path

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / "tokenizer.json"


def fingerprint(spec: ModelSpec, digests: dict[str, str], precision: str, export_settings: dict) -> str:
    """A stable id of weights + export settings + pooling: ``name/precision/dim/<16 hex>``.

    Two embedders with equal fingerprints produce interchangeable vectors; an index refuses
    queries whose fingerprint differs from the one it was built with.
    """
    payload = {
        "weights": sorted(digests.items()),
        "precision": precision,
        "pooling": spec.pooling,
        "max_seq_length": spec.max_seq_length,
        "normalize": spec.normalize,
        "dim": spec.dim,
        "export": export_settings,
    }
    h = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return f"{spec.name}/{precision}/{spec.dim}/{h}"


def _cache_key(model: ResolvedModel, precision: str) -> str:
    if model.catalogued:
        base = model.spec.name
    else:  # a local folder: key on its path and the weights' size and mtime
        w = model.weights
        st = w.stat()
        ident = f"{model.folder}|{w.name}|{st.st_size}|{st.st_mtime_ns}"
        base = f"{model.folder.name}-{hashlib.sha1(ident.encode()).hexdigest()[:10]}"
    return f"{base}-{precision}-{_version_tag(precision)}"


def load_or_export(
    model: str | os.PathLike | ResolvedModel,
    precision: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
) -> ExportedModel:
    """Return the cached export of ``model`` at ``precision``, exporting it first if needed."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    spec = lookup(str(model)) if isinstance(model, str) and not Path(model).expanduser().is_dir() else None
    if spec is not None:  # a catalogued export runs without its weight package installed
        folder = cache_root(cache_dir) / "onnx" / f"{spec.name}-{precision}-{_version_tag(precision)}"
        cached = _cached(folder, spec, precision)
        if cached is not None:
            return cached
    resolved = model if isinstance(model, ResolvedModel) else resolve(model, cache_dir)
    folder = cache_root(cache_dir) / "onnx" / _cache_key(resolved, precision)
    return _cached(folder, resolved.spec, precision) or _export(resolved, precision, folder)


def _cached(folder: Path, spec: ModelSpec, precision: str) -> ExportedModel | None:
    meta_path = folder / "meta.json"
    if not (meta_path.is_file() and (folder / "model.onnx").is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    graphs = meta.get("graphs")
    if not isinstance(graphs, dict) or any(not _runtime_file(folder, n).is_file() for n in graphs.values()):
        meta = _complete(folder, spec, precision, meta)
    return ExportedModel(spec, folder, meta["fingerprint"], precision, meta)


def _runtime_file(folder: Path, name) -> Path:
    """``folder / name`` for a graph file named in meta.json: a plain file name, nothing else."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ExportError(
            f"{folder / 'meta.json'} names {name!r} as a runtime graph, which is not a file name inside "
            f"the export folder; the export is damaged: delete {folder} to export it again"
        )
    return folder / name


def _incomplete_message(folder: Path, problem: str) -> str:
    return (
        f"the export in {folder} is incomplete: {problem}. Its runtime graphs are built from model.onnx "
        "with onnx, which comes with the export tools: install them once (pip install 'embed-engine[export]') "
        f"and load the model again to add the graphs, or delete {folder} to export the model again "
        "(also with the export extra)."
    )


def _complete(folder: Path, spec: ModelSpec, precision: str, meta: dict) -> dict:
    """Write the runtime graphs an export lacks (an older layout, or a deleted file); return the new meta."""
    try:
        import onnx  # noqa: F401  (the graph edits need it)
    except ImportError:
        if isinstance(meta.get("graphs"), dict):
            return meta  # graph_path raises if the device at hand needs a missing file
        problem = "its meta.json names no runtime graphs (written by an earlier version)"
        raise ExportError(_incomplete_message(folder, problem)) from None
    try:
        meta = {**meta, "graphs": _write_runtime_graphs(folder, spec, precision)}
        _write_atomic(folder / "meta.json", json.dumps(meta, indent=2, default=str).encode())
        (folder / "model.pooled.onnx").unlink(missing_ok=True)  # what model.cuda.onnx replaces
    except OSError as e:
        raise ExportError(
            f"cannot add the runtime graphs to {folder}: {e}. Make it writable, or delete it to export again."
        ) from e
    return meta


def _write_runtime_graphs(folder: Path, spec: ModelSpec, precision: str) -> dict[str, str]:
    """Write the graphs the runtime loads beside ``folder/model.onnx`` (those not already there);
    return {device: file name}. Files are written atomically (tempfile + rename)."""
    from .graph import add_mean_pooling, cpu_model

    src = folder / "model.onnx"
    builders = {}
    if precision in CPU_PRECISIONS:
        builders["cpu"] = ("model.cpu.onnx", lambda: cpu_model(src))
    builders["cuda"] = ("model.cuda.onnx", lambda: add_mean_pooling(src) if spec.pooling == "mean" else None)
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
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # as the export's other files (mkstemp makes it owner-only)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _export(model: ResolvedModel, precision: str, dest: Path) -> ExportedModel:
    spec = model.spec
    digests = verify_weights(model)  # before anything is built from the weights
    settings = {"version": EXPORT_VERSION, "opset": OPSET, "optimizer": "ort-transformers-o1"}
    calibration = None  # int8: cosine to fp32 on the calibration texts (a measurement, not in the fingerprint)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        raw = tmp / "raw"
        if model.weights.suffix == ".onnx":
            raw.mkdir()
            shutil.copy2(model.weights, raw / "model.onnx")
            settings["onnx_output"] = _keep_token_output(raw / "model.onnx", spec)
        else:
            _optimum_export(model.folder, raw)
        optimized = tmp / "model.fp32.onnx"
        settings["fusions"] = _optimize(raw / "model.onnx", optimized, spec)
        if precision == "fp32":
            os.replace(optimized, tmp / "model.onnx")
        elif precision == "int8":
            from .quantize import check_int8_parity, quantize_int8

            config = {"exclude": spec.int8_exclude} if spec.int8_exclude else None
            settings["quantization"] = quantize_int8(optimized, tmp / "model.onnx", spec, model.folder, config=config)
            calibration = check_int8_parity(optimized, tmp / "model.onnx", spec, model.folder)
            optimized.unlink()
        else:  # fp16
            from .quantize import convert_fp16

            settings["fp16"] = convert_fp16(optimized, tmp / "model.onnx")
            optimized.unlink()
        shutil.rmtree(raw)
        graphs = _write_runtime_graphs(tmp, spec, precision)
        shutil.copy2(model.folder / "tokenizer.json", tmp / "tokenizer.json")
        fp = fingerprint(spec, digests, precision, settings)
        meta = {
            "fingerprint": fp,
            "spec": dataclasses.asdict(spec),
            "precision": precision,
            "source": model.source,
            "weights_sha256": digests,
            "export": settings,
            "onnx_sha256": sha256_file(tmp / "model.onnx"),
            "graphs": graphs,
            "int8_calibration_cosine": calibration,
            "versions": _versions(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        try:
            os.replace(tmp, dest)  # atomic: an export is either complete or absent
        except OSError:
            if not (dest / "meta.json").is_file():  # not a concurrent exporter that won the race
                shutil.rmtree(dest, ignore_errors=True)
                os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((dest / "meta.json").read_text())
    return ExportedModel(spec, dest, meta["fingerprint"], precision, meta)


def _optimum_export(folder: Path, out: Path) -> None:
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as e:
        raise missing_extra("optimum-onnx (and torch)", "export") from e
    try:
        main_export(
            str(folder),
            str(out),
            task="feature-extraction",
            library_name="transformers",
            opset=OPSET,
            do_validation=False,
            local_files_only=True,
        )
    except Exception as e:  # optimum raises many types; the user needs one clear message
        raise ExportError(f"exporting {folder} to ONNX with optimum failed: {e}") from e
    if not (out / "model.onnx").is_file():
        raise ExportError(f"optimum wrote no model.onnx into {out}")


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
    onnx.save(m, str(path))
    return name


def _optimize(src: Path, dst: Path, spec: ModelSpec) -> dict:
    """onnxruntime's transformer fusions (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm).

    opt_level=1 keeps the graph portable across CPUs (no hardware-specific layouts); the
    runtime session applies the remaining ORT_ENABLE_ALL rewrites at load.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = spec.model_type if spec.model_type in ("bert", "bart", "gpt2", "t5") else "bert"
    opt = optimize_model(
        str(src),
        model_type=model_type,
        num_heads=spec.num_heads,
        hidden_size=spec.hidden_size,
        opt_level=1,
        use_gpu=False,
        only_onnxruntime=False,
    )
    opt.save_model_to_file(str(dst))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnxruntime", "onnx", "optimum-onnx", "transformers", "torch", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
