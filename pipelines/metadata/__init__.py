"""ML Metadata: which store a run records into, and reading a run back from it."""
