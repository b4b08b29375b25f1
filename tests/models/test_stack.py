"""models/stack.py: a folder's module stack, read as sentence-transformers reads it, or refused by name.

Model folders are untrusted input: every modules.json path stays inside the folder, every config
value is checked for type and range, weights are read without running pickled code. Each broken
folder is an ``UnsupportedModelError`` naming the file (and the key), raised before anything is
exported; unsupported modules and options are refused by name; a folder that loads matches
sentence-transformers (the oracle).
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
from tests.models.folders import FOLDER_TEXTS, GELU, TEXTS, edit_json, family_folder, refused, rel_diff, st_model


@pytest.fixture
def folder(base_folder, tmp_path) -> Path:
    return shutil.copytree(base_folder, tmp_path / "model")


def _set_module_path(folder: Path, idx: int, path: str) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    modules[idx]["path"] = path
    (folder / "modules.json").write_text(json.dumps(modules))


# -- modules.json paths ----------------------------------------------------------------------------


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
    err = refused(
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
    np.testing.assert_allclose(emb.encode(FOLDER_TEXTS), ref.encode(FOLDER_TEXTS), rtol=1e-5, atol=1e-6)
    from safetensors.numpy import load_file, save_file

    w = load_file(str(other / "2_Dense" / "model.safetensors"))
    save_file({k: v * 2 for k, v in w.items()}, str(other / "2_Dense" / "model.safetensors"))
    again = Embedder(str(other), cache_dir=cache)
    assert again.fingerprint != emb.fingerprint
    st = st_model(other).encode(FOLDER_TEXTS)
    assert np.abs(again.encode(FOLDER_TEXTS) - st).max() <= 1e-4


def test_modules_run_in_the_files_order_as_in_sentence_transformers(folder, tmp_path):
    """sentence-transformers runs modules.json's entries in the file's order, whatever their idx;
    before, the engine sorted them by idx (Normalize before Dense here: other vectors)."""
    modules = json.loads((folder / "modules.json").read_text())
    modules[2]["idx"], modules[3]["idx"] = 3, 2
    (folder / "modules.json").write_text(json.dumps(modules))
    emb = Embedder(str(folder), cache_dir=tmp_path / "cache")
    assert [type(m).__name__ for m in emb.stack.head] == ["Dense", "Normalize"]
    assert np.abs(emb.encode(FOLDER_TEXTS) - st_model(folder).encode(FOLDER_TEXTS)).max() <= 1e-4


# -- config values ---------------------------------------------------------------------------------


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
    (
        "config-hidden-str",
        lambda f: edit_json(f / "config.json", hidden_size="32"),
        r"config\.json: hidden_size is '32'",
    ),
    ("modules-ints", _write("modules.json", "[1, 2]"), r"modules\.json must hold a list of module objects"),
    (
        "modules-path-int",
        _write("modules.json", json.dumps([{"idx": 0, "path": 3, "type": "x"}])),
        r"modules\.json: modules\.json entry 0 path is 3",
    ),
    (
        "max-seq-negative",
        lambda f: edit_json(f / "sentence_bert_config.json", max_seq_length=-5),
        r"sentence_bert_config\.json: max_seq_length is -5, which is not an integer >= 1",
    ),
    (
        "max-seq-str",
        lambda f: edit_json(f / "sentence_bert_config.json", max_seq_length="abc"),
        r"sentence_bert_config\.json: max_seq_length is 'abc'",
    ),
    (
        "max-seq-float",
        lambda f: edit_json(f / "sentence_bert_config.json", max_seq_length=1e9),
        r"sentence_bert_config\.json: max_seq_length is 1000000000\.0",
    ),
    (
        "max-seq-past-positions",
        lambda f: edit_json(f / "sentence_bert_config.json", max_seq_length=10**9),
        r"sentence_bert_config\.json sets max_seq_length 1000000000, more tokens than the model's position",
    ),
    (
        "lower-case-str",
        lambda f: edit_json(f / "sentence_bert_config.json", do_lower_case="yes"),
        r"sentence_bert_config\.json: do_lower_case is 'yes'",
    ),
    (
        "pooling-mode-int",
        lambda f: edit_json(f / "1_Pooling" / "config.json", pooling_mode=5),
        r"1_Pooling/config\.json: pooling_mode is 5",
    ),
    (
        "include-prompt-str",
        lambda f: edit_json(f / "1_Pooling" / "config.json", include_prompt="no"),
        r"1_Pooling/config\.json: include_prompt is 'no'",
    ),
    ("pooling-list", _write("1_Pooling/config.json", "[]"), r"1_Pooling/config\.json holds a JSON list"),
    (
        "prompts-list",
        lambda f: edit_json(f / "config_sentence_transformers.json", prompts=["query: "]),
        r"config_sentence_transformers\.json: prompts is \['query: '\], which is not an object",
    ),
    (
        "prompt-int",
        lambda f: edit_json(f / "config_sentence_transformers.json", prompts={"query": 3}),
        r"config_sentence_transformers\.json: prompts\['query'\] is 3",
    ),
    (
        "truncate-dim-negative",
        lambda f: edit_json(f / "config_sentence_transformers.json", truncate_dim=-3),
        r"config_sentence_transformers\.json: truncate_dim is -3",
    ),
    (
        "st-config-list",
        _write("config_sentence_transformers.json", "[]"),
        r"config_sentence_transformers\.json holds a JSON list",
    ),
    (
        "dense-features-str",
        lambda f: edit_json(f / "2_Dense" / "config.json", out_features="16"),
        r"2_Dense/config\.json: out_features is '16'",
    ),
    (
        "dense-activation-list",
        lambda f: edit_json(f / "2_Dense" / "config.json", activation_function=["x"]),
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
    err = refused(folder, tmp_path / "cache", match)
    assert str(folder) in str(err)


# -- modules and options the engine does not reproduce ---------------------------------------------


def test_dense_without_activation_key_is_tanh(transformers_dir, st_cache, tmp_path):
    folder = family_folder(transformers_dir, tmp_path, "bert", dense=[(16, GELU, True)], normalize=False)
    cfg_path = folder / "2_Dense" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["activation_function"]  # sentence-transformers' default: Tanh
    cfg_path.write_text(json.dumps(cfg))
    emb = Embedder(str(folder), cache_dir=st_cache)
    assert emb.stack.head[0].activation == "tanh"
    assert rel_diff(emb.encode(TEXTS, normalize=False), st_model(folder).encode(TEXTS)) <= 1e-4


@pytest.mark.parametrize(
    "edit,match",
    [
        (
            lambda f: edit_json(
                f / "2_Dense" / "config.json", activation_function="torch.nn.modules.activation.Softsign"
            ),
            r"Dense \(2_Dense/config.json\).*activation function 'torch.nn.modules.activation.Softsign'",
        ),
        (
            lambda f: edit_json(f / "2_Dense" / "config.json", activation_function="my_pkg.Swish"),
            r"activation function 'my_pkg.Swish'",
        ),
        (
            lambda f: edit_json(f / "2_Dense" / "config.json", module_input_name="token_embeddings"),
            r"Dense.*module_input_name='token_embeddings'",
        ),
        (
            lambda f: edit_json(f / "1_Pooling" / "config.json", pooling_mode="median"),
            r"Pooling.*pooling mode 'median'",
        ),
        (lambda f: edit_json(f / "1_Pooling" / "config.json", frobnicate=True), r"Pooling.*frobnicate"),
        (lambda f: edit_json(f / "sentence_bert_config.json", transformer_task="text-generation"), r"transformer_task"),
        (lambda f: edit_json(f / "sentence_bert_config.json", model_args={"torch_dtype": "bfloat16"}), r"model_args"),
        (
            lambda f: edit_json(f / "config_sentence_transformers.json", similarity_fn_name="jaccard"),
            r"similarity_fn_name",
        ),
        (lambda f: edit_json(f / "config_sentence_transformers.json", model_type="SparseEncoder"), r"SparseEncoder"),
    ],
    ids=[
        "activation",
        "custom-activation",
        "dense-on-tokens",
        "pooling-mode",
        "pooling-option",
        "task",
        "dtype",
        "similarity",
        "sparse",
    ],
)
def test_unsupported_options_are_refused_by_name(bert_folder, tmp_path, edit, match):
    edit(bert_folder)
    with pytest.raises(UnsupportedModelError, match=match) as e:
        Embedder(str(bert_folder), cache_dir=tmp_path / "cache")
    assert str(bert_folder) in str(e.value)
    assert not (tmp_path / "cache" / "onnx").exists() or not list((tmp_path / "cache" / "onnx").iterdir())


@pytest.mark.parametrize(
    "module_type,match",
    [
        ("sentence_transformers.models.WeightedLayerPooling", "module type WeightedLayerPooling"),
        ("sentence_transformers.models.CNN", "module type CNN"),
        ("my_package.modules.CustomPooling", "custom module class"),
    ],
)
def test_unsupported_modules_are_refused_by_name(bert_folder, tmp_path, module_type, match):
    modules = json.loads((bert_folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "x", "path": "x", "type": module_type})
    for i, m in enumerate(modules):
        m["idx"] = i
    (bert_folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsupportedModelError, match=match):
        Embedder(str(bert_folder), cache_dir=tmp_path / "cache")


# -- pickled weights -------------------------------------------------------------------------------


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
    refused(
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
    assert np.abs(emb.encode(FOLDER_TEXTS) - st_model(folder).encode(FOLDER_TEXTS)).max() <= 1e-4


def test_booby_trapped_root_pickle_is_refused_by_name(folder, tmp_path):
    """Before: "No module named 'tensorflow'" from transformers, the refused global buried. Now: an
    UnsupportedModelError naming pytorch_model.bin and the global, before optimum runs."""
    import torch
    from safetensors.torch import load_file

    torch.save(_trapped_state(load_file(str(folder / "model.safetensors"))), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    err = refused(folder, tmp_path / "cache", r"pytorch_model\.bin cannot be loaded as plain weights.*getcwd")
    assert "tensorflow" not in str(err)
