"""Profiler: size, parameters, compute, latency, peak memory and accuracy of a model."""
