"""Model folders are untrusted input: every modules.json path stays inside the folder, every config
value is checked for type and range, weights are read without running pickled code.

Each broken folder is an ``UnsupportedModelError`` naming the file (and the key), raised before
anything is exported; a folder that loads matches sentence-transformers (the oracle).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine import Embedder
from engine.errors import UnsupportedModelError
from tests.st_tiny import build_transformer, write_stack

GELU = "torch.nn.modules.activation.GELU"
TEXTS = ["a", "Hello, world!", "the quick brown fox jumps over the lazy dog " * 6]


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory) -> Path:
    """A tiny BERT with Pooling, one Dense and Normalize, built once."""
    folder = build_transformer(tmp_path_factory.mktemp("mf") / "bert", "bert")
    return write_stack(folder, dense=[(16, GELU, True)])


@pytest.fixture
def folder(base_folder, tmp_path) -> Path:
    return shutil.copytree(base_folder, tmp_path / "model")


def _edit(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _set_module_path(folder: Path, idx: int, path: str) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    modules[idx]["path"] = path
    (folder / "modules.json").write_text(json.dumps(modules))


def _refused(folder: Path, cache: Path, match: str) -> UnsupportedModelError:
    with pytest.raises(UnsupportedModelError, match=match) as e:
        Embedder(str(folder), cache_dir=cache)
    assert not list(cache.rglob("model.onnx")), "refused before anything was exported"
    return e.value


def _st(folder: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


# -- modules.json paths ------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_module_path_outside_the_folder_is_refused_by_name(folder, tmp_path, how):
    """Before: an absolute Dense path outside the folder was loaded but left out of the fingerprint
    (content_files looked for it inside the folder), so new weights there kept the old fingerprint
    and the cache served stale vectors. Now any path out of the folder is refused, naming it."""
    outside = tmp_path / "elsewhere" / "2_Dense"
    shutil.move(folder / "2_Dense", outside)
    if how == "symlink":
        os.symlink(outside, folder / "2_Dense")
        path = "2_Dense"
    else:
        path = str(outside) if how == "absolute" else os.path.relpath(outside, folder)
        _set_module_path(folder, 2, path)
    err = _refused(
        folder,
        tmp_path / "cache",
        r"modules\.json: module 2 .*Dense.* has the path .* not inside "
        r"the model folder",
    )
    assert repr(path) in str(err)


def test_module_paths_are_resolved_once_for_loading_and_fingerprint(folder, tmp_path):
    """A path written another way (``./2_Dense/``) is the same module: same stack, same
    fingerprint; its weights are in the fingerprint (changing them changes it)."""
    cache = tmp_path / "cache"
    ref = Embedder(str(folder), cache_dir=cache)
    other = shutil.copytree(folder, tmp_path / "other")
    _set_module_path(other, 2, "./2_Dense/")
    emb = Embedder(str(other), cache_dir=cache)
    assert emb.stack.head[0].path == "2_Dense"
    modules_changed = ref.fingerprint != emb.fingerprint  # modules.json differs: content differs
    assert modules_changed
    np.testing.assert_allclose(emb.encode(TEXTS), ref.encode(TEXTS), rtol=1e-5, atol=1e-6)
    from safetensors.numpy import load_file, save_file

    w = load_file(str(other / "2_Dense" / "model.safetensors"))
    save_file({k: v * 2 for k, v in w.items()}, str(other / "2_Dense" / "model.safetensors"))
    again = Embedder(str(other), cache_dir=cache)
    assert again.fingerprint != emb.fingerprint
    st = _st(other).encode(TEXTS)
    assert np.abs(again.encode(TEXTS) - st).max() <= 1e-4


def test_modules_run_in_the_files_order_as_in_sentence_transformers(folder, tmp_path):
    """sentence-transformers runs modules.json's entries in the file's order, whatever their idx;
    before, the engine sorted them by idx (Normalize before Dense here: other vectors)."""
    modules = json.loads((folder / "modules.json").read_text())
    modules[2]["idx"], modules[3]["idx"] = 3, 2
    (folder / "modules.json").write_text(json.dumps(modules))
    emb = Embedder(str(folder), cache_dir=tmp_path / "cache")
    assert [type(m).__name__ for m in emb.stack.head] == ["Dense", "Normalize"]
    assert np.abs(emb.encode(TEXTS) - _st(folder).encode(TEXTS)).max() <= 1e-4


# -- config values ----------------------------------------------------------------------------
def _write(path: str, text: str):
    return lambda f: (f / path).write_text(text)


def _truncate(path: str):
    def cut(f: Path) -> None:
        data = (f / path).read_bytes()
        (f / path).write_bytes(data[: len(data) // 2])

    return cut


BROKEN = [
    ("config-not-json", _write("config.json", "{not json"), r"config\.json is not valid JSON"),
    ("config-list", _write("config.json", "[1, 2]"), r"config\.json holds a JSON list, not an object"),
    ("config-hidden-str", lambda f: _edit(f / "config.json", hidden_size="32"), r"config\.json: hidden_size is '32'"),
    ("modules-ints", _write("modules.json", "[1, 2]"), r"modules\.json must hold a list of module objects"),
    (
        "modules-path-int",
        _write("modules.json", json.dumps([{"idx": 0, "path": 3, "type": "x"}])),
        r"modules\.json: modules\.json entry 0 path is 3",
    ),
    (
        "max-seq-negative",
        lambda f: _edit(f / "sentence_bert_config.json", max_seq_length=-5),
        r"sentence_bert_config\.json: max_seq_length is -5, which is not an integer >= 1",
    ),
    (
        "max-seq-str",
        lambda f: _edit(f / "sentence_bert_config.json", max_seq_length="abc"),
        r"sentence_bert_config\.json: max_seq_length is 'abc'",
    ),
    (
        "max-seq-float",
        lambda f: _edit(f / "sentence_bert_config.json", max_seq_length=1e9),
        r"sentence_bert_config\.json: max_seq_length is 1000000000\.0",
    ),
    (
        "max-seq-past-positions",
        lambda f: _edit(f / "sentence_bert_config.json", max_seq_length=10**9),
        r"sentence_bert_config\.json sets max_seq_length 1000000000, more tokens than the model's position",
    ),
    (
        "lower-case-str",
        lambda f: _edit(f / "sentence_bert_config.json", do_lower_case="yes"),
        r"sentence_bert_config\.json: do_lower_case is 'yes'",
    ),
    (
        "pooling-mode-int",
        lambda f: _edit(f / "1_Pooling" / "config.json", pooling_mode=5),
        r"1_Pooling/config\.json: pooling_mode is 5",
    ),
    (
        "include-prompt-str",
        lambda f: _edit(f / "1_Pooling" / "config.json", include_prompt="no"),
        r"1_Pooling/config\.json: include_prompt is 'no'",
    ),
    ("pooling-list", _write("1_Pooling/config.json", "[]"), r"1_Pooling/config\.json holds a JSON list"),
    (
        "prompts-list",
        lambda f: _edit(f / "config_sentence_transformers.json", prompts=["query: "]),
        r"config_sentence_transformers\.json: prompts is \['query: '\], which is not an object",
    ),
    (
        "prompt-int",
        lambda f: _edit(f / "config_sentence_transformers.json", prompts={"query": 3}),
        r"config_sentence_transformers\.json: prompts\['query'\] is 3",
    ),
    (
        "truncate-dim-negative",
        lambda f: _edit(f / "config_sentence_transformers.json", truncate_dim=-3),
        r"config_sentence_transformers\.json: truncate_dim is -3",
    ),
    (
        "st-config-list",
        _write("config_sentence_transformers.json", "[]"),
        r"config_sentence_transformers\.json holds a JSON list",
    ),
    (
        "dense-features-str",
        lambda f: _edit(f / "2_Dense" / "config.json", out_features="16"),
        r"2_Dense/config\.json: out_features is '16'",
    ),
    (
        "dense-activation-list",
        lambda f: _edit(f / "2_Dense" / "config.json", activation_function=["x"]),
        r"2_Dense/config\.json: activation_function is \['x'\]",
    ),
    (
        "dense-truncated-weights",
        _truncate("2_Dense/model.safetensors"),
        r"2_Dense/model\.safetensors: the Dense weights cannot be read",
    ),
    (
        "deep-nesting",
        _write("config_sentence_transformers.json", '{"prompts": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        r"config_sentence_transformers\.json is not valid JSON",
    ),
    ("tokenizer-config-list", _write("tokenizer_config.json", "[]"), r"tokenizer_config\.json holds a JSON list"),
    ("modules-null", _write("modules.json", "null"), r"modules\.json must hold a list of module objects"),
    (
        "st-config-null",
        _write("config_sentence_transformers.json", "null"),
        r"config_sentence_transformers\.json holds a JSON null, not an object",
    ),
    (
        "pooling-no-dimension",
        lambda f: (f / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    k: v
                    for k, v in json.loads((f / "1_Pooling" / "config.json").read_text()).items()
                    if k != "embedding_dimension"
                }
            )
        ),
        r"1_Pooling/config\.json: embedding_dimension is None",
    ),
]


@pytest.mark.parametrize("edit,match", [pytest.param(e, m, id=i) for i, e, m in BROKEN])
def test_broken_config_is_refused_naming_the_file_and_key(folder, tmp_path, edit, match):
    edit(folder)
    err = _refused(folder, tmp_path / "cache", match)
    assert str(folder) in str(err)


# -- pickled weights -------------------------------------------------------------------------
class _Trap:
    """A pickle global torch's weights_only unpickler refuses (os.getcwd: harmless if it ever ran)."""

    def __reduce__(self):
        return (os.getcwd, ())


