"""pytest-benchmark profiles of end-to-end ``Embedder.encode``: model x device x precision x batch size.

    pytest bench/test_bench_encode.py --benchmark-only                     # every case that runs here
    pytest bench/test_bench_encode.py --benchmark-only -m "not slow"       # the tiny model only
    pytest bench/ --benchmark-only -k "encode and cpu and int8" --benchmark-group-by=param:batch_size
    BENCH_MODEL=all-MiniLM-L6-v2,all-mpnet-base-v2 BENCH_LENGTH=long pytest bench/ --benchmark-only -k encode

Case ids read model-device-precision-batch size, e.g. ``tiny-bert-cpu-int8-bs32`` (pick with
``-k "cpu and int8 and bs32"``; pytest's ``-k`` takes no ``=``). Models: a tiny random
BERT built in the test (``tests/conftest.build_tiny_model``; CI runs this file with
``--benchmark-disable`` as a smoke: each case runs once and its output is checked) and
all-MiniLM-L6-v2 (marked ``slow``); ``BENCH_MODEL`` (comma list of names or folders) replaces both.
A case that cannot run here is skipped with the reason: cuda without onnxruntime's
CUDAExecutionProvider, fp16 on CPU, int8 on cuda (a CPU recipe), a model whose weights are not on
this machine (benchmarks never download). Texts are cut from the built-in sample corpus to the
BENCH_LENGTH bucket (short/medium/long, default medium), BENCH_N_TEXTS of them (default 128).

pytest-benchmark runs 3 timed rounds (one pass over the texts each) after one untimed call of the
same shape and one warm-up round. ``extra_info`` carries texts/s and tokens/s of the best and the
median round (real tokens, no padding), as ``embed bench`` reports them; for the grid with
baselines and latency percentiles use ``embed bench``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from engine.benchmark.contenders import device_unavailable
from engine.benchmark.data import bucket_texts, read_corpus, token_count
from engine.benchmark.grid import parse_list
from engine.benchmark.measure import min_cosine

TINY = "tiny-bert"  # built in the test; no download
DEFAULT_MODELS = [(TINY, False), ("all-MiniLM-L6-v2", True)]  # (model, slow)
DEVICES = ["cpu", "cuda"]
PRECISIONS = ["fp32", "int8", "fp16"]
BATCH_SIZES = [1, 8, 32, 128]
N_TEXTS = int(os.environ.get("BENCH_N_TEXTS", "128"))
LENGTH = os.environ.get("BENCH_LENGTH", "medium")
ROUNDS = 3


def _unavailable(device: str, precision: str) -> str | None:
    """Why this device/precision pair cannot run here, or None."""
    if precision == "fp16" and device == "cpu":
        return "fp16 runs on cuda only"
    missing = device_unavailable(device)
    if missing is None and precision == "int8" and device == "cuda":
        return "int8 is the CPU recipe (dynamic quantization); on cuda use fp16"
    return missing


def _cases():
    env = os.environ.get("BENCH_MODEL")
    models = [(m, False) for m in parse_list(env)] if env else DEFAULT_MODELS
    for (model, slow), device, precision, bs in itertools.product(models, DEVICES, PRECISIONS, BATCH_SIZES):
        marks = [pytest.mark.slow] if slow else []
        if device == "cuda":
            marks.append(pytest.mark.gpu)
        why = _unavailable(device, precision)
        if why:
            marks.append(pytest.mark.skip(reason=why))
        yield pytest.param(
            model, device, precision, bs, marks=marks, id=f"{Path(model).name}-{device}-{precision}-bs{bs}"
        )


class Models:
    """Embedders built once per module: ``get(model, device, precision)``; ``texts(model)`` the
    model's benchmark texts (its own tokenizer counts the tokens)."""

    def __init__(self, tmp_path_factory):
        self._tmp = tmp_path_factory
        self._built: dict = {}
        self._texts: dict = {}
        self._tiny: tuple[Path, Path] | None = None

    def get(self, model: str, device: str, precision: str):
        from engine import Embedder
        from engine.errors import ModelNotFoundError

        key = (model, device, precision)
        if key not in self._built:
            if model == TINY:
                folder, cache = self._tiny_model()
                self._built[key] = Embedder(str(folder), device=device, model_precision=precision, cache_dir=cache)
            else:
                try:
                    with pytest.MonkeyPatch.context() as mp:
                        mp.setenv("HF_HUB_OFFLINE", "1")  # benchmarks never download
                        self._built[key] = Embedder(model, device=device, model_precision=precision)
                except ModelNotFoundError as e:
                    self._built[key] = e
        if isinstance(self._built[key], Exception):
            pytest.skip(str(self._built[key]))
        return self._built[key]

    def texts(self, model: str, emb) -> list[str]:
        if model not in self._texts:
            self._texts[model] = bucket_texts(emb, read_corpus(), LENGTH, N_TEXTS)
        return self._texts[model]

    def reference(self, model: str, texts: list[str]) -> np.ndarray:
        """The cpu fp32 vectors of ``texts``: the oracle of the other devices and precisions."""
        key = (model, "reference")
        if key not in self._built:
            self._built[key] = self.get(model, "cpu", "fp32").encode(texts, batch_size=32, normalize_embeddings=True)
        return self._built[key]

    def _tiny_model(self) -> tuple[Path, Path]:
        if self._tiny is None:
            from tests.conftest import build_tiny_model

            folder = build_tiny_model(self._tmp.mktemp("bench-model") / TINY)
            self._tiny = (folder, self._tmp.mktemp("bench-cache"))
        return self._tiny


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return Models(tmp_path_factory)


@pytest.mark.parametrize("model,device,precision,batch_size", list(_cases()))
def test_encode(benchmark, models, model, device, precision, batch_size):
    emb = models.get(model, device, precision)
    texts = models.texts(model, emb)
    n_tokens = token_count(emb, texts)
    benchmark.group = f"encode {emb.name} {LENGTH} x{len(texts)}"
    benchmark.extra_info.update(n_texts=len(texts), tokens=n_tokens, threads=emb.threads, fingerprint=emb.fingerprint)
    emb.encode(texts[:batch_size], batch_size=batch_size)  # never time a cold call
    vecs = benchmark.pedantic(
        emb.encode,
        args=(texts,),  # unit vectors: the norm check below holds for any model
        kwargs={"batch_size": batch_size, "normalize_embeddings": True},
        rounds=ROUNDS,
        iterations=1,
        warmup_rounds=1,
    )
    if benchmark.stats is not None:  # None under --benchmark-disable
        best, median = benchmark.stats.stats.min, benchmark.stats.stats.median
        benchmark.extra_info.update(
            texts_per_s=len(texts) / best,
            tokens_per_s=n_tokens / best,
            texts_per_s_median=len(texts) / median,
            tokens_per_s_median=n_tokens / median,
        )
    assert vecs.shape == (len(texts), emb.dim) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    # the batch size changes the schedule, not the vectors: exactly on cpu fp32; int8 quantizes
    # activations per batch (MiniLM: cosine 0.993 between batch 32 and 1, 0.989 to fp32) and GPU
    # kernels change with the shape, so those are held to a cosine floor, also against cpu fp32
    ref = emb.encode(texts[:4], batch_size=1, normalize_embeddings=True)
    if (device, precision) == ("cpu", "fp32"):
        np.testing.assert_allclose(vecs[:4], ref, atol=1e-5)
    else:
        assert min_cosine(vecs[:4], ref) >= 0.98
        assert min_cosine(vecs, models.reference(model, texts)) >= 0.98
