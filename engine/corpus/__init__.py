"""Corpora: one reader, one title+text rule, the embedding cache, shards + manifest, one driver.

any source -> readers (Doc records, ``compose`` = the title+text rule) -> driver (duplicate ids,
shard plan, resume) -> cache lookup -> executor embeds the misses (local threads | Ray actors)
-> shards (``.npy`` + ``.jsonl``, or ``.parquet``; done records) + manifest
-> ``load_embeddings`` / ``load_index`` / ``CorpusSearcher``

Every entry point takes the same settings, ``CorpusOptions`` (``engine.corpus.options``).
"""

from .driver import CorpusSummary, embed_corpus
from .options import CorpusOptions
from .shards import load_embeddings

__all__ = ["CorpusOptions", "CorpusSummary", "embed_corpus", "load_embeddings"]
