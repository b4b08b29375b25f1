"""Run another ISA class's int8 recipe on this CPU (bench scripts' ``--recipe``).

Inside ``with int8_recipe_as("rr"):`` ``engine.models.quantize.int8_recipe`` answers ``rr`` for
every ISA class, so an Embedder built there exports, caches (``...-int8-v2.2-rr``) and loads that
recipe here; it keeps running it after the block. Why this measures other CPUs' quality:
onnxruntime's u8 x s8 products are exact integers on every kernel that cannot saturate (AMX tiles
and ``vpdpbusd`` accumulate in int32, ARM ``udot`` too, and the 7-bit weights of ``rr`` keep
``vpmaddubsw``'s int16 pair sums below 32,767 on AVX2 / AVX-512 without VNNI), so a recipe gives the
same integer products, hence vectors equal up to the fp32 glue's rounding (~1e-7), on all of them.
What it cannot show: speed on another CPU, or the vectors of a recipe whose products saturate there
(``vnni`` on AVX2).
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def int8_recipe_as(recipe: str | None):
    """Within the block, this process exports and loads int8 recipe ``recipe`` (None: the CPU's own)."""
    from engine.models import quantize

    if recipe is not None and recipe not in quantize.INT8_RECIPES:
        raise SystemExit(f"unknown int8 recipe {recipe!r}; one of {', '.join(quantize.INT8_RECIPES)}")
    own = quantize.int8_recipe
    if recipe is not None:
        quantize.int8_recipe = lambda isa=None: recipe
    try:
        yield
    finally:
        quantize.int8_recipe = own
