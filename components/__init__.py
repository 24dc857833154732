"""tfx-optimize: reusable TFX components that make a trained TensorFlow model smaller and faster.

Importing this package pins Keras 2 (``tf_keras``) as TensorFlow's Keras before TensorFlow is
imported, which tensorflow-model-optimization requires. Subprocesses inherit the setting.
"""

from components.common import legacy_keras

legacy_keras.pin()
