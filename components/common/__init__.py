"""What several components share: model and Examples I/O, artifact types, config, measurements."""
