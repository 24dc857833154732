"""Running the pipeline on one machine: LocalDagRunner, its input checks and its terminal progress."""
