"""The CPU's int8 ISA class, the recipe table, and the int8 export cache keyed by the recipe."""

from __future__ import annotations

import shutil

import pytest

from engine.errors import ExportError
from engine.models import quantize
from engine.models.export import _version_tag, load_or_export
from engine.models.quantize import INT8_RECIPES, ISA_CLASSES, ISA_OTHER, ISA_RECIPES, int8_recipe, isa_class

# /proc/cpuinfo "flags" / "Features" lines, cut to the relevant part, of real CPU kinds
SAPPHIRE_RAPIDS = (
    "fpu sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni "
    "amx_bf16 amx_tile amx_int8"
)
ZEN4 = "fpu sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16"
ALDER_LAKE = "fpu sse4_2 avx avx2 fma avx_vnni"
SKYLAKE_X = "fpu sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl"
ZEN3 = "fpu sse4_2 avx avx2 fma"
GRAVITON3 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp sve i8mm"
CORTEX_A72 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
SSE_ONLY = "fpu sse sse2 sse4_1 sse4_2"


@pytest.mark.parametrize(
    "flags, want",
    [
        pytest.param(SAPPHIRE_RAPIDS, "amx_int8", id="amx"),
        pytest.param(ZEN4, "avx512_vnni", id="avx512-vnni"),
        pytest.param(ALDER_LAKE, "avx_vnni", id="avx-vnni"),
        pytest.param(SKYLAKE_X, "avx512", id="avx512-no-vnni"),
        pytest.param(ZEN3, "avx2", id="avx2"),
        pytest.param(GRAVITON3, "arm_dot", id="arm-asimddp"),
        pytest.param(CORTEX_A72, "other", id="arm-no-dot"),
        pytest.param(SSE_ONLY, "other", id="sse-only"),
        pytest.param("", "other", id="no-flags"),
    ],
)
def test_isa_class_from_cpuinfo_flags(flags, want):
    assert isa_class(flags.split()) == want


@pytest.mark.parametrize(
    "flags, recipe",
    [
        (SAPPHIRE_RAPIDS, "vnni"),
        (ZEN4, "vnni"),
        (ALDER_LAKE, "vnni"),
        (SKYLAKE_X, "rr"),
        (ZEN3, "rr"),
        (GRAVITON3, "rr"),
        (SSE_ONLY, "rr"),
    ],
)
def test_recipe_per_class(flags, recipe):
    isa = isa_class(flags.split())
    assert int8_recipe(isa) == recipe
    assert INT8_RECIPES[recipe]["reduce_range"] is (recipe == "rr")  # saturating vpmaddubsw -> 7-bit weights


def test_recipe_table_covers_every_class_with_a_reason():
    assert set(ISA_RECIPES) == {name for name, _ in ISA_CLASSES} | {ISA_OTHER}
    for isa, (recipe, why) in ISA_RECIPES.items():
        assert recipe in INT8_RECIPES and len(why) > 20, isa


def test_cpu_isa_reads_this_machine(monkeypatch):
    assert quantize.cpu_isa() == isa_class(quantize.cpu_flags())
    assert quantize.cpu_isa() in ISA_RECIPES


def test_int8_folder_name_carries_the_recipe(monkeypatch):
    monkeypatch.setattr(quantize, "cpu_isa", lambda: "avx2")
    assert _version_tag("int8") == "v2.2-rr" and _version_tag("fp32") == "v2"
    monkeypatch.setattr(quantize, "cpu_isa", lambda: "amx_int8")
    assert _version_tag("int8") == "v2.2-vnni" and _version_tag("fp32") == "v2"
    monkeypatch.setattr(quantize, "cpu_isa", lambda: "avx512_vnni")
    assert _version_tag("int8") == "v2.2-vnni"


def test_int8_exports_per_recipe(tiny_model_dir, tmp_path, monkeypatch):
    """Each recipe has its own folder and fingerprint; two ISA classes of one recipe share both;
    a folder whose meta names another recipe (copied under this CPU's name) is refused."""
    cache, other_cache = tmp_path / "cache", tmp_path / "other"
    monkeypatch.setattr(quantize, "cpu_isa", lambda: "avx2")
    rr = load_or_export(str(tiny_model_dir), "int8", cache_dir=cache)
    assert rr.folder.name.endswith("-int8-v2.2-rr") and rr.meta["int8_isa"] == "avx2"
    q = rr.meta["export"]["quantization"]
    assert q["recipe"] == "rr" and q["reduce_range"] is True and "cpu_isa" not in q

    monkeypatch.setattr(quantize, "cpu_isa", lambda: "amx_int8")
    amx = load_or_export(str(tiny_model_dir), "int8", cache_dir=cache)
    assert amx.folder.name.endswith("-int8-v2.2-vnni") and amx.meta["int8_isa"] == "amx_int8"
    assert amx.meta["export"]["quantization"]["reduce_range"] is False
    assert amx.fingerprint != rr.fingerprint  # other weights scale: other vectors

    monkeypatch.setattr(quantize, "cpu_isa", lambda: "avx512_vnni")
    again = load_or_export(str(tiny_model_dir), "int8", cache_dir=cache)  # the AMX machine's cache, copied
    assert again.folder == amx.folder and again.fingerprint == amx.fingerprint
    fresh = load_or_export(str(tiny_model_dir), "int8", cache_dir=other_cache)  # exported on this class
    assert fresh.fingerprint == amx.fingerprint and fresh.meta["int8_isa"] == "avx512_vnni"

    # an rr export placed under the vnni folder name (a hand copy) is refused, not run
    shutil.rmtree(fresh.folder)
    shutil.copytree(rr.folder, fresh.folder)
    with pytest.raises(ExportError, match=r"recipe 'rr' on a CPU of ISA class avx2.*needs recipe 'vnni'.*Delete"):
        load_or_export(str(tiny_model_dir), "int8", cache_dir=other_cache)
