"""Pruner: fine-tunes a model into a sparse one (magnitude pruning, tensorflow-model-optimization)."""
