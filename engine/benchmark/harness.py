"""Benchmark harness: latency and throughput over a grid, side by side with sentence-transformers.

Grid: model x device x length bucket x batch size; in every cell the contenders are the
engine at each requested precision and the baselines (sentence-transformers with its torch
backend and with its onnx backend), all on the same texts, with the same thread count. Each
contender is warmed up on a batch of the cell's shape before any timing, then the contenders
take turns: one timed pass over the cell's texts each, in alternating order, ``repeats`` times.
Throughput is the best pass (machines are noisy; the best pass is the least disturbed one);
latency percentiles pool every batch call of every pass. A "batch" is the texts of one
``encode`` call: on CPU the engine may run a call of long texts as several smaller model
batches (``Embedder.max_cells``) on worker threads, which is what a caller of that size gets.

``run_grid(BenchConfig(...))`` returns a plain dict (the JSON document below);
``write_results`` writes it as JSON, CSV and PNG plots; ``format_table`` prints it short;
``load_results`` reads one back and ``compare_results`` / ``format_comparison`` put two runs
side by side per cell (``embed bench --compare OLD``).
Nothing here imports torch, sentence-transformers or matplotlib at import time.

JSON schema (``"schema": "embed-engine.bench/1"``)::

    {
      "schema": "embed-engine.bench/1",
      "created": "2026-11-25T10:00:00+00:00",          # UTC, ISO 8601
      "config": {models, precisions, devices, batch_sizes, lengths, n_texts, repeats,
                 warmup, baselines, threads, corpus},   # as run (after --quick and defaults)
      "environment": {                                 # see environment()
        "cpu": {"model", "logical_cores", "physical_cores", "flags": {"avx2", "avx512f",
                "avx512_vnni", "avx512_bf16", "amx_tile", ...: bool}},
        "int8_isa": "amx_int8" | "avx512_vnni" | ...,   # models/quantize.py cpu_isa()
        "int8_recipe": "vnni" | "rr",                   # the int8 recipe this CPU exports
        "onnxruntime": str,                             # its version
        "memory_gb": float, "gpu": [{"name", "memory", "driver"}] | [],
        "onnxruntime_providers": [str], "platform": str, "python": str,
        "versions": {package: version}, "env": {"OMP_NUM_THREADS": ..., ...},
        "load_average": [1, 5, 15 min] | null          # when the run started
      },
      "load_average_end": [1, 5, 15 min] | null,       # when it ended (a loaded machine: noisy)
      "gemm_peak": {"shape": [m, k, n], "threads", "fp32_gflops", "int8_gops",
                    "int8_over_fp32"},                 # gemm_peak(), measured in this run (CPU runs)
      "models": {name: {"dim", "max_seq_length", "fingerprints": {precision: str},
                        "transformer": {"layers", "hidden", "intermediate"} | null}},
      "texts": {name: {bucket: {"target_tokens", "n_texts", "mean_tokens", "min_tokens",
                                "max_tokens"}}},       # token counts with special tokens,
                                                       # after truncation at max_seq_length
      "rows": [{                                       # one per cell x contender
        "model", "device", "length", "batch_size",     # the cell
        "contender": "engine" | "st-torch" | "st-onnx" | "st-openvino" | "st-torch-bf16",
        "precision": "fp32" | "bf16" | "int8" | "fp16", # the model precision (st-openvino: its default hint)
        "runtime": "onnxruntime" | "openvino" | "torch",  # what ran it (the engine's: RUNTIME_CHOICE)
        "label": "engine-fp32",                        # contender + precision, for plots
        "n_texts": int, "n_batches": int, "repeats": int, "tokens": int,
        "latency_ms": {"p50", "p95", "p99", "mean", "min", "max"},   # per batch call
        "texts_per_s": float,                          # best pass
        "texts_per_s_median": float,                   # median pass
        "tokens_per_s": float,                         # best pass, real (unpadded) tokens
        "wall_s": float,                               # best pass
        "peak_rss_mb": float | null,                   # process peak during this contender's passes
        "threads": {...},                              # the contender's thread settings
        "speedup_vs_st_torch": float | null,           # texts_per_s / st-torch's, same cell
        "min_cosine_vs_st_torch": float | null,        # min row cosine of the vectors, same texts
        "gflops": float | null,                        # tokens_per_s x model_flops_per_token(mean length)
        "fraction_of_peak": float | null               # gflops / gemm_peak (int8 peak for int8 rows, else
      }],                                              # fp32; null on CUDA or without a FLOP count)
      "skipped": [{"model", "device", "contender", "precision", "reason"}],
      "rss_method": "VmHWM" | "ru_maxrss"             # how peak_rss_mb was read
    }

peak_rss_mb is the whole process's resident peak (all loaded contenders count); on Linux the
peak is reset (``/proc/self/clear_refs``) before each contender's passes, elsewhere it is the
process-lifetime ``ru_maxrss`` and only grows.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import json
import os
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .chip import (
    environment,
    gemm_peak,
    limit_fields,
    load_average,
    model_flops_per_token,
    transformer_shape,
)
from .clock import Clock, PerfClock

SCHEMA = "embed-engine.bench/1"
LENGTH_BUCKETS = {"short": 16, "medium": 64, "long": 256}
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BASELINES = ("st-torch", "st-onnx", "st-openvino", "st-torch-bf16")
DEVICES = ("cpu", "cuda")


# -- memory -----------------------------------------------------------------------------
class MemoryProbe:
    """Peak resident memory of this process, resettable on Linux (VmHWM via clear_refs)."""

    def __init__(self):
        self.method = "VmHWM" if self._try_reset() and self._vmhwm_kb() is not None else "ru_maxrss"

    @staticmethod
    def _try_reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _vmhwm_kb() -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def reset(self) -> None:
        if self.method == "VmHWM":
            self._try_reset()

    def peak_mb(self) -> float | None:
        if self.method == "VmHWM":
            kb = self._vmhwm_kb()
            return None if kb is None else kb / 1024
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        except ImportError:  # Windows
            return None
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# -- statistics -------------------------------------------------------------------------
def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/min/max in milliseconds (numpy's linear-interpolated percentiles)."""
    a = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if a.size == 0:
        raise InputError("no latencies to summarize: the cell ran no batches")
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
    }


