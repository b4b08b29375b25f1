"""OpenVINO static int8: the fp32 CPU graph quantized by NNCF at export, calibrated on the engine's own texts.

``model_precision="int8"`` on ``runtime="openvino"`` runs this graph (onnxruntime's int8 is a dynamically
quantized ONNX graph, ``models.quantize``). Static quantization fixes each activation's int8 range at export
from calibration texts; the export has no user data, so it calibrates on texts shipped with the engine
(``calibration_texts``). The result is an OpenVINO IR (``.xml`` + ``.bin``) in the export's cache folder;
OpenVINO runs its quantized ops in int8 and the rest in f32. nncf is an export-time tool (the ``export``
extra), never imported at run time. Quality is gated like onnxruntime's int8: mean cosine to fp32 on the
calibration sentences at or above ``models.quantize.MIN_CALIBRATION_COSINE``.
Measurements (speed per CPU class, quality of the built-in calibration): bench/experiments/runtime_choice.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path

from ..errors import ExportError, missing_extra

#: Demo-corpus documents joined per long calibration text: long inputs set the ranges of long documents.
JOINED_DOCS = 8


def calibration_texts() -> list[str]:
    """The static-int8 calibration texts: the built-in demo corpus (title + text), concatenations of
    ``JOINED_DOCS`` of its documents (long inputs, truncated at the model's max_seq_length), and the
    int8 / bf16 gates' sentences (``models.quantize``), in that order."""
    from importlib import resources

    from .quantize import _BF16_CALIBRATION

    lines = resources.files("engine").joinpath("data/sample_corpus.jsonl").read_text("utf-8").splitlines()
    docs = [f"{d.get('title', '')} {d['text']}".strip() for d in map(json.loads, lines) if d.get("text")]
    joined = [" ".join(docs[i : i + JOINED_DOCS]) for i in range(0, len(docs), JOINED_DOCS)]
    return [*docs, *joined, *_BF16_CALIBRATION]


def _nncf():
    try:
        import nncf
    except ImportError as e:
        raise missing_extra("nncf", "export") from e
    return nncf


@contextlib.contextmanager
def _quiet(nncf):
    """NNCF's progress bars (rich, on sys.stdout) and INFO lines off: the export logs two lines, not a screenful.

    NNCF sets the level of handlers it finds (the root logger's among them, seen with pytest's capture
    handlers) and leaves them so; every level it can touch is put back afterwards.
    """
    nncf_logger = logging.getLogger("nncf")
    handlers = {*logging.getLogger().handlers, *nncf_logger.handlers}
    levels = [(h, h.level) for h in handlers] + [(lg, lg.level) for lg in (logging.getLogger(), nncf_logger)]
    if hasattr(nncf, "set_log_level"):
        nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for obj, level in levels:
            obj.setLevel(level)


def quantize_static_int8(graph: str | Path, dst: str | Path, spec, tokenizer_folder: str | Path) -> dict:
    """Write ``dst`` (an OpenVINO IR ``.xml`` and its ``.bin``), ``graph`` quantized by NNCF.

    Args:
        graph: the fp32 ONNX graph the CPU runs (the export's runtime graph).
        dst: the IR's ``.xml`` path; both files are written under temporary names and renamed.
        spec: the model's spec (``max_seq_length`` truncates the calibration texts).
        tokenizer_folder: the folder whose tokenizer.json the engine runs.

    Returns:
        The settings recorded in the export's meta.json (method, nncf version, calibration size).

    Raises:
        ImportError: nncf or openvino is not installed (names the extra).
        ExportError: no tokenizer.json to build calibration inputs, or NNCF failed.
    """
    from ..runtime import _openvino
    from .quantize import _calibration_feeds

    ov, nncf = _openvino(), _nncf()
    texts = calibration_texts()
    feeds = _calibration_feeds(tokenizer_folder, spec, texts)
    if feeds is None:
        raise ExportError(f"{tokenizer_folder} has no tokenizer.json to calibrate static int8 with")
    model = ov.Core().read_model(str(graph))
    names = {i.get_any_name() for i in model.inputs}
    samples = [{k: v for k, v in feed.items() if k in names} for feed in feeds]
    try:
        with _quiet(nncf):
            quantized = nncf.quantize(
                model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples)
            )
    except Exception as e:  # NNCF raises many types on graphs it cannot place quantizers in
        raise ExportError(f"static int8 quantization of {graph} failed ({type(e).__name__}: {e})") from e
    dst = Path(dst)
    tmp = Path(tempfile.mkdtemp(prefix=".int8-", dir=dst.parent))
    try:
        ov.save_model(quantized, str(tmp / dst.name))
        os.replace(tmp / dst.with_suffix(".bin").name, dst.with_suffix(".bin"))
        os.replace(tmp / dst.name, dst)  # the .xml last: it is what marks the IR complete
    finally:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return {
        "method": "nncf static",
        "model_type": "transformer",
        "nncf": getattr(nncf, "__version__", "unknown"),
        "calibration_texts": len(samples),
    }


def check_static_int8_parity(fp32_graph: str | Path, int8_ir: str | Path, spec, tokenizer_folder) -> dict | None:
    """Mean-pooled cosine of the static int8 IR (OpenVINO) to the fp32 graph (onnxruntime) on the int8
    gate's calibration sentences: ``{"mean", "min"}``, or None without a tokenizer.json.

    Raises:
        ExportError: the mean is below ``models.quantize.MIN_CALIBRATION_COSINE`` (names the model and the
            alternatives).
    """
    import numpy as np

    from ..runtime import OpenVINOSession
    from .quantize import _CALIBRATION, _calibration_feeds, _ort_runner, _pooled, int8_gate

    feeds = _calibration_feeds(tokenizer_folder, spec, _CALIBRATION)
    if feeds is None:
        return None
    int8 = OpenVINOSession(int8_ir, threads=1, precision="int8")
    cos = np.sum(_pooled(_ort_runner(fp32_graph), feeds) * _pooled(int8.run, feeds), axis=1)
    return int8_gate(
        cos,
        f"static int8 quantization of {getattr(spec, 'name', str(fp32_graph))}",
        "Use runtime='onnxruntime' (its dynamic int8) or model_precision='fp32'.",
    )
