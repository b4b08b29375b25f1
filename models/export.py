"""Weights -> optimized ONNX file in the cache, done once and reused.

Layout of one exported model (``<cache>/onnx/<key>/``)::

    model.onnx        the graph the runtime loads (optimized for CPU, or quantized)
    tokenizer.json    the model's fast tokenizer (truncation/padding are set by the runtime)
    meta.json         spec, fingerprint, source, weight digests, tool versions

The folder is built in a temporary sibling and renamed into place, so a crash never leaves a
half-written export that later runs would trust. torch/optimum are imported only here, and only
when an export is actually needed.
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
        return self.folder / "model.onnx"

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
        cached = _cached(cache_root(cache_dir) / "onnx" / f"{spec.name}-{precision}-{_version_tag(precision)}", spec, precision)
        if cached is not None:
            return cached
    resolved = model if isinstance(model, ResolvedModel) else resolve(model, cache_dir)
    folder = cache_root(cache_dir) / "onnx" / _cache_key(resolved, precision)
    return _cached(folder, resolved.spec, precision) or _export(resolved, precision, folder)


def _cached(folder: Path, spec: ModelSpec, precision: str) -> ExportedModel | None:
    meta_path = folder / "meta.json"
    if meta_path.is_file() and (folder / "model.onnx").is_file():
        meta = json.loads(meta_path.read_text())
        return ExportedModel(spec, folder, meta["fingerprint"], precision, meta)
    return None


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