@dataclasses.dataclass
class Measurement:
    """What one contender's timed passes over one cell produced."""

    latencies_s: list[float] = dataclasses.field(default_factory=list)  # every batch call
    pass_s: list[float] = dataclasses.field(default_factory=list)  # every full pass
    peak_rss_mb: float | None = None
    outputs: list[Any] = dataclasses.field(default_factory=list)  # last pass, one per batch

    def summary(self, n_texts: int, n_tokens: int) -> dict[str, Any]:
        """Latency percentiles, best and median throughput (texts/s, tokens/s)."""
        if not self.pass_s:
            raise InputError("no timed passes: repeats must be >= 1")
        best = min(self.pass_s)
        med = statistics.median(self.pass_s)
        return {
            "latency_ms": latency_summary(self.latencies_s),
            "texts_per_s": _rate(n_texts, best),
            "texts_per_s_median": _rate(n_texts, med),
            "tokens_per_s": _rate(n_tokens, best),
            "wall_s": best,
        }


def _rate(n: int, seconds: float) -> float:
    return float(n / seconds) if seconds > 0 else float("inf")


def measure(
    contenders: dict[str, Callable[[list[str]], Any]],
    batches: Sequence[list[str]],
    repeats: int,
    clock: Clock | None = None,
    warmup: int = 1,
    memory: MemoryProbe | None = None,
) -> dict[str, Measurement]:
    """Time each contender over ``batches`` (one call per batch), taking turns.

    Every contender first runs ``warmup`` untimed calls on the first batch. Then, ``repeats``
    times, each contender makes one timed pass over all batches; the order of contenders
    alternates between passes (forward, reversed, ...) so drift on a shared machine does not
    favour one of them. The last pass's outputs are kept (for vector agreement checks).
    """
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}")
    if not batches:
        raise InputError("no batches to time")
    clock = clock or PerfClock()
    names = list(contenders)
    out = {n: Measurement() for n in names}
    for name in names:
        for _ in range(warmup):
            contenders[name](batches[0])
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        last = r == repeats - 1
        for name in order:
            fn, m = contenders[name], out[name]
            if memory is not None:
                memory.reset()
            outputs = []
            t_pass = clock.now()
            for batch in batches:
                t0 = clock.now()
                y = fn(batch)
                m.latencies_s.append(clock.now() - t0)
                if last:
                    outputs.append(y)
            m.pass_s.append(clock.now() - t_pass)
            if last:
                m.outputs = outputs
            if memory is not None:
                peak = memory.peak_mb()
                if peak is not None:
                    m.peak_rss_mb = max(m.peak_rss_mb or 0.0, peak)
    return out


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine similarity between two (n, d) arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"cannot compare vectors of shapes {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-30)
    return float(cos.min())


# -- texts ------------------------------------------------------------------------------
def scifact_sts_texts(data: str | os.PathLike, n_docs: int, n_sents: int) -> dict[str, list[str]]:
    """The encoding workload of the bench/ scripts: ``{"docs": the first n_docs SciFact documents
    (the one title+text rule), "sents": the first n_sents STS-dev sentences (sentence1 and sentence2
    interleaved)}`` from ``data`` (a folder with scifact/ and stsb/sts-dev.csv). FileNotFoundError
    names what is missing."""
    from ..eval.evaluate import load_beir, load_sts

    docs = load_beir(Path(data) / "scifact").doc_texts
    s1, s2, _ = load_sts(Path(data) / "stsb" / "sts-dev.csv")
    return {"docs": docs[:n_docs], "sents": [s for pair in zip(s1, s2) for s in pair][:n_sents]}


def read_corpus(path: str | os.PathLike | None = None) -> list[str]:
    """The non-empty document texts of a corpus file, read by the corpus reader
    (``engine.corpus.readers``, ``ANY_TEXT`` fields): .jsonl/.csv/.tsv/.parquet records with a
    ``text``, ``sentence`` or ``body`` field (ids optional) and the one title+text rule, or one
    document per line of any other text file; default the built-in sample corpus."""
    from ..corpus.readers import ANY_TEXT, read_documents, read_sample

    if path is None:
        docs, name = read_sample("sample_corpus.jsonl", ANY_TEXT), "sample_corpus.jsonl"
    else:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(
                f"corpus file {p} does not exist; pass a .jsonl or text file, or omit --corpus "
                "to use the built-in sample corpus"
            )
        docs, name = read_documents(p, ANY_TEXT), p.name
    texts = [d.text for d in docs if d.text]
    if not texts:
        raise InputError(f"corpus {name} holds no text; give a file with at least one non-empty document")
    return texts


