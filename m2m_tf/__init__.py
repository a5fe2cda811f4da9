"""m2m_tf: M2m (Major-to-minor Translation, CVPR 2020) and imbalanced-learning baselines in
TensorFlow/Keras."""

__version__ = "0.1.0"
