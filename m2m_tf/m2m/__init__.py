"""M2m translation and acceptance as pure TF functions (no Keras training state)."""

from m2m_tf.m2m.generation import (M2mConfig, bucket_sizes, generate, generation_probability,
                                   seed_weights)
from m2m_tf.m2m.translate import official_start, random_start, translate

__all__ = ["M2mConfig", "bucket_sizes", "generate", "generation_probability", "official_start",
           "random_start", "seed_weights", "translate"]