def build_texts(
    docs: Sequence[str],
    count_tokens: Callable[[list[str]], Sequence[int]],
    target_tokens: int,
    n: int,
    special_tokens: int = 2,
) -> list[str]:
    """``n`` texts of about ``target_tokens`` tokens each (special tokens included), cut from
    the docs' running word stream at word boundaries.

    ``count_tokens(words)`` gives each word's token count without special tokens. Words are
    taken greedily while they fit the budget; the stream wraps around, shifted by a few words
    each time, so a small corpus still yields distinct texts.
    """
    if n < 1 or target_tokens < 1:
        raise InputError(f"need n >= 1 and target_tokens >= 1, got n={n}, target_tokens={target_tokens}")
    words = [w for d in docs for w in d.split()]
    if not words:
        raise InputError("the corpus has no words to build texts from")
    unique = list(dict.fromkeys(words))
    per_word = dict(zip(unique, (max(1, int(c)) for c in count_tokens(unique))))
    cost = [per_word[w] for w in words]
    budget = max(1, target_tokens - special_tokens)
    out: list[str] = []
    pos, wraps = 0, 0
    while len(out) < n:
        if pos >= len(words):
            wraps += 1
            pos = (wraps * 7) % len(words)
        chunk, used, i = [], 0, pos
        while used < budget:
            w = words[i % len(words)]
            c = cost[i % len(words)]
            if chunk and used + c > budget:
                break
            chunk.append(w)
            used += c
            i += 1
            if i - pos >= len(words):  # whole corpus is shorter than one text
                break
        out.append(" ".join(chunk))
        pos = i
    return out


# -- contenders -------------------------------------------------------------------------
@dataclasses.dataclass
class Contender:
    """A callable that embeds one batch, with what identifies it in the results."""

    name: str  # "engine" | BASELINES
    precision: str
    fn: Callable[[list[str]], np.ndarray]
    threads: dict
    embedder: Any = None  # the engine's Embedder (tokenizer, fingerprint), else None
    runtime: str = "onnxruntime"

    @property
    def label(self) -> str:
        return f"{self.name}-{self.precision}"


def engine_contender(model: str, device: str, precision: str, threads: int, cache_dir=None) -> Contender:
    from ..embedder import Embedder

    emb = Embedder(model, device=device, model_precision=precision, threads=threads, cache_dir=cache_dir)
    return Contender(
        "engine",
        precision,
        lambda b: emb.encode(b, batch_size=len(b)),
        {"intra_op": emb.threads, "inter_op": 1},
        emb,
        emb.runtime,
    )


def _st_device(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} sees no CUDA device")
    return device


def st_torch_contender(folder: Path, device: str, threads: int, bf16: bool = False) -> Contender:
    """sentence-transformers on torch, fp32 (the reference) or bf16 (``model_kwargs`` torch_dtype)."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        from ..errors import missing_extra

        raise missing_extra("sentence-transformers", "bench") from e
    torch.set_num_threads(threads)
    kwargs = {"model_kwargs": {"torch_dtype": torch.bfloat16}} if bf16 else {}
    model = SentenceTransformer(str(folder), device=_st_device(device), **kwargs)
    fn = lambda b: model.encode(b, batch_size=len(b), show_progress_bar=False, convert_to_numpy=True)
    return Contender(
        "st-torch-bf16" if bf16 else "st-torch",
        "bf16" if bf16 else "fp32",
        fn,
        {"torch": torch.get_num_threads()},
        runtime="torch",
    )


def st_openvino_contender(folder: Path, device: str, threads: int) -> Contender:
    """sentence-transformers' own openvino backend (the ``peers`` extra) at its default precision hint:
    bf16 on a CPU with bf16 units, f32 elsewhere."""
    if device.startswith("cuda"):
        raise RuntimeError("sentence-transformers' openvino backend runs on the CPU")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        from ..errors import missing_extra

        raise missing_extra("sentence-transformers", "bench") from e
    from ..runtime import BF16_CLASSES, cpu_class

    model = SentenceTransformer(
        str(folder), device="cpu", backend="openvino", model_kwargs={"ov_config": {"INFERENCE_NUM_THREADS": threads}}
    )
    fn = lambda b: model.encode(b, batch_size=len(b), show_progress_bar=False, convert_to_numpy=True)
    precision = "bf16" if cpu_class() in BF16_CLASSES else "fp32"
    return Contender("st-openvino", precision, fn, {"openvino": threads}, runtime="openvino")


def st_onnx_contender(folder: Path, device: str, threads: int, cache: Path) -> Contender:
    """sentence-transformers' own onnx backend; its export is saved under ``cache`` and reused."""
    import shutil
    import tempfile

    try:
        import onnxruntime as ort
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        from ..errors import missing_extra

        raise missing_extra("sentence-transformers", "bench") from e
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    provider = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise RuntimeError(f"{provider} is not in this onnxruntime (has {', '.join(ort.get_available_providers())})")
    kwargs = {"provider": provider, "session_options": so}
    if (cache / "onnx" / "model.onnx").is_file():
        model = SentenceTransformer(str(cache), device="cpu", backend="onnx", model_kwargs=kwargs)
    else:
        model = SentenceTransformer(str(folder), device="cpu", backend="onnx", model_kwargs=kwargs)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=cache.name + ".tmp-", dir=cache.parent))
        try:
            model.save_pretrained(str(tmp))
            os.replace(tmp, cache)
        except OSError:
            pass  # a concurrent run saved it first; this one still runs from memory
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    fn = lambda b: model.encode(b, batch_size=len(b), show_progress_bar=False, convert_to_numpy=True)
    return Contender("st-onnx", "fp32", fn, {"intra_op": threads, "inter_op": 1})


