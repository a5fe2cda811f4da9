"""The one fit path of a run: restore or branch, agree with the other workers, train epochs."""

import sys
from typing import Optional, Tuple

from data_prep import digest as digest_lib
from m2m_tf.config import ExperimentConfig
from m2m_tf.data import pipeline
from m2m_tf.training import builders
from m2m_tf.training import multi_worker as mw
from m2m_tf.training import output_dir as out_lib
from m2m_tf.training.branching import branch
from m2m_tf.training.comparison import comparable_config
from m2m_tf.training.inputs import train_dataset
from m2m_tf.training.methods import get_method


def say(cfg: ExperimentConfig, message: str) -> None:
  """A progress line on stderr for runs with verbose > 0 (what is trained, where)."""
  if cfg.runtime.verbose:
    print(f"m2m_tf: {message}", file=sys.stderr, flush=True)


def describe(cfg: ExperimentConfig) -> str:
  """What the run trains, for progress lines: "CE-M2M (phase 2 from epoch 161)", "LDAM", ..."""
  t, method = cfg.training, get_method(cfg.training.method)
  name = f"{t.loss.upper()}-{t.method.upper()}" if t.method != "erm" else t.loss.upper()
  if method.deferred:
    name += f" (phase 2 from epoch {cfg.schedule.deferred_epoch + 1})"
  if cfg.runtime.precision != "float32":
    name += f" in {cfg.runtime.precision}"
  return name


def worker_prints(cfg: ExperimentConfig, data, g_path: Optional[str]) -> dict:
  """What must agree between the workers of a run (`mw.worker_prints`): the configuration
  without folders, paths and verbosity (your own data's path neither: its digest counts), the
  data's content digest and g's files' sha256."""
  skip = out_lib.NOT_RESULT_FIELDS | out_lib.PATH_FIELDS | {"data_digest"}
  if cfg.data.data_digest:
    skip |= {"dataset"}
  config = {k: v for k, v in comparable_config(cfg.to_json()).items() if k not in skip}
  return mw.worker_prints(config, cfg.data.data_digest or digest_lib.data_digest(data), g_path)


def start_epoch(cfg: ExperimentConfig, trainer, checkpoint) -> int:
  """Restores this run's newest commit, else branches (init_from); returns the epochs done."""
  done = checkpoint.restore(trainer)
  if done == 0 and cfg.runtime.init_from:
    done = branch(cfg, trainer, checkpoint)
    say(cfg, f"branched from {cfg.runtime.init_from} after {done} epochs")
  if done:
    say(cfg, f"resuming {cfg.output_dir} after {done} of {cfg.schedule.epochs} epochs")
  return done


def stop_epoch(cfg: ExperimentConfig) -> int:
  """The epoch this invocation trains up to: the schedule's end, or --stop_after's if earlier."""
  return min(cfg.schedule.epochs, cfg.runtime.stop_after or cfg.schedule.epochs)


def fit(cfg: ExperimentConfig, data, trainer, training_set, runner, shared_dir: str,
        g_path: Optional[str]) -> Tuple[object, object]:
  """Trains (or resumes) the run up to `stop_epoch` with `runner` (`runner.LocalRunner` or
  `ClusterRunner`) on `training_set` = (x, y); `shared_dir`: where the chief commits; `g_path`:
  g's file(s), compared between workers. Returns the `BalancedEvaluation` and `RunCheckpoint`.

  Raises:
    RuntimeError: the schedule ended without an evaluated epoch.
  """
  s, (x_train, y_train) = cfg.schedule, training_set
  steps = pipeline.steps_per_epoch(len(x_train), s.batch_size, len(data.x_train))
  callbacks, evaluation, checkpoint = builders.build_callbacks(cfg, data, steps)
  first = start_epoch(cfg, trainer, checkpoint)
  first = runner.follow_chief(trainer, checkpoint, first, shared_dir,
                              lambda: worker_prints(cfg, data, g_path))
  last = stop_epoch(cfg)
  if first < last:
    say(cfg, f"training {describe(cfg)}, epochs {first + 1}-{last} in {cfg.output_dir}")
    runner.train(trainer, lambda ctx: train_dataset(cfg, data, x_train, y_train, first, ctx),
                 batch_size=s.batch_size, epochs=last, initial_epoch=first,
                 steps_per_epoch=steps, callbacks=callbacks, verbose=cfg.runtime.verbose)
  if last == s.epochs and evaluation.best_weights is None:
    raise RuntimeError("Training finished without a single evaluated epoch.")
  return evaluation, checkpoint
