"""m2m_tf: M2m (Major-to-minor Translation, CVPR 2020) and imbalanced-learning baselines, TF/Keras.

Install for CPU:  pip install -e ".[cpu]"      (tensorflow-cpu wheel)
Install for GPU:  pip install -e ".[gpu]"      (tensorflow[and-cuda])
Tests:            pip install -e ".[cpu,test]"
Versions are pinned; see BUILD.md.
"""

import setuptools

CORE = [
    "keras==3.15.1",
    "tensorflow-datasets==4.9.10",
    # tensorflow-datasets 4.9.10 imports it without declaring it (docs/platform.md#installing).
    "importlib-resources==7.1.0",
    "absl-py==2.5.1",
    "pandas==3.1.1",
    "numpy==2.4.6",
    "scikit-learn==1.9.1",
    # Confidence intervals of the result tables (launch/tables.py); scikit-learn needs it too.
    "scipy==1.17.1",
    "tensorboard==2.21.0",
    # Every run's report (m2m_tf/report, m2m_tf/plots.py) and the study figures of launch/.
    "matplotlib==3.11.2",
]

setuptools.setup(
    name="m2m_tf",
    version="0.1.0",
    description="M2m: Major-to-minor Translation for imbalanced classification (TensorFlow/Keras).",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["m2m_tf", "m2m_tf.*", "data_prep", "data_prep.*"]),
    install_requires=CORE,
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.0"],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
        # torch is a test-only oracle for the official-checkpoint import (CPU wheel).
        "test": ["pytest==9.0.3", "ruff==0.17.5", "imbalanced-learn==0.14.2", "torch==2.13.0"],
    },
    entry_points={"console_scripts": ["m2m-train=m2m_tf.main:run_main"]},
)
