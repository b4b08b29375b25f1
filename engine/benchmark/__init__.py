"""The benchmark harness behind ``embed bench`` and bench/: one measurement helper (``measure``),
contenders, the grid, environment records and plots."""
