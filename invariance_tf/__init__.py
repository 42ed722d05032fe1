"""invariance_tf: invariance-inducing regularisation against spatial transformations (TF / Keras 3).

Importing the package registers its Keras-serializable classes, so `.keras`
files written by it load with plain `keras.models.load_model`.
"""

from invariance_tf import adversaries, layers, networks, schedules, semimetrics, transforms
from invariance_tf.model import InvarianceModel

__all__ = ["InvarianceModel", "adversaries", "layers", "networks", "schedules", "semimetrics", "transforms"]
__version__ = "0.1.0"
