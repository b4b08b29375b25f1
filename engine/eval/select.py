"""``select``: pick a configuration on the user's own data, from measured numbers.

Grid: model x model precision (fp32, int8) x index precision (fp32, int8 by default; binary on
request) x truncate_dim (full, 256, 128, 64; values >= the model's dim are skipped). Each (model,
precision) encodes the corpus and queries once; truncations are derived from the full vectors
(truncate + renormalize) and every index precision reuses them, so the grid costs one encode per
(model, precision). Every index ranks by the model's metric (``evaluate.index_metric_of``:
cosine, or dot for a dot model).

Measured per configuration: nDCG@10 and recall@100 (``engine.eval.metrics``), encode throughput
(docs/s on a fixed sample of corpus docs, after a warm-up; per model + precision), query latency
(ms/query = one query encoded alone + one index search, means over sample queries, after a
warm-up) and bytes per vector (``bytes_per_vector``). ``recommend`` applies the decision rule;
``run_select`` writes results.json, a Markdown decision record and a quality-vs-speed plot.

Binary is not in the default grid: its candidates are ``k * oversample`` rows (400 for k = 10),
which are a large share of a small evaluation corpus (or a ``--max-docs`` sample) but a tiny one
of a large deployment, so its recall measured here can overstate what the same index keeps on
the full corpus (the decision record says so when it lists binary). Measure it on a corpus of
the deployment's size, or ask for it (``index_precisions=("fp32", "int8", "binary")``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from ..corpus.cache import encode_cached
from ..errors import EngineError, InputError, ModelNotFoundError
from .evaluate import BeirDataset, beir_scores, index_metric_of, truncate

TRUNCATE_DIMS = (None, 256, 128, 64)
PRECISIONS = ("fp32", "int8")  # model precisions, and the default index precisions (binary: on request)


def bytes_per_vector(dim: int, index_precision: str) -> tuple[int, int]:
    """(RAM bytes, file bytes) per stored vector of an index of ``dim``-d vectors.

    RAM: fp32 ``4 * dim``; int8 ``dim`` (the codes; the per-dimension scales, ``4 * dim`` bytes per
    index, amortize away); binary ``8 * ceil(dim / 64)`` (sign bits in 64-bit words: 48 bytes for
    384-d). The int8 and binary indexes also keep the fp32 vectors on disk for exact rescoring
    (memory-mapped, only ``k * oversample`` rows read per query), so their files hold ``5 * dim``
    and ``8 * ceil(dim / 64) + 4 * dim`` bytes per vector.

    Args:
        dim: the vectors' dimension.
        index_precision: "fp32", "int8" or "binary".

    Returns:
        (bytes_per_vector, disk_bytes_per_vector), as the result rows call them.
    """
    if index_precision == "fp32":
        return 4 * dim, 4 * dim
    codes = {"int8": dim, "binary": 8 * -(-dim // 64)}[index_precision]  # binary: sign bits in uint64 words
    return codes, codes + 4 * dim  # the file keeps the fp32 rows too, for exact rescoring


def _index_search_fn(vecs: np.ndarray, index_precision: str, metric: str = "dot"):
    """A ``search(q (1, d)) -> (scores, ids)`` closure over an ``Index`` of ``vecs``."""
    from ..index.index import Index

    index = Index(vecs.shape[1], precision=index_precision, metric=metric)
    index.add(vecs)
    return lambda q: index.search(q, k=10)


def _sample(n: int, m: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[: min(n, m)])


def measure_encoder(
    embedder, ds: BeirDataset, speed_docs: int = 256, latency_queries: int = 32, batch_size: int = 32
) -> dict:
    """Encode throughput on a fixed doc sample and single-query encode latency, both after a warm-up.

    Args:
        embedder: an ``Embedder`` (anything with ``encode(texts, batch_size=)``).
        ds: the dataset whose docs and queries are sampled (fixed seed).
        speed_docs: docs in the throughput sample.
        latency_queries: queries encoded one at a time.
        batch_size: ``encode``'s batch size for the throughput run.

    Returns:
        ``{"encode_docs_per_s", "query_encode_ms", "speed_docs"}``.
    """
    docs = [ds.doc_texts[i] for i in _sample(len(ds.doc_texts), speed_docs)]
    queries = [ds.query_texts[i] for i in _sample(len(ds.query_texts), latency_queries)]
    embedder.encode(docs[:batch_size], batch_size=batch_size)  # warm-up
    t = time.perf_counter()
    embedder.encode(docs, batch_size=batch_size)
    docs_s = len(docs) / (time.perf_counter() - t)
    embedder.encode(queries[:2])
    t = time.perf_counter()
    for q in queries:
        embedder.encode([q])
    q_ms = 1000 * (time.perf_counter() - t) / len(queries)
    return {"encode_docs_per_s": docs_s, "query_encode_ms": q_ms, "speed_docs": len(docs)}


def measure_search(
    doc_vecs: np.ndarray, query_vecs: np.ndarray, index_precision: str, n: int = 100, *, metric: str = "dot"
) -> float:
    """Mean ms per single-query search (k = 10) after one warm-up search.

    Args:
        doc_vecs: (n, d) vectors indexed at ``index_precision``.
        query_vecs: (m, d) queries; the first ``n`` are searched one at a time.
        index_precision: "fp32", "int8" or "binary".
        n: queries timed (at most; at least one).
        metric: the ``Index`` metric, as in ``retrieve``.

    Returns:
        Milliseconds per query.
    """
    search = _index_search_fn(doc_vecs, index_precision, metric)
    qs = query_vecs[: max(1, min(n, len(query_vecs)))]
    search(qs[:1])
    t = time.perf_counter()
    for i in range(len(qs)):
        search(qs[i : i + 1])
    return 1000 * (time.perf_counter() - t) / len(qs)


def run_grid(
    ds: BeirDataset,
    models: list[str],
    *,
    precisions=PRECISIONS,
    index_precisions=PRECISIONS,
    dims=TRUNCATE_DIMS,
    cache_dir=None,
    embeddings_cache=None,
    batch_size: int = 32,
    speed_docs: int = 256,
    threads: int | None = None,
    log=print,
) -> tuple[list[dict], list[dict]]:
    """Evaluate the grid (see the module docstring).

    Args:
        ds: the dataset.
        models: model names or folders.
        precisions: model precisions.
        index_precisions: index precisions.
        dims: truncations (None: the model's full dimension); values >= the model's dim are skipped.
        cache_dir: the export cache (``Embedder(cache_dir=)``).
        embeddings_cache: the SQLite embedding cache (``encode_cached``), or None.
        batch_size: ``encode``'s batch size.
        speed_docs: docs timed for throughput (``measure_encoder``).
        threads: onnxruntime threads (None: physical cores).
        log: where progress lines go.

    Returns:
        (rows, skipped): one dict per configuration (model, precision, index_precision, metric,
        dim, full_dim, ndcg@10, recall@100, encode_docs_per_s, query_ms, query_encode_ms,
        search_ms, bytes_per_vector, disk_bytes_per_vector), and ``{model, precision[,
        index_precision], reason}`` for each model, precision or index that could not be evaluated.
    """
    from ..embedder import Embedder

    rows, skipped = [], []
    for model in models:
        for precision in precisions:
            try:
                emb = Embedder(model, model_precision=precision, threads=threads, cache_dir=cache_dir)
                metric = index_metric_of(emb)  # refuses euclidean on raw vectors / manhattan, saying why
            except (ModelNotFoundError, EngineError, ImportError, OSError) as e:
                reason = f"{type(e).__name__}: {e}"
                log(f"skip {model} {precision}: {reason}")
                skipped.append({"model": model, "precision": precision, "reason": reason})
                continue
            log(f"{emb.name} {precision}: encoding {len(ds.doc_texts)} docs + {len(ds.query_texts)} queries")
            t = time.perf_counter()
            docs = encode_cached(emb, ds.doc_texts, embeddings_cache, batch_size)
            queries = encode_cached(emb, ds.query_texts, embeddings_cache, batch_size)
            log(f"  encoded in {time.perf_counter() - t:.1f}s (0 s when cached); timing on a sample")
            speed = measure_encoder(emb, ds, speed_docs=speed_docs, batch_size=batch_size)
            for dim in dims:
                d = emb.dim if dim is None else int(dim)
                if dim is not None and d >= emb.dim:
                    continue
                dv, qv = truncate(docs, d, metric), truncate(queries, d, metric)
                for ip in index_precisions:
                    try:
                        q = beir_scores(ds, dv, qv, k_values=(10, 100), index_precision=ip, metric=metric)
                        search_ms = measure_search(dv, qv, ip, metric=metric)
                    except InputError as e:
                        log(f"skip {emb.name} {precision} index {ip}: {e}")
                        skipped.append(
                            {"model": emb.name, "precision": precision, "index_precision": ip, "reason": str(e)}
                        )
                        continue
                    ram, disk = bytes_per_vector(d, ip)
                    row = {
                        "model": emb.name,
                        "precision": precision,
                        "index_precision": ip,
                        "metric": metric,
                        "dim": d,
                        "full_dim": emb.dim,
                        "ndcg@10": q["ndcg@10"],
                        "recall@100": q["recall@100"],
                        "encode_docs_per_s": speed["encode_docs_per_s"],
                        "query_ms": speed["query_encode_ms"] + search_ms,
                        "query_encode_ms": speed["query_encode_ms"],
                        "search_ms": search_ms,
                        "bytes_per_vector": ram,
                        "disk_bytes_per_vector": disk,
                    }
                    rows.append(row)
                    log(
                        f"  {config_name(row):<42} nDCG@10 {row['ndcg@10']:.4f}  R@100 {row['recall@100']:.4f}  "
                        f"{row['encode_docs_per_s']:.1f} docs/s  {row['query_ms']:.1f} ms/q  {ram} B/vec"
                    )
    return rows, skipped


def config_name(row: dict) -> str:
    """A row's configuration in words: "<model> <precision> / index <index precision> / dim <dim|full>"."""
    dim = "full" if row["dim"] == row["full_dim"] else str(row["dim"])
    return f"{row['model']} {row['precision']} / index {row['index_precision']} / dim {dim}"


def recommend(rows: list[dict], tolerance: float = 0.01) -> dict:
    """The recommendation rule, applied to ``run_grid``'s rows.

    The candidates are the configurations whose nDCG@10 is within ``tolerance`` (relative) of the
    best one measured. Among them, prefer the fastest encoder (highest docs/s of the model +
    precision, which also dominates query latency), then the fewest bytes per vector, then the
    higher nDCG@10. The runner-up is the best candidate by the same order that uses a different
    model or model precision (else the next candidate).

    Args:
        rows: result rows (``ndcg@10``, ``encode_docs_per_s``, ``bytes_per_vector``, ``model``,
            ``precision``, ...).
        tolerance: the relative nDCG@10 loss accepted, e.g. 0.01 for 1%.

    Returns:
        ``{"best", "recommended", "runner_up" (a row or None), "floor" (the nDCG@10 floor),
        "tolerance", "candidates" (their number)}``.

    Raises:
        InputError: ``rows`` is empty (no configuration could be evaluated).
    """
    if not rows:
        raise InputError("no configuration could be evaluated; see the skipped models and their reasons")
    best = max(rows, key=lambda r: r["ndcg@10"])
    floor = (1 - tolerance) * best["ndcg@10"]
    order = lambda r: (-r["encode_docs_per_s"], r["bytes_per_vector"], -r["ndcg@10"])
    cands = sorted((r for r in rows if r["ndcg@10"] >= floor), key=order)
    rec = cands[0]
    others = [r for r in cands[1:] if (r["model"], r["precision"]) != (rec["model"], rec["precision"])]
    runner = others[0] if others else (cands[1] if len(cands) > 1 else None)
    return {
        "best": best,
        "recommended": rec,
        "runner_up": runner,
        "floor": floor,
        "tolerance": tolerance,
        "candidates": len(cands),
    }


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows not dominated in (higher nDCG@10, higher docs/s, fewer bytes per vector)."""

    def dominated(a):
        return any(
            b is not a
            and b["ndcg@10"] >= a["ndcg@10"]
            and b["encode_docs_per_s"] >= a["encode_docs_per_s"]
            and b["bytes_per_vector"] <= a["bytes_per_vector"]
            and (b["ndcg@10"], b["encode_docs_per_s"], -b["bytes_per_vector"])
            != (a["ndcg@10"], a["encode_docs_per_s"], -a["bytes_per_vector"])
            for b in rows
        )

    return [r for r in rows if not dominated(r)]


def plot_pareto(rows: list[dict], rec: dict, path: str | os.PathLike, title: str = "") -> Path:
    """Quality (nDCG@10) vs encode throughput; marker area ~ bytes per vector; colour = model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.5), dpi=110)
    models = sorted({r["model"] for r in rows})
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    markers = {
        ("fp32", "fp32"): "o",
        ("fp32", "int8"): "s",
        ("int8", "fp32"): "^",
        ("int8", "int8"): "D",
        ("fp32", "binary"): "v",
        ("int8", "binary"): "P",
    }
    smax = max(r["bytes_per_vector"] for r in rows)
    for r in rows:
        ax.scatter(
            r["encode_docs_per_s"],
            r["ndcg@10"],
            s=30 + 400 * r["bytes_per_vector"] / smax,
            color=colors[r["model"]],
            marker=markers.get((r["precision"], r["index_precision"]), "o"),
            alpha=0.55,
            edgecolors="k",
            linewidths=0.4,
        )
    # the quality-vs-speed staircase: best nDCG achievable at >= this throughput
    xs, ys, cur = [], [], -1.0
    for r in sorted(rows, key=lambda r: -r["encode_docs_per_s"]):
        if r["ndcg@10"] > cur:
            cur = r["ndcg@10"]
            xs.append(r["encode_docs_per_s"])
            ys.append(cur)
    ax.step(xs, ys, where="post", color="0.4", lw=1, ls="--", label="quality/speed frontier")
    ax.scatter(
        [rec["encode_docs_per_s"]],
        [rec["ndcg@10"]],
        s=500,
        facecolors="none",
        edgecolors="red",
        lw=2,
        label=f"recommended: {config_name(rec)}",
    )
    for m in models:
        ax.scatter([], [], color=colors[m], label=m)
    for (p, ip), mk in markers.items():
        if ip != "binary" or any(r["index_precision"] == ip for r in rows):
            ax.scatter([], [], color="0.6", marker=mk, label=f"model {p}, index {ip}")
    ax.set_xlabel("encode throughput (docs/s, higher is faster)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(title or "select: quality vs speed (marker area ~ bytes per vector)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _bytes_note(result: dict) -> str:
    """The decision record's words on bytes per vector, and on binary's recall when it was measured."""
    if not any(r["index_precision"] == "binary" for r in result["rows"]):
        return (
            "Bytes per vector: fp32 index 4 x dim; int8 index dim (codes in RAM; it also keeps the fp32 vectors "
            "on disk, memory-mapped, for exact rescoring)."
        )
    from ..index.index import DEFAULT_OVERSAMPLE_BINARY

    docs, cands = result["dataset"]["docs"], 10 * DEFAULT_OVERSAMPLE_BINARY
    return (
        "Bytes per vector: fp32 index 4 x dim; int8 index dim; binary index 8 x ceil(dim / 64) (sign bits). "
        "int8 and binary hold their codes in RAM and keep the fp32 vectors on disk, memory-mapped, for exact "
        "rescoring of k x oversample candidates.\n\n"
        f"Binary ranks by sign bits first and rescores k x {DEFAULT_OVERSAMPLE_BINARY} candidates: {cands} for "
        f"k=10, {min(1.0, cands / max(docs, 1)):.0%} of these {docs} documents. On a larger corpus the same "
        "search rescores a smaller share and can miss more of the exact top 10, so measure binary on a corpus "
        "of the deployment's size before relying on its nDCG here."
    )


def decision_record(result: dict) -> str:
    """The Markdown decision record, all numbers from ``result`` (run_select's output)."""
    rec, best, run = result["recommended"], result["best"], result["runner_up"]
    tol = result["tolerance"]

    def cost_line(r):
        dq = r["ndcg@10"] - best["ndcg@10"]
        return (
            f"nDCG@10 {r['ndcg@10']:.4f} ({dq:+.4f} vs best, {100 * dq / best['ndcg@10']:+.2f}%), "
            f"recall@100 {r['recall@100']:.4f}, {r['encode_docs_per_s']:.1f} docs/s "
            f"({r['encode_docs_per_s'] / best['encode_docs_per_s']:.2f}x the best's), "
            f"{r['query_ms']:.1f} ms/query (best: {best['query_ms']:.1f}), "
            f"{r['bytes_per_vector']} B/vector ({best['bytes_per_vector'] / r['bytes_per_vector']:.1f}x smaller)"
        )

    ds = result["dataset"]
    lines = [
        f"# Decision record: embedding configuration for {ds['name']}",
        "",
        f"Measured by `embed select` on {ds['docs']} documents and {ds['queries']} judged queries"
        f"{' (a --max-docs sample: ' + str(ds['max_docs']) + ' docs)' if ds.get('max_docs') else ''}; "
        f"{result['environment']['threads']} onnxruntime threads on {result['environment']['cpu']} "
        f"({result['environment']['cpus']} CPUs, 1-min load average {result['environment'].get('loadavg_1min')} "
        "before/after: timings are relative to this load).",
        "",
        "## Decision",
        "",
        f"**Use {config_name(rec)}** ({rec['dim']}-d vectors).",
        "",
        f"- Cost in quality: {cost_line(rec)}.",
        f"- Best quality measured: {config_name(best)}: nDCG@10 {best['ndcg@10']:.4f}, "
        f"recall@100 {best['recall@100']:.4f}, {best['encode_docs_per_s']:.1f} docs/s, "
        f"{best['query_ms']:.1f} ms/query, {best['bytes_per_vector']} B/vector.",
        f"- Saves: encodes {rec['encode_docs_per_s'] / best['encode_docs_per_s']:.2f}x as many docs per second as the "
        f"best-quality configuration ({rec['encode_docs_per_s']:.1f} vs {best['encode_docs_per_s']:.1f} docs/s), "
        f"answers a query in {rec['query_ms']:.1f} instead of {best['query_ms']:.1f} ms, and stores "
        f"{best['bytes_per_vector'] - rec['bytes_per_vector']} fewer bytes per vector "
        f"({(best['bytes_per_vector'] - rec['bytes_per_vector']) * 1_000_000 / 2**20:,.0f} MiB less RAM "
        "per million documents).",
    ]
    if run:
        lines.append(f"- Runner-up: {config_name(run)}: {cost_line(run)}.")
    lines += [
        "",
        "## Rule",
        "",
        f"Candidates are the configurations with nDCG@10 >= (1 - {tol:g}) x best = {result['floor']:.4f} "
        f"({result['candidates']} of {len(result['rows'])}). Among them: highest encode throughput of the model "
        "+ precision (it also dominates query latency), then fewest bytes per vector, then higher nDCG@10. "
        "The runner-up is the first candidate in that order with a different model or model precision.",
        "",
        "Throughput is measured on a fixed sample of corpus documents after a warm-up; query latency is one query "
        "encoded alone plus one k=10 search. The machine is shared: timings vary by about 10% between runs, so "
        f"speed differences smaller than that are not meaningful. {_bytes_note(result)}",
        "",
        "## All configurations (sorted by nDCG@10)",
        "",
    ]
    from .evaluate import format_table

    table = [
        {
            "config": config_name(r),
            "nDCG@10": r["ndcg@10"],
            "recall@100": r["recall@100"],
            "docs/s": f"{r['encode_docs_per_s']:.1f}",
            "ms/query": f"{r['query_ms']:.1f}",
            "B/vector": r["bytes_per_vector"],
            "candidate": "yes" if r["ndcg@10"] >= result["floor"] else "",
        }
        for r in sorted(result["rows"], key=lambda r: -r["ndcg@10"])
    ]
    columns = ["config", "nDCG@10", "recall@100", "docs/s", "ms/query", "B/vector", "candidate"]
    lines.append(format_table(table, columns))
    if result["skipped"]:
        lines += ["", "## Not evaluated", ""]
        for s in result["skipped"]:
            index = ("index " + s["index_precision"]) if s.get("index_precision") else ""
            lines.append(f"- {s['model']} {s.get('precision', '')} {index}: {s['reason']}")
    lines += ["", "![quality vs speed](pareto.png)", ""]
    return "\n".join(lines)


def run_select(
    ds: BeirDataset,
    models: list[str],
    out_dir: str | os.PathLike | None = None,
    *,
    tolerance: float = 0.01,
    max_docs: int | None = None,
    log=print,
    **grid,
) -> dict:
    """Run the grid, recommend, and (with ``out_dir``) write results.json, decision.md and pareto.png.

    Args:
        ds: the dataset (``load_beir``, optionally ``subsample``d).
        models: model names or folders.
        out_dir: the output folder (created), or None to write nothing.
        tolerance: the relative nDCG@10 loss accepted (``recommend``), in [0, 1).
        max_docs: the ``--max-docs`` sample size ``ds`` was drawn with, for the record.
        log: where progress lines go.
        **grid: ``run_grid``'s keywords (precisions, index_precisions, dims, threads, ...).

    Returns:
        The result: dataset, environment, rule, ``recommend``'s keys, rows and skipped.

    Raises:
        InputError: ``tolerance`` outside [0, 1), or no configuration could be evaluated.
    """
    if not 0 <= tolerance < 1:
        raise InputError(f"tolerance is a fraction of the best nDCG@10 in [0, 1), got {tolerance}")
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows, skipped = run_grid(ds, models, log=log, **grid)
    rec = recommend(rows, tolerance)
    threads = grid.get("threads")
    result = {
        "dataset": {"name": ds.name, "docs": len(ds.doc_ids), "queries": len(ds.query_ids), "max_docs": max_docs},
        "environment": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": threads or "default (physical cores)",
            # 1-min load average before/after: timings on a busy machine are not comparable
            "loadavg_1min": [
                load_before and round(load_before[0], 1),
                round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
            ],
        },
        "rule": (
            f"candidates: nDCG@10 >= (1 - {tolerance:g}) * best; order: highest encode docs/s, "
            "then fewest bytes/vector, then higher nDCG@10"
        ),
        **rec,
        "rows": rows,
        "skipped": skipped,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=2))
        plot_pareto(rows, rec["recommended"], out / "pareto.png", title=f"embed select on {ds.name}")
        (out / "decision.md").write_text(decision_record(result))
        log(f"wrote {out / 'results.json'}, {out / 'decision.md'}, {out / 'pareto.png'}")
    return result