def device_unavailable(device: str) -> str | None:
    """Why the engine cannot run on ``device`` here, or None when it can."""
    import onnxruntime as ort

    if device == "cpu":
        return None
    if device.startswith("cuda"):
        have = ort.get_available_providers()
        if "CUDAExecutionProvider" not in have:
            return (
                f"CUDAExecutionProvider is not in this onnxruntime (available: {', '.join(have)}); "
                "install onnxruntime-gpu ('embed-engine[gpu]') on a machine with CUDA"
            )
        return None
    return f"unknown device {device!r}"


# -- the grid ---------------------------------------------------------------------------
@dataclasses.dataclass
class BenchConfig:
    """What to run. ``n_texts`` texts per cell (at least one full batch: a cell whose batch
    size exceeds it uses batch_size texts). ``threads`` None = physical cores."""

    models: tuple[str, ...] = ("all-MiniLM-L6-v2",)
    precisions: tuple[str, ...] = ("fp32",)
    devices: tuple[str, ...] = ("cpu", "cuda")
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    lengths: tuple[str, ...] = ("short", "medium", "long")
    n_texts: int = 256
    repeats: int = 3
    warmup: int = 1
    baselines: tuple[str, ...] = ("st-torch", "st-onnx", "st-openvino")
    threads: int | None = None
    corpus: str | None = None
    cache_dir: str | None = None

    def validate(self) -> None:
        if not self.models:
            raise InputError("no model given; pass --model NAME (e.g. all-MiniLM-L6-v2) or a model folder")
        bad = [d for d in self.devices if d.split(":")[0] not in DEVICES]
        if bad:
            raise InputError(f"unknown device(s) {', '.join(bad)}; use cpu and/or cuda")
        bad = [x for x in self.lengths if x not in LENGTH_BUCKETS]
        if bad or not self.lengths:
            raise InputError(f"unknown length bucket(s) {', '.join(bad) or '(none)'}; use {', '.join(LENGTH_BUCKETS)}")
        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise InputError(f"unknown baseline(s) {', '.join(bad)}; use {', '.join(BASELINES)} or none")
        if not self.batch_sizes or any(not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise InputError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        for name, v in (("n_texts", self.n_texts), ("repeats", self.repeats)):
            if not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if self.warmup < 1:
            raise InputError(f"warmup must be >= 1 (a cold call is never timed), got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be >= 1, got {self.threads}")


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="cell", desc="bench", file=sys.stderr, dynamic_ncols=True)


def run_grid(config: BenchConfig, clock: Clock | None = None, progress: bool = True) -> dict:
    """Run the grid and return the results document (schema in the module docstring)."""
    from ..runtime import physical_cores

    config.validate()
    threads = config.threads or physical_cores()
    memory = MemoryProbe()
    docs = read_corpus(config.corpus)
    cfg = dataclasses.asdict(config)
    cfg["threads"] = threads
    cfg["corpus"] = config.corpus or "engine/data/sample_corpus.jsonl (built-in)"
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": cfg,
        "environment": environment(),
        "models": {},
        "texts": {},
        "rows": [],
        "skipped": [],
        "rss_method": memory.method,
    }
    cells_per_device = len(config.lengths) * len(config.batch_sizes)
    bar = _progress(len(config.models) * len(config.devices) * cells_per_device, progress)

    def skip(model, device, contender, precision, reason):
        result["skipped"].append(
            {"model": model, "device": device, "contender": contender, "precision": precision, "reason": str(reason)}
        )

    try:
        for model in config.models:
            resolved = None  # weights are needed only by the sentence-transformers baselines
            texts_by_len: dict[str, list[str]] | None = None
            for device in config.devices:
                why = device_unavailable(device)
                contenders = [] if why else _engine_contenders(model, device, config, threads, skip)
                if why:
                    skip(model, device, "*", "*", why)
                if not contenders:
                    _advance(bar, cells_per_device)
                    continue
                emb = contenders[0].embedder
                entry = result["models"].setdefault(
                    model,
                    {
                        "name": emb.name,
                        "dim": emb.dim,
                        "max_seq_length": emb.max_seq_length,
                        "fingerprints": {},
                        "transformer": transformer_shape(emb),
                    },
                )
                peak = None
                if device == "cpu":  # the chip's limit, measured in this run (once)
                    peak = result.setdefault("gemm_peak", gemm_peak(threads))
                for c in contenders:
                    entry["fingerprints"][c.precision] = c.embedder.fingerprint
                if texts_by_len is None:
                    texts_by_len = _texts_for(emb, docs, config)
                    result["texts"][model] = {
                        k: _token_stats(emb, v, LENGTH_BUCKETS[k], config.n_texts) for k, v in texts_by_len.items()
                    }
                baselines, resolved = _baseline_contenders(model, device, emb, config, threads, skip, resolved)
                contenders += baselines
                for length in config.lengths:
                    for bs in config.batch_sizes:
                        if bar is not None:
                            bar.set_postfix_str(f"{_short(model)} {device} {length} bs={bs}")
                        result["rows"].extend(
                            _run_cell(
                                model,
                                device,
                                length,
                                bs,
                                texts_by_len[length],
                                contenders,
                                config,
                                clock,
                                memory,
                                emb,
                                peak=peak,
                                shape=entry["transformer"],
                            )
                        )
                        _advance(bar, 1)
                del contenders, baselines, emb
                gc.collect()
    finally:
        if bar is not None:
            bar.close()
    result["load_average_end"] = load_average()
    return result


