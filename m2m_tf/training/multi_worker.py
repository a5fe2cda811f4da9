"""--strategy=multi_worker: the cluster, the workers' agreement and `fit_distributed`, which trains
there since Keras' `fit` cannot (docs/distributed.md#why-a-custom-loop). The chief writes the run,
the others private folders (docs/distributed.md#what-each-worker-writes-and-reads).
"""

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from m2m_tf.errors import CheckpointError, ClusterError, ConfigError
from data_prep.atomic import file_sha256
from m2m_tf.run_records import record_path
from m2m_tf.training import collectives
from m2m_tf.training.checkpoint import load_state

# The errors a collective raises when a peer is gone (killed, crashed, unreachable).
LOST_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                    tf.errors.CancelledError, tf.errors.AbortedError)
SLURM_PORT_BASE = 8888  # SlurmClusterResolver's default: worker i of a node listens on 8888 + i


def _tf_config_resolver(text: str) -> tf.distribute.cluster_resolver.ClusterResolver:
  """TF_CONFIG's resolver, after checking that it names a cluster and this task."""
  try:
    spec = json.loads(text)
  except ValueError as e:
    raise ConfigError(f"TF_CONFIG is not JSON ({e}).") from None
  task = spec.get("task") if isinstance(spec, dict) else None
  cluster = spec.get("cluster") if isinstance(spec, dict) else None
  if not isinstance(cluster, dict) or not isinstance(task, dict):
    raise ConfigError('TF_CONFIG needs "cluster" and "task", e.g. {"cluster": {"worker": '
                      '["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}.')
  if task.get("type") not in ("chief", "worker") or task.get("type") not in cluster:
    raise ConfigError(f"TF_CONFIG task {task} must be a chief or worker of its cluster "
                      f"({sorted(cluster)}).")
  return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def _slurm_resolver(environ: Mapping[str, str]) -> tf.distribute.cluster_resolver.ClusterResolver:
  """Slurm's resolver: one worker per task of the job step (`srun`), ports 8888 + i per node."""
  kwargs = {}
  if "CUDA_VISIBLE_DEVICES" not in environ and shutil.which("nvidia-smi") is None:
    # CPU nodes: the resolver pairs each task of a node with a GPU slot; give it one slot per
    # task and no GPU assignment (it would otherwise fail looking for nvidia-smi).
    tasks = int(environ.get("SLURM_STEP_NUM_TASKS", "1"))
    kwargs = {"gpus_per_node": tasks, "gpus_per_task": 1, "auto_set_gpu": False}
  try:
    return tf.distribute.cluster_resolver.SlurmClusterResolver(port_base=SLURM_PORT_BASE, **kwargs)
  except (RuntimeError, ValueError) as e:
    raise ConfigError(f"--strategy=multi_worker under Slurm: {e} (start one task per worker "
                      "with srun).") from None


def cluster_resolver(environ: Mapping[str, str]) -> tf.distribute.cluster_resolver.ClusterResolver:
  """The cluster of this process: TF_CONFIG if set, else the Slurm job step it is a task of.

  Raises:
    ConfigError: neither is there, or TF_CONFIG is malformed.
  """
  if environ.get("TF_CONFIG"):
    return _tf_config_resolver(environ["TF_CONFIG"])
  if "SLURM_JOB_ID" in environ and "SLURM_PROCID" in environ:
    return _slurm_resolver(environ)
  raise ConfigError("--strategy=multi_worker needs TF_CONFIG (the cluster and this worker's task, "
                    "docs/distributed.md) or a Slurm task (SLURM_JOB_ID, SLURM_PROCID).")


@functools.lru_cache(maxsize=None)
def cluster_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
  """The process's MultiWorkerMirroredStrategy, made on the first call and reused (g's run and
  f's run share it). TensorFlow allows one, made before its first op.

  Raises:
    ConfigError: no cluster (see `cluster_resolver`), or TensorFlow refused it.
  """
  resolver = cluster_resolver(os.environ)
  try:
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
  except (RuntimeError, ValueError, tf.errors.OpError) as e:
    raise ConfigError(f"--strategy=multi_worker: TensorFlow could not start this worker "
                      f"({type(e).__name__}: {str(e).splitlines()[0]}).") from None


