"""LatencyBenchmark: batch-1 latency of a baseline and candidates as its own pipeline step.

Run it where latency matters (a KFP node pool of the target hardware: set the node selector and
resources on this step in pipeline code) and feed its ``latency_report`` to the Evaluator.
"""
