"""The benchmark grid: model x device x length bucket x batch size, every contender in every cell.

``run_grid(BenchConfig(...))`` loads the engine at each requested precision and the
sentence-transformers baselines, cuts each model's texts once per length bucket (with its own
tokenizer), and times all contenders of a cell on the same texts with ``measure``. A "batch" is
the texts of one ``encode`` call: on CPU the engine may run a call of long texts as several
smaller model batches (``Embedder.max_cells``) on worker threads, which is what a caller of that
size gets. A contender that cannot load, or a device that is not there, is recorded under
``skipped`` with the reason and the grid goes on. The document it returns is described in
bench/README.md ("Result schema").
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import InputError
from .chip import environment, gemm_peak, limit_fields, load_average, model_flops_per_token, transformer_shape
from .clock import Clock
from .contenders import (
    BASELINES,
    Contender,
    device_unavailable,
    engine_contender,
    st_onnx_contender,
    st_openvino_contender,
    st_torch_contender,
)
from .data import LENGTH_BUCKETS, bucket_texts, read_corpus, token_count
from .measure import MemoryProbe, measure, min_cosine
from .results import SCHEMA, short_name

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEVICES = ("cpu", "cuda")


@dataclasses.dataclass
class BenchConfig:
    """What to run.

    Attributes:
        models: model names or folders.
        precisions: the engine's model precisions (fp32, bf16, int8, fp16).
        devices: "cpu" and/or "cuda" (a device that is not available is skipped with the reason).
        batch_sizes: texts per ``encode`` call.
        lengths: keys of ``LENGTH_BUCKETS``.
        n_texts: texts per cell (at least one full batch: a cell whose batch size exceeds it
            uses batch_size texts).
        repeats: timed passes per contender and cell.
        warmup: untimed calls per contender and cell before any timing.
        baselines: names from ``BASELINES``.
        threads: threads for every contender; None = physical cores.
        corpus: the corpus file the texts are cut from (``read_corpus``); None = the built-in sample.
        cache_dir: the engine cache (default ``$EMBED_ENGINE_CACHE`` or ~/.cache/embed-engine).
    """

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
        """Raises InputError naming the first bad setting and what to use instead."""
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


def parse_list(values: Iterable[str] | str | None) -> list[str]:
    """Comma lists and repeated flags flattened: ["a,b", "c"] -> ["a", "b", "c"]."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


def run_grid(config: BenchConfig, clock: Clock | None = None, progress: bool = True) -> dict:
    """Run the grid.

    Args:
        config: what to run; validated first.
        clock: the clock ``measure`` reads (default the real one).
        progress: a progress bar (cells) on stderr.

    Returns:
        The results document (bench/README.md, "Result schema").

    Raises:
        InputError: a bad config, or a corpus that cannot be read.
    """
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
                            bar.set_postfix_str(f"{short_name(model)} {device} {length} bs={bs}")
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


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="cell", desc="bench", file=sys.stderr, dynamic_ncols=True)


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
    """One cell's rows: every contender timed on the cell's first texts, with speedup and cosine vs st-torch."""
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
