"""Evaluation: retrieval and STS metrics, BEIR/STS evaluation, the model lab and ``select``.

Nothing here times the engine beyond what a decision needs; throughput studies live in
``engine.benchmark`` and bench/.
"""