def free_local_ports(n: int) -> List[int]:
  """`n` distinct TCP ports free on localhost now (bound to port 0 together, then released)."""
  with contextlib.ExitStack() as stack:
    socks = [stack.enter_context(socket.socket()) for _ in range(n)]
    for s in socks:
      s.bind(("localhost", 0))
    return [s.getsockname()[1] for s in socks]


def local_tf_config(ports: Sequence[int], index: int) -> str:
  """TF_CONFIG of worker `index` of a cluster of workers on localhost at `ports`."""
  return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}})


def is_multi_worker(strat: tf.distribute.Strategy) -> bool:
  """Whether `strat` is a MultiWorkerMirroredStrategy (trained by `fit_distributed`)."""
  return isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strat: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run (always, except on multi-worker non-chiefs)."""
  return not is_multi_worker(strat) or bool(strat.extended.should_checkpoint)


def worker_name(strat: tf.distribute.Strategy) -> str:
  """"worker:1", "chief:0": this process's task in the cluster."""
  resolver = strat.cluster_resolver
  return f"{resolver.task_type}:{resolver.task_id}"


def gather_ints(strat: tf.distribute.Strategy, values: Sequence[int]) -> np.ndarray:
  """Every replica's `values` as rows [replicas, len(values)], the same on every worker (a
  collective: every worker calls it, in the same order as its other collectives)."""
  row = [[int(v) for v in values]]

  def replica_fn():
    return collectives.all_gather_rows(tf.constant(row, tf.int64))

  # Traced, as collectives want (eagerly they warn of their overhead).
  return strat.experimental_local_results(tf.function(lambda: strat.run(replica_fn))())[0].numpy()


def chief_value(strat: tf.distribute.Strategy, value: int) -> int:
  """The chief's `value` on every worker (and a barrier); `value` itself for other strategies."""
  if not is_multi_worker(strat):
    return int(value)
  rows = gather_ints(strat, [int(is_chief(strat)), int(value)])
  return int(rows[rows[:, 0] == 1][0, 1])


# What the workers of a run compare before training, each named as an error names it.
PRINT_LABELS = {"configuration": "configurations",
                "g_weights": "g weights (the sha256 of the g file(s))",
                "training_data": "training data (the sha256 of the loaded splits)"}


def _digest_print(text: str) -> int:
  """The first 60 bits of a text's sha256, as an int64 that the workers can gather."""
  return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def fingerprint(config_json: Mapping) -> int:
  """A 60-bit checksum of a configuration record (sorted JSON), to compare workers' commands."""
  return _digest_print(json.dumps(config_json, sort_keys=True, default=str))


def worker_prints(config_json: Mapping, data_digest: str, g_files: Optional[str]) -> Dict[str, int]:
  """PRINT_LABELS' checksums of this worker: its configuration (without folders and paths),
  its data's content digest and the sha256 of its g file(s), comma-separated (None: no g)."""
  g = ",".join(file_sha256(p) for p in g_files.split(",")) if g_files else "none"
  return {"configuration": fingerprint(config_json), "g_weights": _digest_print(g),
          "training_data": _digest_print(data_digest)}


def follow_chief(trainer, checkpoint, first: int, shared_dir: str,
                 prints: Mapping[str, int]) -> int:
  """Makes every worker start where the chief does (`first`: the epochs the chief restored);
  the others load that commit from `shared_dir`. Returns that epoch.

  Raises:
    ConfigError: some worker's `prints` (`worker_prints`) differ from the chief's (all stop).
    CheckpointError: a worker cannot read the chief's commit.
  """
  strat = trainer.distribute_strategy
  names = list(prints)
  rows = gather_ints(strat, [int(is_chief(strat)), first] + [prints[n] for n in names])
  chief = rows[rows[:, 0] == 1][0]
  differ = [PRINT_LABELS.get(n, n) for i, n in enumerate(names)
            if np.any(rows[:, 2 + i] != chief[2 + i])]
  if differ:
    raise ConfigError(f"the workers were started with different {' and '.join(differ)}; start "
                      "every worker with the same flags, g and data.")
  chief_first = int(chief[1])
  if not is_chief(strat) and chief_first:
    record = record_path(shared_dir, chief_first)
    if not os.path.exists(record):
      raise CheckpointError(f"{worker_name(strat)} cannot read the chief's commit {record}: "
                            "--output_dir must be on a filesystem every worker sees.")
    checkpoint.apply(trainer, load_state(record))
  return chief_first


