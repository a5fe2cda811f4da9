"""The training runs that tests/test_sync_batchnorm.py compares (run as a subprocess).

    python tests/sync_bn_script.py local OUT.json     # one device, 2 mirrored CPUs (sync, no sync)
    python tests/sync_bn_script.py worker OUT.json S  # one worker of TF_CONFIG's cluster, S: sync
                                                      # "auto" or "off"

Every run trains the same ResNet-8 f (16x16 images, 3 classes, global batch 16) from the same
initial weights with `M2mTrainer`: STEPS ERM steps (epoch 0), then STEPS M2m steps (epoch 1,
against a frozen ResNet-8 g), and writes f's variables (trainable weights and BatchNorm moving
statistics), the epoch logs and the logs of each epoch's last batch (what the progress bar
shows) to OUT.json (a worker that is not the chief writes OUT.json.<task>).
"""

import json
import sys

import tensorflow as tf

if __name__ == "__main__" and sys.argv[1] == "local":  # before TensorFlow initialises
  _CPU = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np

from m2m_tf.data import pipeline
from m2m_tf.m2m.generation import M2mConfig
from m2m_tf.models import batch_norm, cifar_resnet
from m2m_tf.training import callbacks as cb
from m2m_tf.training import multi_worker as mw
from m2m_tf.training.trainer import M2mTrainer

K, B, N, STEPS, SHAPE = 3, 16, 48, 3, (16, 16, 3)
SYNC = {"auto": None, "off": False}


class LastBatchLogs(keras.callbacks.Callback):
  """The logs of every epoch's last batch: what the progress bar shows at the epoch's end."""

  def __init__(self):
    super().__init__()
    self.logs = []

  def on_train_batch_end(self, batch, logs=None):
    if batch == STEPS - 1:
      self.logs.append({k: float(v) for k, v in (logs or {}).items()})


def data():
  """48 images whose class (y = i mod 3) shifts one colour channel, in [0, 1]."""
  rng = np.random.default_rng(0)
  y = (np.arange(N) % K).astype(np.int64)
  x = rng.uniform(0, 0.7, (N,) + SHAPE).astype(np.float32)
  x[np.arange(N), :, :, y] += 0.3
  return x, y


def initial_weights():
  """f's and g's initial weights (seeded), made outside any strategy."""
  keras.utils.set_random_seed(0)
  f = cifar_resnet(K, depth=8, input_shape=SHAPE)
  g = cifar_resnet(K, depth=8, input_shape=SHAPE)
  return f.get_weights(), [w * 1.5 for w in g.get_weights()]


def build(strategy, sync):
  """The compiled trainer in `strategy`'s scope; `sync`: None (the default rule) or False."""
  init_f, init_g = initial_weights()
  with strategy.scope(), batch_norm.synchronization(sync):
    f = cifar_resnet(K, depth=8, input_shape=SHAPE, name="f")
    g = cifar_resnet(K, depth=8, input_shape=SHAPE, name="g")
    f.set_weights(init_f)
    g.set_weights(init_g)
    config = M2mConfig(beta=0.999, gamma=0.3, lam=0.5, steps=3, step_size=0.1, start_noise=0.5,
                       n_buckets=2)
    trainer = M2mTrainer(f, g, class_counts=[400, 60, 9], m2m=config, weight_decay=5e-4, seed=1)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False)
    trainer.build((None,) + SHAPE)
  return trainer


def dataset(input_context=None):
  """The training stream of `data()` (no augmentation), sharded under an input context."""
  x, y = data()
  return pipeline.train_dataset(x, y, num_classes=K, batch_size=B, seed=0, epochs=2,
                                input_context=input_context)


def variables(model):
  """Every variable of `model` (weights and moving statistics) by its path, as lists."""
  return {v.path: np.asarray(v.numpy()).tolist() for v in model.weights}


def record(trainer, initial, history, batches):
  """What the test compares: f's variables by path before and after training, the epoch logs,
  the last batches' logs."""
  f = trainer.f
  return {"variables": variables(f), "initial": initial,
          "synchronized": sorted({str(layer.synchronized) for layer in f.layers
                                  if isinstance(layer, keras.layers.BatchNormalization)}),
          "replicas": trainer.distribute_strategy.num_replicas_in_sync,
          "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
          "last_batch_logs": batches.logs}


def fit_local(strategy, sync):
  """`record` of a `fit` under `strategy` (one device or 2 mirrored CPUs)."""
  trainer, batches = build(strategy, sync), LastBatchLogs()
  initial = variables(trainer.f)
  history = trainer.fit(dataset(), epochs=2, steps_per_epoch=STEPS, verbose=0, shuffle=False,
                        callbacks=[cb.PhaseSchedule(1), batches])
  return record(trainer, initial, history, batches)


def fit_worker(sync):
  """(`record`, task index) of this worker's `fit_distributed` in TF_CONFIG's cluster."""
  strategy = mw.cluster_strategy()
  trainer, batches = build(strategy, sync), LastBatchLogs()
  initial = variables(trainer.f)
  data_set = mw.distribute(strategy, dataset, B)
  history = mw.fit_distributed(trainer, data_set, epochs=2, initial_epoch=0, steps_per_epoch=STEPS,
                               callbacks=[cb.PhaseSchedule(1), batches], verbose=0)
  return record(trainer, initial, history, batches), strategy.cluster_resolver.task_id


def main(argv):
  """Runs the mode of the module docstring and writes its records."""
  mode, out = argv[1], argv[2]
  if mode == "local":
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"default": fit_local(tf.distribute.get_strategy(), None),
              "sync": fit_local(mirrored, None), "nosync": fit_local(mirrored, False)}
  else:
    result, task = fit_worker(SYNC[argv[3]])
    out = out if task == 0 else f"{out}.{task}"
  with open(out, "w") as fh:
    json.dump(result, fh)


if __name__ == "__main__":
  main(sys.argv)