def _trapped_state(state: dict) -> dict:
    return {**state, "trap": _Trap()}


def test_booby_trapped_dense_pickle_is_refused_by_name(folder, tmp_path):
    """Before: a raw UnpicklingError. Now: the file and torch's refusal (the global it refused)."""
    import torch
    from safetensors.torch import load_file

    sub = folder / "2_Dense"
    torch.save(_trapped_state(load_file(str(sub / "model.safetensors"))), sub / "pytorch_model.bin")
    (sub / "model.safetensors").unlink()
    _refused(
        folder,
        tmp_path / "cache",
        r"2_Dense/pytorch_model\.bin cannot be loaded as plain weights "
        r"\(torch\.load\(weights_only=True\).*getcwd",
    )


def test_plain_dense_pickle_loads_and_matches(folder, tmp_path):
    import torch
    from safetensors.torch import load_file

    sub = folder / "2_Dense"
    torch.save(load_file(str(sub / "model.safetensors")), sub / "pytorch_model.bin")
    (sub / "model.safetensors").unlink()
    emb = Embedder(str(folder), cache_dir=tmp_path / "cache")
    assert np.abs(emb.encode(TEXTS) - _st(folder).encode(TEXTS)).max() <= 1e-4


def test_booby_trapped_root_pickle_is_refused_by_name(folder, tmp_path):
    """Before: "No module named 'tensorflow'" from transformers, the refused global buried. Now: an
    UnsupportedModelError naming pytorch_model.bin and the global, before optimum runs."""
    import torch
    from safetensors.torch import load_file

    torch.save(_trapped_state(load_file(str(folder / "model.safetensors"))), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    err = _refused(folder, tmp_path / "cache", r"pytorch_model\.bin cannot be loaded as plain weights.*getcwd")
    assert "tensorflow" not in str(err)


# -- the export cache ------------------------------------------------------------------------
def test_stale_export_temp_folders_are_removed_by_the_next_export(base_folder, tmp_path):
    """Before: a kill -9 during an export left its ``*.tmp-*`` folder in the cache forever. Now the
    next export removes the folders whose exporter is gone (its pid on this host has exited, or,
    with no owner recorded, older than a day) and keeps a live exporter's."""
    import socket
    import subprocess
    import sys
    import time

    onnx = tmp_path / "cache" / "onnx"
    onnx.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    folders = {}
    for name, owner, age in (
        ("killed", {"host": host, "pid": int(dead.stdout)}, 0),
        ("live", {"host": host, "pid": os.getpid()}, 0),
        ("other-host-old", {"host": host + "-x", "pid": 1}, 2 * 86400),
        ("other-host-recent", {"host": host + "-x", "pid": 1}, 60),
        ("no-owner-old", None, 2 * 86400),
    ):
        f = onnx / f"some-model-fp32-v2.tmp-{name}"
        (f / "raw").mkdir(parents=True)
        (f / "raw" / "model.onnx").write_bytes(b"half written")
        if owner is not None:
            (f / ".owner.json").write_text(json.dumps(owner))
        os.utime(f, (time.time() - age, time.time() - age))
        folders[name] = f
    emb = Embedder(str(base_folder), cache_dir=tmp_path / "cache")
    left = sorted(p.name.rsplit("tmp-", 1)[1] for p in onnx.glob("*.tmp-*"))
    assert left == ["live", "other-host-recent"]
    assert not (emb._exported.folder / ".owner.json").exists()


# -- ONNX external data ----------------------------------------------------------------------
def _onnx_folder(base_folder: Path, tmp_path: Path, location: str = "model.onnx_data") -> Path:
    """The tiny model as a folder whose weights are an ONNX graph with its tensors in external data."""
    import onnx

    exported = Embedder(str(base_folder), cache_dir=tmp_path / "c0")._exported
    folder = shutil.copytree(base_folder, tmp_path / "onnx-model")
    (folder / "model.safetensors").unlink()
    m = onnx.load(str(exported.onnx_path))
    onnx.save(
        m,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return folder


def test_onnx_with_external_data_loads_and_is_fingerprinted(base_folder, tmp_path):
    """Before: onnx's ValidationError traceback (the data file was not copied with the graph). Now
    the graph's own model.onnx_data is used (vectors match sentence-transformers on the folder the
    graph came from) and is in the fingerprint: other data, another fingerprint."""
    folder = _onnx_folder(base_folder, tmp_path)
    emb = Embedder(str(folder), cache_dir=tmp_path / "cache")
    assert "model.onnx_data" in emb._exported.meta["weights_sha256"]
    assert np.abs(emb.encode(TEXTS) - _st(base_folder).encode(TEXTS)).max() <= 1e-4
    data = bytearray((folder / "model.onnx_data").read_bytes())
    data[-4:] = b"\x00\x00\x80\x3f"  # one weight changed, same size
    (folder / "model.onnx_data").write_bytes(bytes(data))
    assert Embedder(str(folder), cache_dir=tmp_path / "cache").fingerprint != emb.fingerprint


@pytest.mark.parametrize("where", ["outside", "absolute", "missing"])
def test_onnx_external_data_outside_the_folder_is_refused_by_name(base_folder, tmp_path, where):
    folder = _onnx_folder(base_folder, tmp_path, "weights.bin")
    data = folder / "weights.bin"
    if where != "missing":
        outside = tmp_path / "outside.bin"
        shutil.move(data, outside)
        import onnx

        m = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        loc = str(outside) if where == "absolute" else "../outside.bin"
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = loc
        onnx.save(m, str(folder / "model.onnx"))
    else:
        data.unlink()
        loc = "weights.bin"
    _refused(
        folder,
        tmp_path / "cache",
        rf"model\.onnx: tensor .* keeps its data in '{loc}', which is not a file "
        r"inside the model folder",
    )