def _advance(bar, n: int) -> None:
    if bar is not None:
        bar.update(n)


def _engine_contenders(model: str, device: str, config: BenchConfig, threads: int, skip) -> list[Contender]:
    """The engine at every requested precision; one that cannot load is recorded by ``skip``."""
    out = []
    for prec in config.precisions:
        try:
            out.append(engine_contender(model, device, prec, threads, config.cache_dir))
        except Exception as e:  # recorded, the grid goes on
            skip(model, device, "engine", prec, f"{type(e).__name__}: {e}")
    return out


def _baseline_contenders(model: str, device: str, emb, config: BenchConfig, threads: int, skip, resolved):
    """(the sentence-transformers baselines that load, the resolved model folder for the next device)."""
    from ..models.fetch import cache_root, resolve

    out = []
    for base in config.baselines:
        try:
            resolved = resolved or resolve(model, config.cache_dir)
            if base in ("st-torch", "st-torch-bf16"):
                out.append(st_torch_contender(resolved.folder, device, threads, bf16=base == "st-torch-bf16"))
            elif base == "st-openvino":
                out.append(st_openvino_contender(resolved.folder, device, threads))
            else:
                key = emb.fingerprint.replace("/", "_")
                out.append(
                    st_onnx_contender(resolved.folder, device, threads, cache_root(config.cache_dir) / "st-onnx" / key)
                )
        except Exception as e:
            skip(model, device, base, "fp32", f"{type(e).__name__}: {e}")
    return out, resolved


def _short(model: str) -> str:
    return Path(model).name if os.sep in model else model


def bucket_texts(emb, docs: Sequence[str], length: str, n: int) -> list[str]:
    """``n`` texts of the ``length`` bucket's token count (capped at the model's
    ``max_seq_length``, special tokens included), cut from ``docs`` and counted with ``emb``'s
    own tokenizer (``emb.tokenize``, ``emb.max_seq_length``)."""
    if length not in LENGTH_BUCKETS:
        raise InputError(f"unknown length bucket {length!r}; use {', '.join(LENGTH_BUCKETS)}")
    specials = len(emb.tokenize([""])[0])
    count = lambda words: [len(x) - specials for x in emb.tokenize(words)]
    return build_texts(docs, count, min(LENGTH_BUCKETS[length], emb.max_seq_length), n, specials)


def token_count(emb, texts: Sequence[str]) -> int:
    """Real tokens of ``texts`` as ``emb`` runs them: special tokens included, after truncation,
    no padding."""
    return int(sum(len(x) for x in emb.tokenize(list(texts))))


def _texts_for(emb, docs: list[str], config: BenchConfig) -> dict[str, list[str]]:
    n = max(config.n_texts, max(config.batch_sizes))
    return {k: bucket_texts(emb, docs, k, n) for k in config.lengths}


def _token_stats(emb, texts: list[str], target: int, n_texts: int) -> dict:
    lens = np.array([len(x) for x in emb.tokenize(texts)])
    return {
        "target_tokens": min(target, emb.max_seq_length),
        "n_texts": len(texts),
        "mean_tokens": float(lens.mean()),
        "min_tokens": int(lens.min()),
        "max_tokens": int(lens.max()),
    }


