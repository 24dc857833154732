"""ModelImporter: brings the checkpoint in as one flat tf_keras model (Keras 3 converted, nested models flattened), verified."""
