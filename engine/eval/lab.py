"""The model lab (``embed compare``): the same texts through several models, side by side.

Per model: dim, parameter count (sum of the ONNX initializers' sizes), ONNX file size, encode
throughput (texts/s after a warm-up) and single-text latency, and how well its neighbours keep
the texts' labels (share of the top-5 neighbours with the same label). Between models: Spearman
correlation of their pairwise cosine similarities (all pairs of texts) and the mean overlap of
their top-5 neighbour sets. Pictures: similarity heatmaps side by side, the agreement matrix,
and a t-SNE map per model coloured by label (or by KMeans cluster when the texts have no label).

The default texts are the built-in sample corpus (200 docs, 20 topics of 10: d001-d010 is
topic 1, and so on). Timings here are simple warm-then-time figures, not a benchmark.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..corpus.cache import encode_cached
from ..corpus.readers import Fields, read_documents, read_sample
from ..errors import EngineError, InputError

SAMPLE_TOPICS = (
    "astronomy",
    "food chemistry",
    "cell biology",
    "programming languages",
    "databases",
    "football",
    "composers",
    "volcanoes",
    "ancient Rome",
    "machine learning",
    "vaccines",
    "climate",
    "ocean life",
    "chess",
    "photography",
    "economics",
    "railways",
    "coffee",
    "bees",
    "electric cars",
)
NEIGHBOURS = 5


def load_texts(path: str | os.PathLike | None = None) -> tuple[list[str], list[str], list[str] | None]:
    """(ids, texts, labels or None). Without a path: the sample corpus, labelled by topic.

    Any file the corpus reader takes (jsonl/csv/tsv/parquet with ``_id``/``title``/``text``, or one
    text per line); a record may carry a ``label`` (or ``topic``). Texts follow the one title+text rule.
    """
    if path is None:
        docs = read_sample("sample_corpus.jsonl")
        labels = [SAMPLE_TOPICS[(int(d.id[1:]) - 1) // 10] for d in docs]
        return [d.id for d in docs], [d.text for d in docs], labels
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"texts file not found: {path}")
    docs = read_documents(path, Fields(extra=("label", "topic")))
    if not docs:
        raise InputError(f"{path} holds no rows; give a jsonl with _id/title/text per line")
    found = [next((x for x in d.extra if x is not None), None) for d in docs]
    return [d.id for d in docs], [d.text for d in docs], (None if None in found else [str(x) for x in found])


def onnx_stats(onnx_path: str | os.PathLike) -> dict:
    """Parameter count (element counts of the initializers and Constant tensors) and file size.

    Exporters share identical tensors (e.g. freshly initialised LayerNorm weights), so the count
    can be slightly below the checkpoint's for untrained models; trained weights are distinct.
    """
    import onnx

    path = Path(onnx_path)
    model = onnx.load(str(path), load_external_data=False)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    # small weights (biases, LayerNorm) may sit in Constant nodes instead of initializers
    params += sum(
        int(np.prod(a.t.dims))
        for n in model.graph.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value" and a.t.dims
    )
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob("*.onnx_data"))
    return {"parameters": params, "onnx_bytes": size}


def cosine_matrix(v: np.ndarray) -> np.ndarray:
    """(n, n) cosine similarities of the rows of ``v`` (zero rows score 0)."""
    n = np.linalg.norm(v, axis=1, keepdims=True)
    u = v / np.where(n > 0, n, 1)
    return u @ u.T


def neighbours(sim: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Indices of each row's k most similar other rows (self excluded; ties by index)."""
    s = sim.copy()
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def agreement(sim_a: np.ndarray, sim_b: np.ndarray, k: int = NEIGHBOURS) -> dict:
    """How two models agree on the same texts, from their (n, n) similarity matrices.

    Returns:
        ``{"spearman": Spearman correlation of the pairwise similarities (upper triangle),
        "top<k>_overlap": mean share of each text's k nearest neighbours the two have in common}``.
    """
    from scipy.stats import spearmanr

    iu = np.triu_indices(len(sim_a), 1)
    na, nb = neighbours(sim_a, k), neighbours(sim_b, k)
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(na, nb)])
    return {"spearman": float(spearmanr(sim_a[iu], sim_b[iu]).statistic), f"top{k}_overlap": float(overlap)}


def label_consistency(sim: np.ndarray, labels: list[str], k: int = NEIGHBOURS) -> float:
    """Share of each text's top-k neighbours that carry its label, averaged over texts."""
    lab = np.asarray(labels)
    nb = neighbours(sim, k)
    return float(np.mean(lab[nb] == lab[:, None]))


