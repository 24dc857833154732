"""Structured pruning: remove whole filters and units, rebuild a smaller dense model (no TFX here).

Unstructured sparsity leaves every multiply in place; removing whole output channels of
convolutions and dense layers (and the matching input channels of the layers that read them)
gives a physically smaller model that is faster on every runtime.

How it works, one module per job:

1. :mod:`.graph` — :func:`analyze` walks the layer graph of a Sequential or functional tf_keras
   model and puts every tensor's channels (its last axis) into *channel groups*: a Conv/Dense
   layer starts a group; BatchNormalization, DepthwiseConv2D, pooling, activations and dropout
   carry it on; Add (and the other element-wise merges) joins the groups of its inputs, so the
   tensors of a residual block keep one common set of channels; Concatenate lays its inputs'
   groups side by side; Flatten repeats them once per spatial position (channels-last order). A
   group feeding a layer the analysis does not know, a model output, or a layer named in
   ``skip_layers`` is *blocked*: it keeps all its channels, and the report says why.
2. :mod:`.scores` — :func:`channel_scores` ranks each group's channels: the l1/l2 norm of the
   producing filters, or, on a few train batches, the mean absolute activation or the
   first-order Taylor score ``|activation x gradient|`` of the tensors that the next weighted
   layers read.
3. :mod:`.selection` — :func:`select_channels` keeps the best channels of each group (per layer,
   or globally on scores normalised per group).
4. :mod:`.rebuilding` — :func:`rebuild` clones the model with fewer filters/units (editing the
   layer configs) and copies the surviving weights into it. The input model is never changed.
5. :mod:`.prune` — :func:`structured_prune` runs the whole thing, optionally in steps with
   fine-tuning between them and an accuracy floor, and returns the new model and a JSON-ready
   report; :func:`run` (paths in, a Model artifact out, through the shared
   :func:`components.common.optimization.run_technique`) is what the Pruner's executor calls in
   mode structured.
6. :mod:`.record` — the record file names, the artifact's custom property names, the report and
   :func:`key_numbers`.
"""

from __future__ import annotations

from components.pruner.structured.graph import (
    BARRIER,
    BATCH_NORM,
    CONCAT,
    DEPTHWISE,
    FLATTEN,
    INPUT,
    MERGE,
    PASS,
    PRODUCER,
    RESHAPE,
    UNKNOWN,
    ChannelGroup,
    ChannelPlan,
    LayerPlan,
    analyze,
)
from components.pruner.structured.prune import check_model, run, structured_prune
from components.pruner.structured.rebuilding import prune_channels, rebuild
from components.pruner.structured.record import (
    ACCURACY_AFTER,
    ACCURACY_BEFORE,
    ACCURACY_BEFORE_FINE_TUNING,
    ACHIEVED_FRACTION,
    CRITERION,
    FIELD,
    FINE_TUNING_EPOCHS,
    FINE_TUNING_WALL_TIME_S,
    FLOPS_AFTER,
    FLOPS_BEFORE,
    FLOPS_RATIO,
    HISTORY_FILE,
    OPTIMIZATION,
    OPTIMIZATION_VALUE,
    PARAMETERS_AFTER,
    PARAMETERS_BEFORE,
    PER_LAYER_CHANNELS,
    PRUNING_STEPS,
    RECORD_FILE,
    SKIPPED_LAYERS,
    TARGET_FRACTION,
    key_numbers,
)
from components.pruner.structured.scores import activation_scores, channel_scores, weight_scores
from components.pruner.structured.selection import select_channels

__all__ = [
    "ACCURACY_AFTER",
    "ACCURACY_BEFORE",
    "ACCURACY_BEFORE_FINE_TUNING",
    "ACHIEVED_FRACTION",
    "BARRIER",
    "BATCH_NORM",
    "CONCAT",
    "CRITERION",
    "DEPTHWISE",
    "FIELD",
    "FINE_TUNING_EPOCHS",
    "FINE_TUNING_WALL_TIME_S",
    "FLATTEN",
    "FLOPS_AFTER",
    "FLOPS_BEFORE",
    "FLOPS_RATIO",
    "HISTORY_FILE",
    "INPUT",
    "MERGE",
    "OPTIMIZATION",
    "OPTIMIZATION_VALUE",
    "PARAMETERS_AFTER",
    "PARAMETERS_BEFORE",
    "PASS",
    "PER_LAYER_CHANNELS",
    "PRODUCER",
    "PRUNING_STEPS",
    "RECORD_FILE",
    "RESHAPE",
    "SKIPPED_LAYERS",
    "TARGET_FRACTION",
    "UNKNOWN",
    "ChannelGroup",
    "ChannelPlan",
    "LayerPlan",
    "activation_scores",
    "analyze",
    "channel_scores",
    "check_model",
    "key_numbers",
    "prune_channels",
    "rebuild",
    "run",
    "select_channels",
    "structured_prune",
    "weight_scores",
]