def _run_cell(
    model,
    device,
    length,
    bs,
    texts,
    contenders,
    config,
    clock,
    memory,
    emb,
    peak: dict | None = None,
    shape: dict | None = None,
) -> list[dict]:
    n = max(config.n_texts, bs)
    cell_texts = texts[:n]
    batches = [cell_texts[i : i + bs] for i in range(0, n, bs)]
    n_tokens = token_count(emb, cell_texts)
    fns = {c.label: c.fn for c in contenders}
    ms = measure(fns, batches, config.repeats, clock=clock, warmup=config.warmup, memory=memory)
    base_label = next((c.label for c in contenders if c.name == "st-torch"), None)
    base_rate = base_vecs = None
    if base_label is not None:
        base_rate = ms[base_label].summary(n, n_tokens)["texts_per_s"]
        base_vecs = _stack(ms[base_label].outputs)
    flops = model_flops_per_token(emb, n_tokens / n, shape) if shape else None
    rows = []
    for c in contenders:
        m = ms[c.label]
        s = m.summary(n, n_tokens)
        vecs = _stack(m.outputs)
        cos = None
        if base_vecs is not None and vecs is not None and vecs.shape == base_vecs.shape:
            cos = min_cosine(vecs, base_vecs)
        rows.append(
            {
                "model": model,
                "device": device,
                "length": length,
                "batch_size": bs,
                "contender": c.name,
                "precision": c.precision,
                "runtime": c.runtime,
                "label": c.label,
                "n_texts": n,
                "n_batches": len(batches),
                "repeats": config.repeats,
                "tokens": n_tokens,
                **s,
                "peak_rss_mb": m.peak_rss_mb,
                "threads": c.threads,
                "speedup_vs_st_torch": (s["texts_per_s"] / base_rate) if base_rate else None,
                "min_cosine_vs_st_torch": cos,
                **limit_fields(s["tokens_per_s"], flops, c.precision, peak),
            }
        )
    return rows


def _stack(outputs: list) -> np.ndarray | None:
    if not outputs or any(not isinstance(o, np.ndarray) for o in outputs):
        return None
    return np.concatenate([np.atleast_2d(o) for o in outputs])


# -- output -----------------------------------------------------------------------------
CSV_FIELDS = (
    "model",
    "device",
    "length",
    "batch_size",
    "contender",
    "precision",
    "runtime",
    "n_texts",
    "n_batches",
    "repeats",
    "tokens",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "texts_per_s",
    "texts_per_s_median",
    "tokens_per_s",
    "wall_s",
    "peak_rss_mb",
    "threads",
    "speedup_vs_st_torch",
    "min_cosine_vs_st_torch",
    "gflops",
    "fraction_of_peak",
)


def csv_rows(result: dict) -> list[dict]:
    """The rows flattened for CSV (latency_ms.* -> *_ms, threads as JSON)."""
    out = []
    for r in result["rows"]:
        flat = {k: r.get(k) for k in CSV_FIELDS}
        for p in ("p50", "p95", "p99", "mean"):
            flat[f"{p}_ms"] = r["latency_ms"][p]
        flat["threads"] = json.dumps(r["threads"], sort_keys=True)
        out.append(flat)
    return out


