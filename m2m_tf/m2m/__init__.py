"""M2m translation and acceptance as pure TF functions (no Keras training state), and their
parameters (`params.M2mConfig`, which needs no TensorFlow).

The names below are imported on first use (PEP 562), so that `m2m_tf.m2m.params` loads without
TensorFlow.
"""

from data_prep.lazy import exports

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

__getattr__, __dir__ = exports("m2m_tf.m2m", _EXPORTS, globals())
