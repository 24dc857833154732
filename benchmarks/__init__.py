"""Benchmarks of tfx-optimize (``make bench``): what the pipeline achieves and what it costs.

``python -m benchmarks.run --reference DIR`` runs the suite and prints its JSON (also written to
``benchmarks/results.json``, with a readable ``benchmarks/RESULTS.md``). Not part of ``make test``.
"""
