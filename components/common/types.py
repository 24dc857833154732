"""Artifact types of tfx-optimize. Standard TFX types are used wherever one exists."""

from tfx.types.artifact import Artifact


class ModelProfile(Artifact):
    """Size, parameters, compute, latency, memory and accuracy of one model (``profile.json``)."""

    TYPE_NAME = "tfxopt.ModelProfile"
