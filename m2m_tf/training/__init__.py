"""The M2m trainer (a keras.Model), its callbacks, schedules, method registry and run driver.

The names below are loaded on first use (PEP 562), so that importing a light
submodule such as `m2m_tf.training.methods` (which `m2m_tf.config` needs) does
not load Keras, and the trainer can import the configuration without a cycle.
"""

import importlib

_EXPORTS = {
    "BalancedEvaluation": "callbacks", "EpochLearningRate": "callbacks",
    "M2mStatistics": "callbacks", "PhaseSchedule": "callbacks", "RaiseOnNaN": "callbacks",
    "METHODS": "methods", "Method": "methods", "get_method": "methods",
    "warmup_step_lr": "schedules", "M2mTrainer": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
