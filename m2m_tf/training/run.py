"""`run_experiment`: one experiment, a plan of runs (g's ERM run in `g_erm/` if M2m needs it,
then the run asked for), each in a folder it locks and writes atomically and that a kill at any
instant leaves resumable (docs/runs.md#what-a-run-writes, #how-an-experiment-runs-its-runs).
"""

import contextlib
import dataclasses
import os
import time
from typing import List, Optional, Tuple

from data_prep import digest as digest_lib
from data_prep import user_data
from data_prep.atomic import read_json
from data_prep.recipes import suggested_recipe
from m2m_tf.config import G_SEED_OFFSET, ExperimentConfig
from m2m_tf.errors import OutputDirError
from m2m_tf.run_records import FLAGS_FILE, RESULTS_FILE
from m2m_tf.training import builders
from m2m_tf.training import checkpoint as ckpt_lib
from m2m_tf.training import determinism
from m2m_tf.training import output_dir as out_lib
from m2m_tf.training import results as results_lib
from m2m_tf.training import runner as runner_lib
from m2m_tf.training.comparison import differences
from m2m_tf.training.fitting import fit, say, stop_epoch
from m2m_tf.training.inputs import load_data, training_set
from m2m_tf.training.methods import METHODS, get_method


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  """One run of an experiment: its resolved configuration (in the shared folder), the g file(s)
  it reads (None: no g), and whether it trains g (a finished g of the same configuration is then
  reused, another refused)."""

  cfg: ExperimentConfig
  g_path: Optional[str] = None
  trains_g: bool = False


@dataclasses.dataclass
class _OpenRun:
  run: PlannedRun
  cfg: ExperimentConfig  # this process's copy: on a non-chief worker, a private output_dir
  folder: contextlib.ExitStack  # its lock (and private folder), held until it is trained
  t0: float


def resolve(config: ExperimentConfig, data=None) -> Tuple[ExperimentConfig, object]:
  """(`config` with its recipe fields filled, the data if loaded). Your own data are read first:
  the recipe is suggested from them, and their content digest is recorded (`data_digest`)."""
  if not user_data.is_spec(config.data.dataset):
    return config.resolved(), data
  data = data if data is not None else load_data(config)
  cfg = config.resolved(suggested_recipe(data, config.schedule.epochs))
  return cfg.replace(data_digest=digest_lib.data_digest(data)), data


def needs_g(cfg: ExperimentConfig) -> bool:
  """Whether the run translates with a g (M2m without self-translation)."""
  return get_method(cfg.training.method).needs_g and not cfg.training.self_translation


def g_config(cfg: ExperimentConfig) -> ExperimentConfig:
  """The ERM run that trains g for an M2m run: same data and recipe, seed + G_SEED_OFFSET."""
  return cfg.replace(
      method="erm", loss="ce", seed=cfg.seed + G_SEED_OFFSET,
      output_dir=os.path.join(cfg.output_dir, "g_erm"), g_checkpoint=None, overwrite=False,
      self_translation=False, init_from=None, init_epoch=None, keep_epochs=())


def plan_runs(cfg: ExperimentConfig, data=None) -> List[PlannedRun]:
  """The runs of the experiment `cfg` (resolved), in training order: g's ERM run in
  output_dir/g_erm when M2m has no g_checkpoint, then `cfg`'s own run.

  Raises:
    ConfigError: g's configuration is not valid.
  """
  if not needs_g(cfg):
    return [PlannedRun(cfg)]
  if cfg.training.g_checkpoint:
    return [PlannedRun(cfg, g_path=cfg.training.g_checkpoint)]
  g_cfg, _ = resolve(g_config(cfg), data)
  g_cfg.check_resolved(METHODS)
  g_weights = os.path.join(g_cfg.output_dir, ckpt_lib.BEST_WEIGHTS_FILE)
  return [PlannedRun(g_cfg, trains_g=True), PlannedRun(cfg, g_path=g_weights)]


def _reuse_g(run: PlannedRun, runner) -> bool:
  """Whether g's run is finished (the chief's view), then kept; one of another configuration is
  refused with an OutputDirError."""
  cfg = run.cfg
  if not runner.chief_value(os.path.exists(os.path.join(cfg.output_dir, RESULTS_FILE))):
    return False
  previous = read_json(os.path.join(cfg.output_dir, FLAGS_FILE)) or {}
  diff = differences(previous, cfg.to_json())
  if diff:
    raise OutputDirError(f"{cfg.output_dir} holds a g trained with another configuration "
                         f"(differs in {diff}); pass --overwrite to train it again.")
  if runner.is_chief:  # a kill between g's results.json and its clean-up leaves checkpoints
    ckpt_lib.RunCheckpoint(cfg.output_dir, None).finalize()
  return True