@contextlib.contextmanager
def own_output_dir(strat: tf.distribute.Strategy, output_dir: str) -> Iterator[str]:
  """The folder this process writes: `output_dir` on the chief; on other workers a private
  temporary folder, deleted when the run ends (TensorFlow's pattern for multi-worker saving)."""
  if is_chief(strat):
    yield output_dir
    return
  resolver = strat.cluster_resolver
  path = tempfile.mkdtemp(prefix=f"m2m_tf-{resolver.task_type}{resolver.task_id}-")
  try:
    yield os.path.join(path, "run")
  finally:
    shutil.rmtree(path, ignore_errors=True)


def distribute(strat: tf.distribute.Strategy, dataset_fn: Callable, batch_size: int):
  """`dataset_fn(input_context)` on every worker: each reads its shard of every global batch.

  Raises:
    ConfigError: the global batch does not split evenly over the replicas.
  """
  replicas = strat.num_replicas_in_sync
  if batch_size % replicas:
    raise ConfigError(f"batch_size {batch_size} must be divisible by the {replicas} replicas of "
                      "the cluster (it is the global batch).")
  return strat.distribute_datasets_from_function(dataset_fn)


def step_function(trainer) -> Callable[[Iterator], Dict[str, tf.Tensor]]:
  """One distributed step on the iterator's next batch: `trainer.train_step` on every replica
  (the step `fit` runs), its logs averaged over the replicas, as `fit` averages them."""
  strat = trainer.distribute_strategy
  names = [m.name for m in trainer.metrics]

  def replica_step(data):
    logs = trainer.train_step(data)
    return tf.stack([tf.cast(logs[n], tf.float32) for n in names])

  def one_step(data):
    # One all-reduce for all logs. Every worker then sees the same loss, so a non-finite loss
    # stops all of them at the same batch (DivergenceGuard) instead of leaving one waiting.
    return strat.reduce("MEAN", strat.run(replica_step, args=(data,)), axis=None)

  one_step = tf.function(one_step, jit_compile=bool(trainer.jit_compile), reduce_retracing=True)

  @tf.function
  def step(iterator):  # the logs dict is built in the graph: no eager work per step
    return dict(zip(names, tf.unstack(one_step(next(iterator)))))

  return step


def _run_epochs(trainer, callbacks, iterator, epochs: range, steps: int):
  """Keras `fit`'s epoch loop: metrics reset, callbacks, epoch logs from the model's metrics."""
  step = step_function(trainer)
  logs = None
  for epoch in epochs:
    trainer.reset_metrics()
    callbacks.on_epoch_begin(epoch)
    for batch in range(steps):
      callbacks.on_train_batch_begin(batch)
      callbacks.on_train_batch_end(batch, step(iterator))
      if trainer.stop_training:
        break
    # Read in the cross-replica context: the metrics' sums over all replicas (a collective).
    logs = dict(trainer.get_metrics_result())
    callbacks.on_epoch_end(epoch, logs)
    if trainer.stop_training:
      break
  return logs


def fit_distributed(trainer, dataset, *, epochs: int, initial_epoch: int, steps_per_epoch: int,
                    callbacks: Sequence[keras.callbacks.Callback], verbose: int):
  """`trainer.fit(...)` for a distributed dataset: the callbacks get the calls and logs `fit`
  gives them, plus History and (on the chief) the progress bar. Returns the History callback.

  Raises:
    ClusterError: a peer was lost.
  """
  strat = trainer.distribute_strategy
  verbose = verbose if is_chief(strat) else 0
  cbs = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                     verbose=verbose, epochs=epochs, steps=steps_per_epoch,
                                     model=trainer)
  trainer.stop_training = False
  cbs.on_train_begin()
  try:
    logs = _run_epochs(trainer, cbs, iter(dataset), range(initial_epoch, epochs), steps_per_epoch)
  except LOST_PEER_ERRORS as e:
    # TF's message starts with the failed graph node, "{{function_node ...}}": noise here.
    why = re.sub(r"\{\{.*?\}\}\s*", "", str(e).splitlines()[0])
    raise ClusterError(f"{worker_name(strat)} lost a peer ({type(e).__name__}: {why}); start "
                       "every worker again with the same command to resume from the last "
                       "committed epoch.") from None
  if epochs > initial_epoch:
    trainer.optimizer.finalize_variable_values(trainer.trainable_weights)
  cbs.on_train_end(logs=logs)
  return trainer.history
