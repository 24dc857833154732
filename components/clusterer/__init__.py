"""Clusterer: fine-tunes a model so each clustered weight tensor holds at most N distinct values."""
