"""tf.data pipelines: class-balanced and shuffled training streams (in memory, or streamed from
disk by m2m_tf.data.streaming), evaluation batches."""

from m2m_tf.data.pipeline import (BalancedSampler, augment_images, batch_inputs, eval_dataset,
                                  index_batches, steps_per_epoch, train_dataset, uniform_indices)

__all__ = ["BalancedSampler", "augment_images", "batch_inputs", "eval_dataset", "index_batches",
           "steps_per_epoch", "train_dataset", "uniform_indices"]
