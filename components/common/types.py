"""Artifact types of tfx-optimize. Standard TFX types are used wherever one exists."""

from tfx.types.artifact import Artifact


class ModelProfile(Artifact):
    """Size, parameters, compute, latency, memory and accuracy of one model (``profile.json``)."""

    TYPE_NAME = "tfxopt.ModelProfile"


class EvaluationReport(Artifact):
    """The Evaluator's full record (``evaluation.json``): every metric and rule of every candidate."""

    TYPE_NAME = "tfxopt.EvaluationReport"


class LatencyReport(Artifact):
    """Batch-1 latency of a baseline and candidates measured by one step (``latency.json``)."""

    TYPE_NAME = "tfxopt.LatencyReport"
