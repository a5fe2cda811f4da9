"""The strategy a run trains under, and the runner that trains its epochs: `LocalRunner` (one
device or MirroredStrategy: `keras.Model.fit`) or `ClusterRunner` (--strategy=multi_worker:
`multi_worker.fit_distributed`, docs/distributed.md#what-each-worker-writes-and-reads)."""

import contextlib
import functools
from typing import Callable, Iterator, Mapping, Sequence

import keras
import tensorflow as tf

from m2m_tf.errors import ConfigError
from m2m_tf.training import multi_worker as mw


def make_strategy(name: str) -> tf.distribute.Strategy:
  """--strategy's strategy: "default" (one device), "mirrored" (all local GPUs, else all logical
  CPUs) or "multi_worker" (the process's, `mw.cluster_strategy`).

  Raises:
    ConfigError: another name.
  """
  if name == "multi_worker":
    return mw.cluster_strategy()
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return _mirrored_strategy()
  raise ConfigError(f"strategy must be default, mirrored or multi_worker, got {name!r}.")


@functools.lru_cache(maxsize=None)
def _mirrored_strategy() -> tf.distribute.MirroredStrategy:
  # One per process: a second one starts its collective keys where the first did, and the
  # runtime then mixes their collectives ("Collective instance 100 expected ... but got ...",
  # when an M2m run trains g and then f in one process).
  gpus = tf.config.list_logical_devices("GPU")
  devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
  return tf.distribute.MirroredStrategy(devices=devices)


class LocalRunner:
  """A run in one process (one device or MirroredStrategy): it writes its folder, trains with `fit`.

  The runner interface: `is_chief` (this process writes the shared folder), `own_output_dir`
  (the folder it writes), `chief_value` (the chief's int on every worker, also a barrier),
  `follow_chief` (the epoch to start from) and `train` (epochs [initial_epoch, epochs) on
  `dataset_fn(input_context)`).
  """

  is_chief = True

  @contextlib.contextmanager
  def own_output_dir(self, output_dir: str) -> Iterator[str]:
    yield output_dir

  def chief_value(self, value: int) -> int:
    return int(value)

  def follow_chief(self, trainer, checkpoint, first: int, shared_dir: str,
                   prints: Callable[[], Mapping[str, int]]) -> int:
    del trainer, checkpoint, shared_dir, prints
    return first

  def train(self, trainer, dataset_fn: Callable, *, batch_size: int, epochs: int,
            initial_epoch: int, steps_per_epoch: int,
            callbacks: Sequence[keras.callbacks.Callback], verbose: int) -> None:
    del batch_size
    # Our pipeline shuffles (seeded per epoch), so fit must not; it spans the whole schedule:
    # the batches of an epoch do not depend on where this invocation stops.
    trainer.fit(dataset_fn(None), epochs=epochs, initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose,
                shuffle=False)


class ClusterRunner(LocalRunner):
  """One worker of a --strategy=multi_worker run (`multi_worker`): the chief writes the folder,
  the others a private one; `follow_chief` also checks that `prints()` agree."""

  def __init__(self, strategy: tf.distribute.MultiWorkerMirroredStrategy):
    self.strategy = strategy

  @property
  def is_chief(self) -> bool:
    return mw.is_chief(self.strategy)

  def own_output_dir(self, output_dir: str):
    return mw.own_output_dir(self.strategy, output_dir)

  def chief_value(self, value: int) -> int:
    return mw.chief_value(self.strategy, value)

  def follow_chief(self, trainer, checkpoint, first, shared_dir, prints):
    return mw.follow_chief(trainer, checkpoint, first, shared_dir, prints())

  def train(self, trainer, dataset_fn, *, batch_size, epochs, initial_epoch, steps_per_epoch,
            callbacks, verbose):
    # Each worker reads its shard of every global batch: together, the single-host stream.
    mw.fit_distributed(trainer, mw.distribute(self.strategy, dataset_fn, batch_size),
                       epochs=epochs, initial_epoch=initial_epoch,
                       steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose)


def make_runner(strategy: str) -> LocalRunner:
  """The runner for --strategy; under multi_worker it makes the cluster strategy, which must
  precede TensorFlow's first op (a missing cluster is then one line before any work).

  Raises:
    ConfigError: multi_worker without a usable cluster (`mw.cluster_strategy`).
  """
  if strategy == "multi_worker":
    return ClusterRunner(mw.cluster_strategy())
  return LocalRunner()
