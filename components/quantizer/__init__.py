"""Quantizer: post-training quantization, QAT and the collaborative schemes, to a verified TFLite."""
