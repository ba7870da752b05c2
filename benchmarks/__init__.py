"""Benchmarks: ``python -m benchmarks NAME [--json]``.

Each benchmark is a module in this package with a ``run(quick: bool) -> Result``
function. It starts its own broker on a free port, measures, and returns its figures,
including a ratio against a baseline measured in the same run.
"""
