"""Kubeflow Pipelines: the compiled package, its settings, the KFP API client and the commands."""
