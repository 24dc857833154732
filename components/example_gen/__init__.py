"""ExampleGen for inputs that already are TFX Examples: the files copied, not re-encoded by Beam."""