def time_encoder(emb, texts: list[str], latency_n: int = 20) -> dict:
    """``{"texts_per_s"}`` over ``texts`` and ``{"latency_ms"}``, the mean for one text alone over the
    first ``latency_n``, both after a warm-up."""
    emb.encode(texts[:32])
    t = time.perf_counter()
    emb.encode(texts)
    tput = len(texts) / (time.perf_counter() - t)
    one = texts[: max(1, min(latency_n, len(texts)))]
    emb.encode(one[:1])
    t = time.perf_counter()
    for x in one:
        emb.encode([x])
    return {"texts_per_s": tput, "latency_ms": 1000 * (time.perf_counter() - t) / len(one)}


def _balanced_subset(labels: list[str] | None, n_total: int, limit: int) -> np.ndarray:
    """Up to ``limit`` indices, an equal share of every label (the heatmap then shows blocks)."""
    if limit >= n_total:
        return np.arange(n_total)
    if labels is None:
        return np.arange(limit)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    per = max(1, limit // len(groups))
    idx = [i for g in groups.values() for i in g[:per]][:limit]
    return np.array(sorted(idx, key=lambda i: (list(groups).index(labels[i]), i)))


def run_lab(
    models: list[str],
    out_dir: str | os.PathLike,
    *,
    texts_path=None,
    limit: int = 60,
    cache_dir=None,
    embeddings_cache=None,
    log=print,
    tsne_seed: int = 0,
) -> dict:
    """Compare ``models`` on the same texts; writes lab.json and three PNGs into ``out_dir``.

    Args:
        models: model names or folders; one that cannot be loaded is skipped, with its reason.
        out_dir: the output folder (created).
        texts_path: a file of texts (``load_texts``); None: the built-in sample corpus.
        limit: texts in the heatmaps (a balanced subset by label).
        cache_dir: the export cache (``Embedder(cache_dir=)``).
        embeddings_cache: the SQLite embedding cache (``encode_cached``), or None.
        log: where progress lines go.
        tsne_seed: the t-SNE and KMeans seed.

    Returns:
        What lab.json holds: per-model figures, pairwise agreement, skipped models, file names.

    Raises:
        InputError: fewer than ``NEIGHBOURS + 2`` texts, or no model could be loaded.
        FileNotFoundError: ``texts_path`` does not exist.
    """
    from ..embedder import Embedder
    from ..models.export import load_or_export

    _ids, texts, labels = load_texts(texts_path)
    if len(texts) < NEIGHBOURS + 2:
        raise InputError(f"the lab needs at least {NEIGHBOURS + 2} texts, got {len(texts)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_model: dict[str, dict] = {}
    vecs: dict[str, np.ndarray] = {}
    skipped: list[dict[str, str]] = []
    for model in models:
        try:
            emb = Embedder(model, cache_dir=cache_dir)
            stats = onnx_stats(load_or_export(model, cache_dir=cache_dir).onnx_path)
        except (EngineError, ImportError, OSError) as e:
            log(f"skip {model}: {type(e).__name__}: {e}")
            skipped.append({"model": str(model), "reason": f"{type(e).__name__}: {e}"})
            continue
        key = emb.name if emb.name not in per_model else f"{emb.name}#{len(per_model)}"
        v = encode_cached(emb, texts, embeddings_cache)
        timing = time_encoder(emb, texts)
        sim = cosine_matrix(v)
        per_model[key] = {
            "model": str(model),
            "fingerprint": emb.fingerprint,
            "dim": emb.dim,
            "max_seq_length": emb.max_seq_length,
            **stats,
            **timing,
            "label_top5_consistency": label_consistency(sim, labels) if labels else None,
        }
        vecs[key] = v
        log(
            f"{key}: dim {emb.dim}, {stats['parameters'] / 1e6:.1f}M params, {stats['onnx_bytes'] / 2**20:.1f} MiB, "
            f"{timing['texts_per_s']:.1f} texts/s, {timing['latency_ms']:.1f} ms/text"
        )
    if not per_model:
        raise InputError("no model could be loaded: " + "; ".join(f"{s['model']}: {s['reason']}" for s in skipped))
    names = list(per_model)
    sims = {m: cosine_matrix(vecs[m]) for m in names}
    pairs = {f"{a} | {b}": agreement(sims[a], sims[b]) for i, a in enumerate(names) for b in names[i + 1 :]}
    sub = _balanced_subset(labels, len(texts), limit)
    files = {
        "heatmaps": str(
            plot_heatmaps(
                {m: sims[m][np.ix_(sub, sub)] for m in names},
                [labels[i] for i in sub] if labels else None,
                out / "similarity_heatmaps.png",
            )
        ),
        "agreement": str(plot_agreement(names, pairs, out / "agreement.png")),
        "tsne": str(plot_tsne(vecs, labels, out / "tsne.png", seed=tsne_seed)),
    }
    result = {
        "texts": len(texts),
        "source": str(texts_path or "engine/data/sample_corpus.jsonl"),
        "labels": "topic" if labels else None,
        "heatmap_texts": len(sub),
        "models": per_model,
        "agreement": pairs,
        "skipped": skipped,
        "files": {k: Path(v).name for k, v in files.items()},
    }
    (out / "lab.json").write_text(json.dumps(result, indent=2))
    log(format_summary(result))
    log(f"wrote {out / 'lab.json'} and {', '.join(Path(f).name for f in files.values())}")
    return result


def format_summary(result: dict) -> str:
    """``run_lab``'s result as text tables: one row per model, then one per pair of models."""
    from .evaluate import format_table

    rows = [
        {
            "model": m,
            "dim": r["dim"],
            "params (M)": f"{r['parameters'] / 1e6:.1f}",
            "onnx (MiB)": f"{r['onnx_bytes'] / 2**20:.1f}",
            "texts/s": f"{r['texts_per_s']:.1f}",
            "ms/text": f"{r['latency_ms']:.1f}",
            "top5 same label": "" if r["label_top5_consistency"] is None else f"{r['label_top5_consistency']:.3f}",
        }
        for m, r in result["models"].items()
    ]
    text = format_table(rows, ["model", "dim", "params (M)", "onnx (MiB)", "texts/s", "ms/text", "top5 same label"])
    if result["agreement"]:
        arows = [
            {"pair": p, "spearman": a["spearman"], "top5 overlap": a[f"top{NEIGHBOURS}_overlap"]}
            for p, a in result["agreement"].items()
        ]
        text += "\n\n" + format_table(arows, ["pair", "spearman", "top5 overlap"], ".3f")
    return text


# -- pictures (matplotlib Agg, imported here only) -------------------------------------------
def _plt():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heatmaps(sims: dict[str, np.ndarray], labels: list[str] | None, path: Path) -> Path:
    """Similarity heatmaps side by side, one per model (labels on the y axis when given); returns ``path``."""
    plt = _plt()
    n = len(sims)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 5.0), dpi=100, squeeze=False)
    for ax, (name, s) in zip(axes[0], sims.items()):
        im = ax.imshow(s, cmap="viridis", vmin=min(0.0, float(s.min())), vmax=1.0)
        ax.set_title(name, fontsize=9)
        if labels:
            starts = [i for i in range(len(labels)) if i == 0 or labels[i] != labels[i - 1]]
            ax.set_yticks(starts)
            ax.set_yticklabels([labels[i] for i in starts], fontsize=6)
            ax.set_xticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle("pairwise cosine similarity (same texts, same order)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_agreement(names: list[str], pairs: dict, path: Path) -> Path:
    """The agreement matrices (Spearman, top-k overlap) of every pair of models; returns ``path``."""
    plt = _plt()
    n = len(names)
    m = np.eye(n)
    o = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            a = pairs[f"{names[i]} | {names[j]}"]
            m[i, j] = m[j, i] = a["spearman"]
            o[i, j] = o[j, i] = a[f"top{NEIGHBOURS}_overlap"]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 2.2 * n, 2 + 1.4 * n), dpi=100)
    panels = ((axes[0], m, "Spearman of pairwise similarities"), (axes[1], o, f"top-{NEIGHBOURS} neighbour overlap"))
    for ax, mat, title in panels:
        ax.imshow(mat, cmap="magma", vmin=0, vmax=1)
        ax.set_xticks(range(n))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(n))
        ax.set_yticklabels(names, fontsize=7)
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{mat[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="w" if mat[i, j] < 0.6 else "k",
                    fontsize=8,
                )
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_tsne(vecs: dict[str, np.ndarray], labels: list[str] | None, path: Path, seed: int = 0) -> Path:
    """t-SNE (cosine metric, PCA init) per model, coloured by label or by KMeans cluster."""
    from sklearn.cluster import KMeans
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    plt = _plt()
    n = len(vecs)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4.8), dpi=100, squeeze=False)
    for ax, (name, v) in zip(axes[0], vecs.items()):
        perplexity = float(min(30.0, max(2.0, (len(v) - 1) / 3)))
        # one thread: OpenMP threads spinning on a busy machine slow lab-sized inputs down; chosen by
        # measurement: bench/experiments/engine_notes.md#t-sne-on-one-thread
        with threadpool_limits(limits=1):
            xy = TSNE(
                n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed
            ).fit_transform(v)
            if labels:
                cats = sorted(set(labels), key=labels.index)
                color = np.array([cats.index(x) for x in labels])
                how = "label"
            else:
                color = KMeans(n_clusters=max(2, min(10, len(v) // 5)), n_init=10, random_state=seed).fit_predict(v)
                how = f"KMeans k={color.max() + 1}"
        ax.scatter(xy[:, 0], xy[:, 1], c=color, cmap="tab20", s=14)
        if labels:
            for c, cat in enumerate(cats):
                cx, cy = xy[color == c].mean(axis=0)
                ax.annotate(cat, (cx, cy), fontsize=6, ha="center", alpha=0.8)
        ax.set_title(f"{name} (colour: {how})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("t-SNE of the embeddings", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
