"""Keras layer class names grouped by what they do to a tensor's channels (last dimension).

The Distiller (making a narrower or shallower student) and structured pruning (removing filters
and units) walk the same layer graphs and must agree on which layers pass a channel count through.
"""

from __future__ import annotations

# No weights, applied element by element: the output has the input's shape.
ELEMENTWISE_STATELESS = frozenset(
    {
        "Activation",
        "ReLU",
        "LeakyReLU",
        "ELU",
        "ThresholdedReLU",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
    }
)

# No weights, change the spatial dimensions only: the channel count passes through.
SPATIAL_CHANNEL_PRESERVING = frozenset(
    f"{kind}{rank}D"
    for kind in (
        "MaxPooling",
        "AveragePooling",
        "GlobalMaxPooling",
        "GlobalAveragePooling",
        "ZeroPadding",
        "Cropping",
        "UpSampling",
    )
    for rank in (1, 2, 3)
)

# Merge layers whose inputs must have the same channel count (so they are pruned together).
ELEMENTWISE_MERGE = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"})
