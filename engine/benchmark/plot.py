"""PNG plots of a benchmark results document (matplotlib, Agg backend; imported lazily).

Per model: ``latency_<model>.png`` (p50 latency per batch call vs batch size, one panel per
length bucket, p95 as a band), ``throughput_<model>.png`` (texts/s vs batch size, one panel per
length bucket), and ``cpu_vs_gpu_<model>.png`` when both devices produced rows.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from ..errors import missing_extra

_STYLE = {"st-torch": "--", "st-onnx": ":"}


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise missing_extra("matplotlib", "bench") from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _ticker():
    import matplotlib.ticker

    return matplotlib.ticker


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text).rstrip("/").split("/")[-1]) or "model"


def _series(rows):
    """{(device, label): sorted [(batch_size, row)]} for the rows of one length bucket."""
    out = defaultdict(list)
    for r in rows:
        out[(r["device"], r["label"])].append((r["batch_size"], r))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in sorted(out.items())}


def _panels(plt, rows, lengths, title, ylabel, value, band=None):
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.6 * len(lengths), 4.0), squeeze=False)
    for ax, length in zip(axes[0], lengths):
        sel = [r for r in rows if r["length"] == length]
        for (device, label), pts in _series(sel).items():
            xs = [b for b, _ in pts]
            ys = [value(r) for _, r in pts]
            contender = pts[0][1]["contender"]
            (line,) = ax.plot(xs, ys, _STYLE.get(contender, "-"), marker="o", ms=3.5, label=f"{label} ({device})")
            if band is not None:
                ax.fill_between(xs, ys, [band(r) for _, r in pts], color=line.get_color(), alpha=0.15, lw=0)
        tokens = sel[0]["tokens"] / sel[0]["n_texts"] if sel else 0
        ax.set_title(f"{length} (~{tokens:.0f} tokens/text)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        sizes = sorted({r["batch_size"] for r in sel})
        ax.set_xticks(sizes, [str(b) for b in sizes])
        fmt = _ticker().FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(_ticker().FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        ax.xaxis.set_minor_formatter(_ticker().NullFormatter())
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_results(result: dict, out_dir: str | Path) -> list[Path]:
    """Write the PNGs for every model in ``result`` into ``out_dir``; return their paths."""
    plt = _pyplot()
    out = Path(out_dir)
    paths: list[Path] = []
    lengths_order = list(result["config"]["lengths"])
    by_model = defaultdict(list)
    for r in result["rows"]:
        by_model[r["model"]].append(r)
    for model, rows in by_model.items():
        lengths = [x for x in lengths_order if any(r["length"] == x for r in rows)]
        slug = _slug(model)
        threads = result["config"].get("threads")
        figs = {
            f"latency_{slug}.png": _panels(
                plt,
                rows,
                lengths,
                f"{slug}: latency per batch call (p50, band to p95), {threads} threads",
                "ms per batch",
                lambda r: r["latency_ms"]["p50"],
                band=lambda r: r["latency_ms"]["p95"],
            ),
            f"throughput_{slug}.png": _panels(
                plt,
                rows,
                lengths,
                f"{slug}: throughput (best pass), {threads} threads",
                "texts/s",
                lambda r: r["texts_per_s"],
            ),
        }
        devices = {r["device"] for r in rows if r["contender"] == "engine"}
        if len(devices) > 1:
            eng = [r for r in rows if r["contender"] == "engine"]
            figs[f"cpu_vs_gpu_{slug}.png"] = _panels(
                plt, eng, lengths, f"{slug}: engine throughput by device", "texts/s", lambda r: r["texts_per_s"]
            )
        for name, fig in figs.items():
            p = out / name
            fig.savefig(p, dpi=110)
            plt.close(fig)
            paths.append(p)
    return paths
