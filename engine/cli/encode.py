"""``embed encode`` (corpus files or stdin -> resumable shards) and ``embed search`` (query those shards).

The work is in ``engine.corpus.embed_corpus`` (its settings: ``engine.corpus.options.CorpusOptions``)
and ``engine.corpus.shards.CorpusSearcher``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..precisions import INDEX_PRECISIONS
from . import add_model_precision


def register(sub) -> None:
    p = sub.add_parser(
        "encode",
        help="embed corpus files or stdin (jsonl/csv/tsv/parquet/txt) into resumable shards",
        description="Embed documents into OUTDIR as shards (shard-NNNNN.npy vectors + .jsonl ids/titles, or "
        "with --output-format parquet one shard-NNNNN.parquet each: id, title, embedding) and manifest.json; "
        "engine.corpus.load_embeddings(OUTDIR) reads either. Interrupted? Rerun the same command: finished "
        "shards are kept. Unchanged documents come from the embedding cache. JSON lines use _id/title/text; "
        "the embedded text is 'title text' when a title is present. Files are read by suffix "
        "(.jsonl/.ndjson/.json, .csv, .tsv/.tab, .parquet/.pq, .txt, each also .gz); any other is an error "
        "unless --format names one. '-' reads standard input: JSON lines when its first line starts with '{', "
        "else one document per line, or --format.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files, quoted globs ('data/*.jsonl'), - for standard input, or (with --ray) URIs: "
        "'s3://bucket/corpus/*.parquet', gs://, hdfs://",
    )
    p.add_argument(
        "-o", "--out", required=True, metavar="OUTDIR", help="output folder; with --ray also a URI (s3://bucket/out)"
    )
    p.add_argument("--model", default=None, help="model name or folder (default: all-MiniLM-L6-v2)")
    add_model_precision(p)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: physical cores)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--id-field",
        default="_id",
        help="id field / column; '' numbers the records instead (the row, or the line a record "
        "starts at in a text-based file; plain text is always numbered) (default: _id)",
    )
    p.add_argument("--text-field", default="text", help="text field / column (default: text)")
    p.add_argument("--title-field", default="title", help="title field / column; '' for none (default: title)")
    p.add_argument(
        "--format",
        default=None,
        choices=["jsonl", "csv", "tsv", "text", "parquet"],
        help="read every input (and stdin) as this format instead of by file suffix",
    )
    p.add_argument("--truncate-dim", type=int, default=None, help="keep the first N dimensions (Matryoshka)")
    p.add_argument(
        "--output-format",
        default="npy",
        choices=["npy", "parquet"],
        help="shard files: npy (.npy vectors + .jsonl ids/titles) or parquet (one .parquet per shard "
        "with id, title, embedding columns; needs pyarrow: pip install 'embed-engine[corpus]') "
        "(default: npy)",
    )
    _prompt_args(p, "documents", "the model's document prompt, as encode_document (none if it has none)")
    p.add_argument("--shard-size", type=int, default=10_000, help="documents per shard (default: 10000)")
    p.add_argument("--no-cache", action="store_true", help="do not use the embedding cache")
    p.add_argument(
        "--cache", default=None, metavar="PATH", help="embedding cache file (default: <engine cache>/embeddings.sqlite)"
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip bad records and duplicate ids, listing them in OUTDIR/rejects.jsonl",
    )
    p.add_argument("--overwrite", action="store_true", help="delete an existing output in OUTDIR first")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r = p.add_argument_group(
        "Ray (pip install 'embed-engine[ray]')",
        "embed on a Ray cluster; the driver reads "
        "the inputs and writes OUTDIR, actors run the model (see engine.corpus.ray)",
    )
    r.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: 'auto' (the cluster on this machine), 'ray://HEAD:10001' (Ray Client), "
        "HOST:PORT; without ADDRESS, $RAY_ADDRESS or a new local cluster",
    )
    r.add_argument(
        "--distributed",
        action="store_true",
        help="keep the driver off the data path: workers read the input files and write OUTDIR "
        "(engine.corpus.distributed; implied by s3://, gs://, hdfs:// inputs or OUTDIR)",
    )
    r.add_argument("--actors", type=int, default=None, help="model actors (default: cluster CPUs / --cpus-per-actor)")
    r.add_argument("--cpus-per-actor", type=float, default=1, help="CPUs (and onnxruntime threads) per actor")
    r.add_argument("--gpus-per-actor", type=float, default=None, help="GPUs per actor (default 1 with --device cuda)")
    p.set_defaults(func=cmd_encode)

    s = sub.add_parser(
        "search",
        help="search an 'embed encode' output folder",
        description="Load OUTDIR's shards into an index and print the top hits per query.",
    )
    s.add_argument("outdir", metavar="OUTDIR")
    s.add_argument("queries", nargs="+", metavar="QUERY")
    s.add_argument("-k", type=int, default=10, help="hits per query (default: 10)")
    s.add_argument(
        "--index-precision",
        action=_IndexPrecision,
        choices=INDEX_PRECISIONS,
        default=None,
        help="fp32 (exact scan), int8 (codes: 1/4 the memory) or binary (sign bits: 1/32; CPU only); "
        "int8 and binary rescore k x oversample candidates exactly (default: fp32)",
    )
    s.add_argument(
        "--int8",
        action=_IndexPrecision,
        nargs=0,
        const="int8",
        dest="index_precision",
        help="short for --index-precision int8",
    )
    s.add_argument("--model", default=None, help="model to embed queries (default: the one in the manifest)")
    s.add_argument("--device", default="cpu")
    _prompt_args(s, "queries", "the query prompt in OUTDIR's manifest (the model's, as encode_query)")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--json", action="store_true", help="print hits as JSON lines")
    s.set_defaults(func=cmd_search)


class _IndexPrecision(argparse.Action):
    """--index-precision P, and --int8 (its shorthand, nargs=0): one value; two that differ are a usage error."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        value = self.const if self.nargs == 0 else values
        given = getattr(namespace, self.dest, None)
        if given is not None and given != value:
            parser.error(
                f"argument {option_string}: conflicts with the index precision {given!r} given before "
                "(--int8 is short for --index-precision int8); give one"
            )
        setattr(namespace, self.dest, value)


