"""The M2m trainer (a keras.Model), its callbacks, schedules, method registry and run driver."""

from m2m_tf.training.callbacks import (BalancedEvaluation, EpochLearningRate, M2mStatistics,
                                       PhaseSchedule, RaiseOnNaN)
from m2m_tf.training.methods import METHODS, Method, get_method
from m2m_tf.training.schedules import warmup_step_lr
from m2m_tf.training.trainer import M2mTrainer

__all__ = ["BalancedEvaluation", "EpochLearningRate", "M2mStatistics", "M2mTrainer", "METHODS",
           "Method", "PhaseSchedule", "RaiseOnNaN", "get_method", "warmup_step_lr"]