def write_results(result: dict, out_dir: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
    """Write results.json, results.csv and (when matplotlib is installed) PNG plots into out_dir.

    Returns {"json": path, "csv": path, "plots": [paths], "plot_error": message?}.
    """
    import csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Any] = {"json": out / "results.json", "csv": out / "results.csv", "plots": []}
    paths["json"].write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    with paths["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(csv_rows(result))
    if plots and result["rows"]:
        try:
            from .plot import plot_results
        except ImportError as e:
            paths["plot_error"] = str(e)
        else:
            paths["plots"] = plot_results(result, out)
    return paths


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def format_table(result: dict) -> str:
    """A short fixed-width table of the rows, grouped by model, device and length."""
    head = (
        f"{'model':<18} {'dev':<4} {'length':<6} {'bs':>4} {'contender':<13} {'p50 ms':>9} {'p95 ms':>9} "
        f"{'texts/s':>9} {'tokens/s':>10} {'x st-torch':>10} {'GFLOP/s':>8} {'of peak':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        sp = r["speedup_vs_st_torch"]
        gf, frac = r.get("gflops"), r.get("fraction_of_peak")
        lines.append(
            f"{_short(r['model'])[:18]:<18} {r['device'][:4]:<4} {r['length']:<6} {r['batch_size']:>4} "
            f"{r['label'][:13]:<13} {r['latency_ms']['p50']:>9.2f} {r['latency_ms']['p95']:>9.2f} "
            f"{r['texts_per_s']:>9.1f} {r['tokens_per_s']:>10,.0f} {(f'{sp:.2f}x') if sp else '-':>10} "
            f"{(f'{gf:.1f}') if gf is not None else '-':>8} {('%.1f%%' % (100 * frac)) if frac is not None else '-':>7}"
        )
    lines.append(chip_line(result))
    for s in result["skipped"]:
        lines.append(f"skipped: {_short(s['model'])} {s['device']} {s['contender']} {s['precision']}: {s['reason']}")
    return "\n".join(lines)


def chip_line(result: dict) -> str:
    """One line naming the chip, its int8 ISA class and the GEMM peaks measured in the run."""
    env = result.get("environment") or {}
    cpu = env.get("cpu") or {}
    peak = result.get("gemm_peak")
    rates = (
        (
            f"fp32 GEMM {peak['fp32_gflops']:.0f} GFLOP/s, int8 GEMM {peak['int8_gops']:.0f} GOP/s "
            f"({peak['threads']} threads, {'x'.join(map(str, peak['shape']))})"
        )
        if peak
        else "no GEMM peak measured"
    )
    return (
        f"chip: {cpu.get('model', 'unknown')}, int8 ISA class {env.get('int8_isa', 'unknown')}, "
        f"onnxruntime {env.get('onnxruntime', '-')}; peak: {rates}"
    )


def best_batch_sizes(result: dict, contender: str = "engine") -> dict[tuple, int]:
    """(model, device, precision, length) -> the batch size with the highest texts/s."""
    best: dict[tuple, tuple[float, int]] = {}
    for r in result["rows"]:
        if r["contender"] != contender:
            continue
        key = (r["model"], r["device"], r["precision"], r["length"])
        if key not in best or r["texts_per_s"] > best[key][0]:
            best[key] = (r["texts_per_s"], r["batch_size"])
    return {k: v[1] for k, v in best.items()}


# -- comparing runs ---------------------------------------------------------------------
CELL_KEYS = ("model", "device", "length", "batch_size", "contender", "precision")
# config keys that change what a cell measures; a difference is reported next to the comparison
_CONFIG_KEYS = ("n_texts", "repeats", "corpus")


def load_results(path: str | os.PathLike) -> dict:
    """A results document written by ``write_results``: ``path`` is its results.json or the
    folder holding it. Raises InputError naming the file when it is missing or is not one."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise InputError(f"{p} does not exist; give the results.json of an `embed bench` run or its folder")
    try:
        doc = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{p} is not JSON ({e}); give the results.json of an `embed bench` run") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"{p} is not an `embed bench` results file (schema {got!r}, expected {SCHEMA!r})")
    _check_rows(doc, str(p))
    return doc


def _check_rows(doc: dict, name: str) -> None:
    rows = doc.get("rows")
    if not isinstance(rows, list):
        raise InputError(f"{name}: results have no 'rows' list")
    for i, r in enumerate(rows):
        missing = [k for k in (*CELL_KEYS, "texts_per_s") if not isinstance(r, dict) or k not in r]
        if missing:
            raise InputError(f"{name}: row {i} lacks {', '.join(missing)}")


def _cpu_of(doc: dict) -> dict:
    cpu = (doc.get("environment") or {}).get("cpu") or {}
    return {
        "model": cpu.get("model") or "unknown",
        "flags": sorted(f for f, on in (cpu.get("flags") or {}).items() if on),
    }


def compare_results(old: dict, new: dict, *, force: bool = False) -> dict:
    """Two results documents side by side, cell by cell.

    A cell is (model, device, length, batch_size, contender, precision); for each, the old and
    new texts/s (best pass) and ``change_pct = 100 * (new / old - 1)``. Cells found in one run
    only are kept with ``only`` = "old" or "new". Both runs' CPU model and ISA flags (and GPU
    names) come from their environment blocks; when they differ a warning says so, because a
    ratio across chips is not a speed change; so does a different thread count. Differences in
    texts per cell, repeats, corpus and library versions are reported as notes.

    Raises InputError when a model present in both runs has a different fingerprint for the same
    precision (other weights or export settings: the vectors, hence the work, differ), unless
    ``force``, which turns that into a warning.

    Returns ``{"cells": [{model, device, length, batch_size, contender, precision, "old", "new",
    "change_pct", "only"}], "fingerprints": [{"model", "precision", "old", "new", "same"}],
    "cpu": {"old", "new", "same"}, "gpu": {"old", "new", "same"}, "created": {"old", "new"},
    "warnings": [str], "notes": [str]}``; cells in the new run's row order, then old-only ones.
    """
    _check_rows(old, "old run")
    _check_rows(new, "new run")
    warnings: list[str] = []
    notes: list[str] = []

    fingerprints = []
    for model, info in (new.get("models") or {}).items():
        old_fp = ((old.get("models") or {}).get(model) or {}).get("fingerprints") or {}
        for prec, fp in (info.get("fingerprints") or {}).items():
            if prec in old_fp:
                fingerprints.append(
                    {"model": model, "precision": prec, "old": old_fp[prec], "new": fp, "same": old_fp[prec] == fp}
                )
    differ = [f for f in fingerprints if not f["same"]]
    if differ:
        what = "; ".join(f"{f['model']} {f['precision']}: old {f['old']}, new {f['new']}" for f in differ)
        msg = (
            f"the runs benchmarked different model exports ({what}): other weights or export settings "
            "compute different vectors, so their texts/s are not comparable"
        )
        if not force:
            raise InputError(
                msg + ". Compare runs of the same model export, or pass --force (force=True) to compare anyway."
            )
        warnings.append(msg + " (compared anyway: --force)")

    def cells(doc):
        return {tuple(r[k] for k in CELL_KEYS): r for r in doc["rows"]}

    before, after = cells(old), cells(new)
    out = []
    for key, r in after.items():
        o = before.get(key)
        cell = dict(zip(CELL_KEYS, key))
        if o is None:
            out.append({**cell, "old": None, "new": r["texts_per_s"], "change_pct": None, "only": "new"})
        else:
            change = 100.0 * (r["texts_per_s"] / o["texts_per_s"] - 1.0) if o["texts_per_s"] else None
            out.append({**cell, "old": o["texts_per_s"], "new": r["texts_per_s"], "change_pct": change, "only": None})
    out += [
        {**dict(zip(CELL_KEYS, key)), "old": o["texts_per_s"], "new": None, "change_pct": None, "only": "old"}
        for key, o in before.items()
        if key not in after
    ]

    cpu_old, cpu_new = _cpu_of(old), _cpu_of(new)
    same_cpu = cpu_old == cpu_new
    if not same_cpu:
        gained = sorted(set(cpu_new["flags"]) - set(cpu_old["flags"]))
        lost = sorted(set(cpu_old["flags"]) - set(cpu_new["flags"]))
        flags = ", ".join([f"+{f}" for f in gained] + [f"-{f}" for f in lost]) or "same ISA flags"
        warnings.append(
            f"the runs are from different CPUs ({cpu_old['model']} -> {cpu_new['model']}; {flags}): "
            "a ratio across chips is not a speed change"
        )
    gpu_old = [g.get("name") for g in (old.get("environment") or {}).get("gpu") or []]
    gpu_new = [g.get("name") for g in (new.get("environment") or {}).get("gpu") or []]
    if gpu_old != gpu_new and any(c["device"].startswith("cuda") and c["only"] is None for c in out):
        warnings.append(
            f"the runs are from different GPUs ({', '.join(gpu_old) or 'none'} -> "
            f"{', '.join(gpu_new) or 'none'}): a ratio across GPUs is not a speed change"
        )

    cfg_old, cfg_new = old.get("config") or {}, new.get("config") or {}
    if cfg_old.get("threads") != cfg_new.get("threads"):
        warnings.append(
            f"the runs used different thread counts ({cfg_old.get('threads')} -> "
            f"{cfg_new.get('threads')}): texts/s scale with threads"
        )
    changed = [
        f"{k} {cfg_old[k]} -> {cfg_new[k]}"
        for k in _CONFIG_KEYS
        if k in cfg_old and k in cfg_new and cfg_old[k] != cfg_new[k]
    ]
    if changed:
        notes.append("config differs: " + ", ".join(changed))
    v_old = (old.get("environment") or {}).get("versions") or {}
    v_new = (new.get("environment") or {}).get("versions") or {}
    changed = [
        f"{p} {v_old.get(p, '-')} -> {v_new.get(p, '-')}"
        for p in sorted(set(v_old) | set(v_new))
        if v_old.get(p) != v_new.get(p)
    ]
    if changed:
        notes.append("versions differ: " + ", ".join(changed))

    return {
        "cells": out,
        "fingerprints": fingerprints,
        "cpu": {"old": cpu_old, "new": cpu_new, "same": same_cpu},
        "gpu": {"old": gpu_old, "new": gpu_new, "same": gpu_old == gpu_new},
        "created": {"old": old.get("created"), "new": new.get("created")},
        "warnings": warnings,
        "notes": notes,
    }


def format_comparison(cmp: dict) -> str:
    """``compare_results``' output as text: both runs' CPUs, a line per cell (old and new texts/s,
    change in percent, or the run it is missing from), a summary, then warnings and notes."""
    lines = []
    for side in ("old", "new"):
        cpu = cmp["cpu"][side]
        gpu = cmp["gpu"][side]
        lines.append(
            f"{side} run  {cmp['created'][side] or '(no date)'}  cpu: {cpu['model']}  "
            f"[{' '.join(cpu['flags']) or 'no flags recorded'}]" + (f"  gpu: {', '.join(gpu)}" if gpu else "")
        )
    lines += [f"warning: {w}" for w in cmp["warnings"]]
    lines += [f"note: {n}" for n in cmp["notes"]]
    head = (
        f"{'model':<18} {'dev':<4} {'length':<6} {'bs':>4} {'contender':<13} "
        f"{'old texts/s':>11} {'new texts/s':>11} {'change':>9}"
    )
    lines += ["", head, "-" * len(head)]
    for c in cmp["cells"]:
        label = f"{c['contender']}-{c['precision']}"
        old = "-" if c["old"] is None else f"{c['old']:.1f}"
        new = "-" if c["new"] is None else f"{c['new']:.1f}"
        change = f"only in {c['only']}" if c["only"] else "-" if c["change_pct"] is None else f"{c['change_pct']:+.1f}%"
        lines.append(
            f"{_short(c['model'])[:18]:<18} {c['device'][:4]:<4} {c['length']:<6} {c['batch_size']:>4} "
            f"{label[:13]:<13} {old:>11} {new:>11} {change:>9}"
        )
    both = [c["change_pct"] for c in cmp["cells"] if c["change_pct"] is not None]
    only = {s: sum(c["only"] == s for c in cmp["cells"]) for s in ("old", "new")}
    summary = f"{len(both)} cells in both runs"
    if both:
        summary += f", median change {statistics.median(both):+.1f}%"
    summary += f"; {only['old']} only in the old run, {only['new']} only in the new run"
    if cmp["warnings"]:
        summary += f" ({len(cmp['warnings'])} warning(s) above)"
    lines += ["", summary]
    return "\n".join(lines)


def default_out_dir(now: _dt.datetime | None = None) -> Path:
    """bench/results/<timestamp> inside a checkout of this project, else ./bench-results/<timestamp>."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path("bench") / "results" if Path("bench").is_dir() else Path("bench-results")
    return base / stamp


def parse_list(values: Iterable[str] | str | None) -> list[str]:
    """Comma lists and repeated flags flattened: ["a,b", "c"] -> ["a", "b", "c"]."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [x.strip() for v in values for x in v.split(",") if x.strip()]