def _prompt_args(p, what: str, default: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--prompt-name",
        default=None,
        metavar="NAME",
        help=f"prepend the model's prompt NAME to the {what} (default: {default})",
    )
    g.add_argument(
        "--prompt",
        default=None,
        metavar="TEXT",
        help=f"prepend TEXT to the {what}; '' for no prompt (default: {default})",
    )


def _ensure_weights(model: str | None) -> None:
    from ..models import DEFAULT_MODEL
    from ..models.fetch import fetch

    model = model or DEFAULT_MODEL
    if not Path(model).expanduser().is_dir():
        fetch(model)  # no-op when the weights are already installed


def cmd_encode(args) -> int:
    from ..corpus.driver import embed_corpus
    from ..corpus.options import CorpusOptions
    from ..corpus.storage import is_uri
    from ..errors import InputError

    run, extra = embed_corpus, {}
    uris = [x for x in [*args.inputs, args.out] if is_uri(x)]
    if args.ray is not None:
        run, extra = _ray_encode(args, distributed=args.distributed or bool(uris))
    elif uris or args.distributed:
        raise InputError(
            f"{uris[0] if uris else '--distributed'}: object storage inputs and outputs, and "
            "--distributed, need Ray: add --ray (pip install 'embed-engine[ray]')"
        )
    elif (args.actors, args.cpus_per_actor, args.gpus_per_actor) != (None, 1, None):
        raise InputError("--actors, --cpus-per-actor and --gpus-per-actor need --ray")
    options = CorpusOptions(  # checked before any model download: Parquet without pyarrow says so
        model_precision=args.model_precision,
        device=args.device,
        threads=args.threads,
        batch_size=args.batch_size,
        id_field=args.id_field,
        text_field=args.text_field,
        title_field=args.title_field or None,
        truncate_dim=args.truncate_dim,
        shard_size=args.shard_size,
        cache=False if args.no_cache else (args.cache or True),
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        progress=not args.quiet,
        format=args.format,
        prompt_name=args.prompt_name,
        prompt=args.prompt,
        output_format=args.output_format,
    )
    _ensure_weights(args.model)
    summary = run(args.inputs, args.out, args.model, options=options, **extra)
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(summary)
        if summary.rejected:
            print(f"skipped {summary.rejected} bad records: see {args.out.rstrip('/')}/rejects.jsonl", file=sys.stderr)
    return 0


def _ray_encode(args, distributed: bool = False):
    """(embed_corpus_ray or, distributed, embed_corpus_distributed; their Ray arguments)."""
    import re

    from ..errors import InputError, missing_extra

    address = args.ray
    if address and not (address in ("auto", "local") or "://" in address or re.fullmatch(r"[\w.\-]+:\d+", address)):
        raise InputError(
            f"--ray took {address!r} as the cluster ADDRESS, which is not one ('auto', 'local', "
            "'ray://HOST:10001' or HOST:PORT); put --ray last, or write --ray=auto"
        )
    try:
        import ray  # noqa: F401
    except ImportError:
        raise missing_extra("ray", "ray") from None
    from ..corpus.distributed import embed_corpus_distributed
    from ..corpus.ray import embed_corpus_ray

    run = embed_corpus_distributed if distributed else embed_corpus_ray
    return run, {
        "address": address or None,
        "actors": args.actors,
        "cpus_per_actor": args.cpus_per_actor,
        "gpus_per_actor": args.gpus_per_actor,
    }


def cmd_search(args) -> int:
    from ..corpus.shards import CorpusSearcher, read_manifest
    from ..corpus.storage import readable_outdir

    outdir = readable_outdir(args.outdir)  # an s3:// (gs://, ...) OUTDIR is mirrored locally once
    _ensure_weights(args.model or read_manifest(outdir)["model"]["ref"])
    searcher = CorpusSearcher(
        outdir, model=args.model, precision=args.index_precision or "fp32", device=args.device, threads=args.threads
    )
    results = searcher.search(args.queries, k=args.k, prompt_name=args.prompt_name, prompt=args.prompt)
    for query, hits in zip(args.queries, results):
        if args.json:
            print(
                json.dumps(
                    {"query": query, "hits": [{"id": i, "score": s, "title": t} for i, s, t in hits]},
                    ensure_ascii=False,
                )
            )
            continue
        print(f"query  {query}")
        for rank, (i, s, t) in enumerate(hits, 1):
            print(f"  {rank:>3}  {s:.4f}  {i}  {t}")
    return 0