def _open(run: PlannedRun, data, runner, t0: float) -> Tuple[_OpenRun, object]:
  """Takes `run`'s folder: this process's copy, the lock, the resume/overwrite plan, the inputs
  checked (data loaded if None, g files), and only then --overwrite applied."""
  with contextlib.ExitStack() as folder:
    own = folder.enter_context(runner.own_output_dir(run.cfg.output_dir))
    cfg = run.cfg if own == run.cfg.output_dir else run.cfg.replace(output_dir=own)
    folder.enter_context(out_lib.RunLock(cfg.output_dir))
    plan = out_lib.plan_output_dir(cfg.output_dir, cfg.to_json(), cfg.runtime.overwrite,
                                   lambda previous: differences(previous, cfg.to_json()))
    data = data if data is not None else load_data(cfg)
    if cfg.training.g_checkpoint and run.g_path:
      builders.check_g_paths(cfg.training.g_checkpoint)
    plan.apply()
    return _OpenRun(run, cfg, folder.pop_all(), t0), data


def _train(job: _OpenRun, data, runner) -> dict:
  """Trains an open run, then releases its folder; returns its results, or for an invocation
  that --stop_after ended early {"stopped_after": epochs done, "epochs": the schedule's}."""
  cfg, run = job.cfg, job.run
  with job.folder:
    xy = training_set(cfg, data)
    trainer = builders.build_trainer(cfg, data, run.g_path, *xy)
    evaluation, checkpoint = fit(cfg, data, trainer, xy, runner, run.cfg.output_dir, run.g_path)
    if stop_epoch(cfg) < cfg.schedule.epochs:
      done = len(checkpoint.epoch_seconds)
      say(cfg, f"stopped after {done} of {cfg.schedule.epochs} epochs (--stop_after)")
      return {"stopped_after": done, "epochs": cfg.schedule.epochs}
    return results_lib.export_and_report(cfg, data, trainer, evaluation, checkpoint, job.t0,
                                         runner.is_chief)


def execute(plan: List[PlannedRun], data, runner, t0: float) -> dict:
  """Opens the plan's folders, the last run's first (it holds the others: its --overwrite
  clears them before they train), then trains the runs in order; returns the last's results."""
  with contextlib.ExitStack() as held:
    jobs = []
    for run in reversed(plan):
      if run.trains_g and _reuse_g(run, runner):
        continue
      if run.trains_g:
        say(run.cfg, f"training g with ERM (seed {run.cfg.seed}) in {run.cfg.output_dir}")
      job, data = _open(run, data, runner, t0 if run is plan[-1] else time.time())
      held.enter_context(job.folder)
      jobs.append(job)
    for job in reversed(jobs):
      results = _train(job, data, runner)
      if job.run.trains_g:
        runner.chief_value(1)  # a barrier: the others read g's weights once the chief wrote them
  return results


def run_experiment(config: ExperimentConfig, data=None) -> dict:
  """Trains what `config` asks for (g first if needed) and returns the results (results.json).

  Args:
    config: an `ExperimentConfig` (recipe fields may be None).
    data: an optional pre-loaded `DatasetSplits` (else loaded by name).
  Returns:
    The results: dataset, method, loss, seed, test/val bACC and GM (percent),
    best_epoch, per_class_recall, the other metrics (docs/method.md#metrics) and seconds.
    An invocation that --stop_after ended early returns only {"stopped_after": epochs done,
    "epochs": the schedule's, "output_dir"}: the run is unfinished.
  Raises:
    M2mError subclasses for user errors (configuration, data, output folder,
    checkpoints, divergence); anything else is a bug.
  """
  t0 = time.time()
  # Both before TensorFlow's first op: how many ops may run at once, and the multi-worker
  # strategy (it configures the process's collectives; a missing cluster is one line first).
  determinism.limit_inter_op_threads(config.runtime.inter_op_threads)
  runner = runner_lib.make_runner(config.runtime.strategy)
  cfg, data = resolve(config, data)
  cfg.check_resolved(METHODS)
  results = execute(plan_runs(cfg, data), data, runner, t0)
  return dict(results, output_dir=cfg.output_dir)
