"""tf.data pipelines: class-balanced and shuffled training streams, evaluation batches."""

from m2m_tf.data.pipeline import (BalancedSampler, augment_images, eval_dataset, steps_per_epoch,
                                  train_dataset, uniform_indices)

__all__ = ["BalancedSampler", "augment_images", "eval_dataset", "steps_per_epoch", "train_dataset",
           "uniform_indices"]
