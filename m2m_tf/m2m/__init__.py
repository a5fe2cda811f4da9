"""M2m translation and acceptance as pure TF functions (no Keras training state), and their
parameters (`params.M2mConfig`, which needs no TensorFlow).

The names below are imported on first use (PEP 562), so that `m2m_tf.m2m.params` loads without
TensorFlow.
"""

import importlib

_EXPORTS = {
    "M2mConfig": "m2m_tf.m2m.params",
    "bucket_sizes": "m2m_tf.m2m.generation",
    "generate": "m2m_tf.m2m.generation",
    "generation_probability": "m2m_tf.m2m.generation",
    "seed_weights": "m2m_tf.m2m.generation",
    "official_start": "m2m_tf.m2m.translation",
    "random_start": "m2m_tf.m2m.translation",
    "translate": "m2m_tf.m2m.translation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  """Imports an exported name on first use."""
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'm2m_tf.m2m' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_EXPORTS))
