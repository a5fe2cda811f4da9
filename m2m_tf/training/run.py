"""`run_experiment`: one training run from explicit arguments to results on disk.

Used by `m2m_tf.main` (which turns absl flags into an `ExperimentConfig`) and by
`launch/` grids. Outputs under `output_dir` (docs/runs.md):

  flags.json        the full configuration (a resumed run must match it)
  history.csv       one row per epoch (loss, lr, val/test bACC and GM, M2m rates)
  tensorboard/      TensorBoard logs
  ckpt/             crash-safe epoch checkpoints while the run is unfinished
  best_f.weights.h5 f at the epoch with the best validation bACC (+ best_state.json)
  saved_model/      that f exported as a SavedModel (`serve` endpoint: logits)
  results.json      metrics of the selected epoch, written last
  g_erm/            the ERM run that trained g, when M2m had no g_checkpoint

The run holds a lock on the folder, writes every file atomically and can be
killed at any instant: the same call resumes it. An output directory that
already holds results is refused unless `overwrite=True`, which deletes only
what a run of ours wrote, and only after the inputs were checked.
"""

import dataclasses
import json
import math
import os
import time
from typing import Optional, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from data_prep.registry import load_dataset
from m2m_tf import losses as losses_lib
from m2m_tf import models as models_lib
from m2m_tf.data import pipeline
from m2m_tf.errors import CheckpointError, ConfigError, DataError, OutputDirError
from m2m_tf.io_utils import atomic_replace_dir, atomic_write_json, read_json
from m2m_tf.m2m.generation import M2mConfig
from m2m_tf.models import build_classifier
from m2m_tf.models.ensemble import ProbabilityEnsemble
from m2m_tf.recipes import G_SEED_OFFSET, get_recipe
from m2m_tf.training import callbacks as cb
from m2m_tf.training import checkpoint as ckpt_lib
from m2m_tf.training import output_dir as out_lib
from m2m_tf.training.methods import get_method
from m2m_tf.training.trainer import M2mTrainer

RESULTS_FILE = out_lib.RESULTS_FILE


@dataclasses.dataclass
class ExperimentConfig:
  """Everything one run needs. None means "the dataset's recipe value" (m2m_tf.recipes)."""

  dataset: str = "reuters"
  method: str = "m2m"
  loss: str = "ce"
  seed: int = 0
  output_dir: str = "runs/reuters_m2m"
  data_dir: Optional[str] = None
  dataset_options: dict = dataclasses.field(default_factory=dict)
  epochs: Optional[int] = None
  batch_size: Optional[int] = None
  lr: Optional[float] = None
  warmup_epochs: Optional[int] = None
  lr_milestones: Optional[Tuple[int, ...]] = None
  lr_factors: Optional[Tuple[float, ...]] = None
  weight_decay: Optional[float] = None
  momentum: float = 0.9
  deferred_epoch: Optional[int] = None
  beta: float = 0.999
  lam: float = 0.5
  gamma: float = 0.9
  steps: int = 10
  step_size: Optional[float] = None
  start_noise: float = 0.5
  no_reject: bool = False
  accept_mode: str = "translate"
  self_translation: bool = False
  seed_pool_size: int = 0
  n_buckets: int = 8
  fold_batchnorm: bool = True
  g_checkpoint: Optional[str] = None  # comma-separated paths: an ensemble g (M2m-Ensemble)
  loss_reduction: str = "batch"
  jit_compile: str = "auto"
  mixed_precision: bool = False
  strategy: str = "default"
  overwrite: bool = False
  verbose: int = 1
  eval_batch_size: int = 1024
  init_from: Optional[str] = None  # phase-1 sharing: a run folder whose state to start from
  init_epoch: Optional[int] = None  # ... after this many completed epochs
  keep_epochs: Tuple[int, ...] = ()  # completed-epoch states kept for good (branch points)

  def resolved(self) -> "ExperimentConfig":
    """A copy with every None recipe field filled from the dataset's recipe."""
    r = get_recipe(self.dataset)
    fill = dict(epochs=r.epochs, batch_size=r.batch_size, lr=r.lr, warmup_epochs=r.warmup_epochs,
                lr_milestones=tuple(r.milestones), lr_factors=tuple(r.factors),
                weight_decay=r.weight_decay, deferred_epoch=r.deferred_epoch, step_size=r.step_size)
    out = dataclasses.replace(self)
    for k, v in fill.items():
      if getattr(out, k) is None:
        setattr(out, k, v)
    out.lr_milestones = tuple(int(m) for m in out.lr_milestones)
    out.lr_factors = tuple(float(m) for m in out.lr_factors)
    out.keep_epochs = tuple(int(e) for e in out.keep_epochs)
    return out

  def to_json(self) -> dict:
    """The configuration as a JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(self)))


def validate_config(cfg: ExperimentConfig) -> None:
  """Refuses a resolved configuration that cannot give a meaningful run, before any work.

  Raises:
    ConfigError: naming the field and the rule.
  """
  checks = [
      (cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}"),
      (cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
      (cfg.lr > 0 and math.isfinite(cfg.lr), f"lr must be a positive number, got {cfg.lr}"),
      (cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}"),
      (cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}"),
      (cfg.seed_pool_size >= 0, f"seed_pool_size must be >= 0, got {cfg.seed_pool_size}"),
      (cfg.loss in losses_lib.LOSSES, f"unknown loss {cfg.loss!r}; valid: {list(losses_lib.LOSSES)}"),
      (cfg.loss_reduction in ("batch", "weights"), "loss_reduction must be batch or weights"),
      (cfg.strategy in ("default", "mirrored"), "strategy must be default or mirrored"),
      (cfg.jit_compile in ("auto", "true", "false"), "jit_compile must be auto, true or false"),
      (len(cfg.lr_milestones) == len(cfg.lr_factors),
       "lr_milestones and lr_factors must have the same length"),
  ]
  for ok, message in checks:
    if not ok:
      raise ConfigError(message + ".")
  try:
    method = get_method(cfg.method)
    _m2m_config(cfg, clip_range=None)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if method.deferred and not 0 <= cfg.deferred_epoch < cfg.epochs:
    raise ConfigError(
        f"method {cfg.method} starts its second phase at deferred_epoch={cfg.deferred_epoch}, "
        f"which must lie in [0, epochs={cfg.epochs}); otherwise it would train plain "
        f"{'ERM' if cfg.loss == 'ce' else cfg.loss.upper()} under its name.")
  if (cfg.init_from is None) != (cfg.init_epoch is None):
    raise ConfigError("init_from and init_epoch must be given together.")
  if cfg.init_epoch is not None and not 0 < cfg.init_epoch < cfg.epochs:
    raise ConfigError(f"init_epoch must lie in (0, epochs={cfg.epochs}), got {cfg.init_epoch}.")


def _m2m_config(cfg: ExperimentConfig, clip_range) -> M2mConfig:
  return M2mConfig(beta=cfg.beta, lam=cfg.lam, gamma=cfg.gamma, steps=cfg.steps,
                   step_size=cfg.step_size, start_noise=cfg.start_noise, clip_range=clip_range,
                   reject=not cfg.no_reject, accept_mode=cfg.accept_mode,
                   n_buckets=cfg.n_buckets, fold_batchnorm=cfg.fold_batchnorm)


def resolve_jit_compile(mode: str) -> bool:
  """`auto`: XLA on GPU only (measured slower on CPU, compile included: BUILD.md); true/false force it."""
  if mode in ("true", True):
    return True
  if mode in ("false", False):
    return False
  if mode != "auto":
    raise ConfigError(f"jit_compile must be auto, true or false, got {mode!r}.")
  return bool(tf.config.list_physical_devices("GPU"))


def make_strategy(name: str) -> tf.distribute.Strategy:
  """"default" (one device) or "mirrored" (all local GPUs, else all logical CPUs)."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)
  raise ConfigError(f"strategy must be default or mirrored, got {name!r}.")


def check_g_paths(g_checkpoint: Optional[str]) -> None:
  """Raises CheckpointError unless every comma-separated g file exists and has a known format."""
  for path in (g_checkpoint or "").split(","):
    if not path or not os.path.exists(path):
      raise CheckpointError(
          f"g checkpoint not found: {path!r}. Pass --g_checkpoint=PATH to an existing "
          ".weights.h5 (or official .npz) file, or leave it unset to train g with ERM first.")
    if not path.endswith((".npz", ".weights.h5")):
      raise CheckpointError(f"g checkpoint {path!r} must end in .weights.h5 or .npz.")


def load_g_weights(g: keras.Model, path: str) -> None:
  """Loads g from a Keras `.weights.h5` file or a PyTorch-layout ResNet-32 `.npz`.

  Raises:
    CheckpointError: a missing file, an unknown format, or weights of another shape.
  """
  check_g_paths(path)
  try:
    if path.endswith(".npz"):
      models_lib.load_torch_state_dict(g, path)
    else:
      g.load_weights(path)
  except (ValueError, OSError) as e:
    raise CheckpointError(f"g checkpoint {path} does not fit this model "
                          f"(inputs {tuple(g.input_shape[1:])}, {g.output_shape[-1]} classes): "
                          f"{str(e).splitlines()[0]}") from None


def _class_weight(kind: Optional[str], counts: np.ndarray) -> Optional[np.ndarray]:
  if kind is None or kind == "none":
    return None
  return losses_lib.class_weights(kind, counts)


def g_config(cfg: ExperimentConfig) -> ExperimentConfig:
  """The ERM run that trains g for an M2m run: same data and recipe, seed + G_SEED_OFFSET."""
  return dataclasses.replace(
      cfg, method="erm", loss="ce", seed=cfg.seed + G_SEED_OFFSET,
      output_dir=os.path.join(cfg.output_dir, "g_erm"), g_checkpoint=None, overwrite=False,
      self_translation=False, init_from=None, init_epoch=None, keep_epochs=())


def train_g(cfg: ExperimentConfig, data=None) -> str:
  """Trains g with ERM under output_dir/g_erm (see `g_config`); returns its weights file.

  A finished g_erm run of the same configuration is reused, so resuming an M2m
  run does not retrain g; one of another configuration is refused.
  """
  g_cfg = g_config(cfg)
  weights = os.path.join(g_cfg.output_dir, ckpt_lib.BEST_WEIGHTS_FILE)
  if os.path.exists(os.path.join(g_cfg.output_dir, RESULTS_FILE)):
    previous = read_json(os.path.join(g_cfg.output_dir, out_lib.FLAGS_FILE)) or {}
    diff = out_lib.config_differences(previous, g_cfg.resolved().to_json(),
                                      ExperimentConfig().to_json())
    if diff:
      raise OutputDirError(f"{g_cfg.output_dir} holds a g trained with another configuration "
                           f"(differs in {diff}); pass --overwrite to train it again.")
    # A kill between g's results.json and its clean-up leaves checkpoints: drop them now.
    ckpt_lib.RunCheckpoint(g_cfg.output_dir, None).finalize()
    return weights
  logging.info("Training g with ERM (seed %d) in %s", g_cfg.seed, g_cfg.output_dir)
  run_experiment(g_cfg, data=data)
  return weights


def load_data(cfg: ExperimentConfig):
  """The dataset's splits; malformed data becomes a one-line DataError naming the problem."""
  try:
    data = load_dataset(cfg.dataset, cfg.data_dir, **cfg.dataset_options)
  except ValueError as e:
    raise DataError(f"{cfg.dataset}: {e}") from None
  check_splits(cfg.dataset, data)
  return data


def check_splits(name: str, data) -> None:
  """Refuses splits that would train or evaluate wrongly: empty classes, bad labels, NaN/Inf,
  inputs whose shapes differ between splits.

  Raises:
    DataError: one line naming the dataset, the split and the problem.
  """
  counts = data.class_counts
  if np.any(counts == 0):
    raise DataError(f"{name}: classes {np.flatnonzero(counts == 0).tolist()} have no training "
                    "example.")
  for split in ("train", "val", "test"):
    x, y = getattr(data, f"x_{split}"), np.asarray(getattr(data, f"y_{split}"))
    if len(x) != len(y):
      raise DataError(f"{name}: x_{split} has {len(x)} rows but y_{split} {len(y)} labels.")
    if tuple(x.shape[1:]) != tuple(data.x_train.shape[1:]):
      raise DataError(f"{name}: x_{split} examples have shape {tuple(x.shape[1:])}, x_train's "
                      f"{tuple(data.x_train.shape[1:])}.")
    if len(y) and (y.min() < 0 or y.max() >= data.num_classes):
      raise DataError(f"{name}: y_{split} holds labels outside [0, {data.num_classes}).")
    bad = pipeline.nonfinite_rows(x)
    if bad.size:
      raise DataError(f"{name}: x_{split} has NaN/Inf in {bad.size} examples (first: row "
                      f"{bad[0]}).")


def _build_g(cfg, recipe, data, g_path):
  members = []
  for i, path in enumerate(g_path.split(",")):
    member = build_classifier(recipe.arch, data.input_shape, data.num_classes, normed_head=False,
                              hidden_units=recipe.hidden_units, name=f"g{i}")
    load_g_weights(member, path)
    members.append(member)
  return members[0] if len(members) == 1 else ProbabilityEnsemble(members, name="g_ensemble")


def build_trainer(cfg: ExperimentConfig, data, g_path: Optional[str], x_train, y_train):
  """The compiled `M2mTrainer` (f, the frozen g, the optimizer), built in the strategy's scope."""
  method, recipe = get_method(cfg.method), get_recipe(cfg.dataset)
  keras.utils.set_random_seed(cfg.seed)
  if cfg.mixed_precision:
    if not tf.config.list_physical_devices("GPU"):
      logging.warning("mixed_float16 on a CPU is slow; it is meant for GPUs.")
    keras.mixed_precision.set_global_policy("mixed_float16")
  strategy = make_strategy(cfg.strategy)
  with strategy.scope():
    f = build_classifier(recipe.arch, data.input_shape, data.num_classes,
                         normed_head=cfg.loss == "ldam", hidden_units=recipe.hidden_units, name="f")
    g = _build_g(cfg, recipe, data, g_path) if g_path else None
    seed_pool = None
    if cfg.seed_pool_size:
      seed_pool = fixed_seed_pool(x_train, y_train, data.num_classes, cfg.seed_pool_size, cfg.seed)
    trainer = M2mTrainer(
        f, g, class_counts=data.class_counts, loss=cfg.loss, loss_reduction=cfg.loss_reduction,
        m2m=_m2m_config(cfg, data.clip_range) if method.m2m else None,
        self_translation=cfg.self_translation, seed_pool=seed_pool,
        weight_decay=cfg.weight_decay, seed=cfg.seed,
        class_weight=_class_weight(method.class_weight, data.class_counts))
    optimizer = keras.optimizers.SGD(learning_rate=cfg.lr, momentum=cfg.momentum)
    if cfg.mixed_precision:
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    trainer.compile(optimizer=optimizer, jit_compile=resolve_jit_compile(cfg.jit_compile))
    trainer.build((None,) + tuple(data.input_shape))
    optimizer.build(f.trainable_variables)
  return trainer


def build_callbacks(cfg: ExperimentConfig, data, steps: int):
  """The run's callbacks in commit order, and its `RunCheckpoint` (the last of them)."""
  method = get_method(cfg.method)
  counts = data.class_counts
  phase1_cw = _class_weight(method.class_weight, counts)
  evaluation = cb.BalancedEvaluation(
      {"val": (data.x_val, data.y_val), "test": (data.x_test, data.y_test)}, counts,
      batch_size=cfg.eval_batch_size, select_on="val")
  checkpoint = ckpt_lib.RunCheckpoint(cfg.output_dir, evaluation, keep_epochs=cfg.keep_epochs)
  callbacks = [
      cb.PhaseSchedule(cfg.deferred_epoch if method.m2m else None,
                       weights_from=cfg.deferred_epoch, phase1_class_weight=phase1_cw,
                       phase2_class_weight=_class_weight(method.deferred_class_weight, counts)),
      cb.EpochLearningRate(cfg.lr, cfg.warmup_epochs, cfg.lr_milestones, cfg.lr_factors),
      cb.DivergenceGuard(data.num_classes),
      evaluation,
  ]
  if method.m2m:
    callbacks.append(cb.M2mStatistics(steps * cfg.batch_size))
  callbacks.append(keras.callbacks.TensorBoard(os.path.join(cfg.output_dir, "tensorboard"),
                                               write_graph=False))
  # RunCheckpoint comes LAST: its commit is the end of an epoch. A run killed
  # before it repeats that epoch, with the same batches, draws and evaluation.
  callbacks.append(checkpoint)
  return callbacks, evaluation, checkpoint


# Fields that do not shape phase 1 (before the deferred epoch): a deferred run may branch from a
# run that differs only in these (phase-1 sharing, docs/runs.md).
PHASE2_FIELDS = frozenset({
    "method", "epochs", "deferred_epoch", "init_from", "init_epoch", "beta", "lam", "gamma",
    "steps", "step_size", "start_noise", "no_reject", "accept_mode", "self_translation",
    "seed_pool_size", "n_buckets", "fold_batchnorm", "g_checkpoint"}) | out_lib.NOT_RESULT_FIELDS


def check_branch(source: dict, cfg: ExperimentConfig) -> None:
  """Refuses to branch `cfg` from a run whose phase 1 differs in anything that shapes it.

  Raises:
    ConfigError: naming the differing fields or methods.
  """
  diff = [k for k in out_lib.config_differences(source, cfg.to_json(), ExperimentConfig().to_json())
          if k not in PHASE2_FIELDS]
  if diff:
    raise ConfigError(f"cannot branch from {cfg.init_from}: its phase 1 differs in {diff}.")
  if get_method(source["method"]).phase1 != get_method(cfg.method).phase1:
    raise ConfigError(f"cannot branch {cfg.method} from {cfg.init_from}: method "
                      f"{source['method']} trains phase 1 differently.")
  for name, method, deferred in (("source", source["method"], source.get("deferred_epoch")),
                                 ("this run", cfg.method, cfg.deferred_epoch)):
    if get_method(method).deferred and deferred < cfg.init_epoch:
      raise ConfigError(f"cannot branch at epoch {cfg.init_epoch}: the {name}'s second phase "
                        f"starts earlier, at epoch {deferred}.")


def branch(cfg: ExperimentConfig, trainer, checkpoint) -> int:
  """Starts from `init_from`'s committed state after `init_epoch` epochs; returns init_epoch."""
  source = read_json(os.path.join(cfg.init_from, out_lib.FLAGS_FILE))
  if source is None:
    raise CheckpointError(f"--init_from={cfg.init_from} is not a run folder (no flags.json).")
  check_branch(source, cfg)
  record = os.path.join(cfg.init_from, ckpt_lib.CKPT_DIR, f"state-{cfg.init_epoch:04d}.json")
  if not os.path.exists(record):
    raise CheckpointError(f"{cfg.init_from} has no committed state after {cfg.init_epoch} epochs "
                          f"({record}); that run must keep it (keep_epochs).")
  state = ckpt_lib.load_state(record)
  checkpoint.set_model(trainer)
  checkpoint.apply(trainer, state)
  checkpoint.commit(cfg.init_epoch)  # our own first commit: a kill from here resumes here
  logging.info("Branched from %s after %d epochs.", cfg.init_from, cfg.init_epoch)
  return cfg.init_epoch


def start_epoch(cfg: ExperimentConfig, trainer, checkpoint) -> int:
  """Restores this run's newest commit, else branches (init_from), else 0."""
  done = checkpoint.restore(trainer)
  if done == 0 and cfg.init_from:
    done = branch(cfg, trainer, checkpoint)
  if done:
    logging.info("Resuming %s after %d of %d epochs.", cfg.output_dir, done, cfg.epochs)
  return done


def fit(cfg: ExperimentConfig, data, trainer, x_train, y_train) -> Tuple[object, object]:
  """Runs (or resumes) training; returns the `BalancedEvaluation` and the `RunCheckpoint`."""
  method = get_method(cfg.method)
  steps = pipeline.steps_per_epoch(len(x_train), cfg.batch_size, len(data.x_train))
  callbacks, evaluation, checkpoint = build_callbacks(cfg, data, steps)
  first = start_epoch(cfg, trainer, checkpoint)
  if first < cfg.epochs:
    balanced_from = {"never": None, "start": 0, "deferred": cfg.deferred_epoch}[method.balanced_from]
    train_ds = pipeline.train_dataset(
        x_train, y_train, num_classes=data.num_classes, batch_size=cfg.batch_size, seed=cfg.seed,
        epochs=cfg.epochs, start_epoch=first, balanced_from_epoch=balanced_from,
        epoch_size=len(data.x_train),
        augment=get_recipe(cfg.dataset).augment and data.input_kind == "image")
    try:
      trainer.fit(train_ds, epochs=cfg.epochs, initial_epoch=first, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=cfg.verbose)
    finally:
      if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("float32")
  if evaluation.best_weights is None:
    raise RuntimeError("Training finished without a single evaluated epoch.")
  return evaluation, checkpoint


def export_and_report(cfg: ExperimentConfig, data, trainer, evaluation, checkpoint, t0) -> dict:
  """Exports the best f, writes results.json (the run's last file), then drops the checkpoints."""
  f = trainer.f
  f.set_weights(evaluation.best_weights)
  export_dir = os.path.join(cfg.output_dir, "saved_model")
  atomic_replace_dir(lambda p: f.export(p, format="tf_saved_model", verbose=False), export_dir)
  best = evaluation.best_summaries
  results = {
      "dataset": cfg.dataset, "data_label": data.label, "method": cfg.method,
      "rebalancing": "none" if cfg.method == "erm" else cfg.method, "loss": cfg.loss,
      "seed": cfg.seed, "best_epoch": evaluation.best_epoch,
      "test_bacc": best["test"]["bacc"], "test_gm": best["test"]["gm"],
      "val_bacc": best["val"]["bacc"], "val_gm": best["val"]["gm"],
      "n_zero_recall": best["test"]["n_zero_recall"],
      "per_class_recall": best["test"]["per_class_recall"], "test": best["test"], "val": best["val"],
      "class_counts": data.class_counts.tolist(), "class_names": list(data.class_names),
      "jit_compile": bool(trainer.jit_compile), "strategy": cfg.strategy,
      "warnings": cb.chance_warnings(best["val"]["bacc"], data.num_classes),
      "seconds": time.time() - t0,  # this invocation only
      # Every epoch's wall time across all invocations (a branched run: the source's first).
      "epoch_seconds": checkpoint.epoch_seconds,
  }
  for w in results["warnings"]:
    logging.warning("%s: %s", cfg.output_dir, w)
  atomic_write_json(os.path.join(cfg.output_dir, RESULTS_FILE), results)
  checkpoint.finalize()
  return results


def run_experiment(config: ExperimentConfig, data=None) -> dict:
  """Trains one model as `config` says and returns the results dict (also in results.json).

  Args:
    config: an `ExperimentConfig` (recipe fields may be None).
    data: an optional pre-loaded `DatasetSplits` (else loaded by name).
  Returns:
    The results: dataset, method, loss, seed, test/val bACC and GM (percent),
    best_epoch, per_class_recall, the other metrics (docs/method.md#metrics) and seconds.
  Raises:
    M2mError subclasses for user errors (configuration, data, output folder,
    checkpoints, divergence); anything else is a bug.
  """
  t0 = time.time()
  cfg = config.resolved()
  validate_config(cfg)
  method = get_method(cfg.method)
  with out_lib.RunLock(cfg.output_dir):
    plan = out_lib.plan_output_dir(cfg.output_dir, cfg.to_json(), cfg.overwrite,
                                   ExperimentConfig().to_json())
    data = data if data is not None else load_data(cfg)
    needs_g = method.needs_g and not cfg.self_translation
    if needs_g and cfg.g_checkpoint:
      check_g_paths(cfg.g_checkpoint)
    plan.apply()  # inputs checked: only now may --overwrite delete anything
    g_path = (cfg.g_checkpoint or train_g(cfg, data)) if needs_g else None
    x_train, y_train = data.x_train, data.y_train
    if method.oversample == "smote":
      from m2m_tf.smote import smote  # pylint: disable=g-import-not-at-top
      x_train, y_train = smote(x_train.astype(np.float32), y_train, k_neighbors=5, seed=cfg.seed)
    trainer = build_trainer(cfg, data, g_path, x_train, y_train)
    evaluation, checkpoint = fit(cfg, data, trainer, x_train, y_train)
    return export_and_report(cfg, data, trainer, evaluation, checkpoint, t0)


def fixed_seed_pool(x, y, num_classes: int, per_class: int, seed: int):
  """The seed-pool ablation: P examples per class (all of a smaller class), fixed before training."""
  rng = np.random.default_rng(seed)
  keep = []
  for k in range(num_classes):
    idx = np.flatnonzero(y == k)
    keep.append(rng.permutation(idx)[:per_class])
  keep = np.sort(np.concatenate(keep))
  return pipeline.to_model_input(tf.constant(x[keep])).numpy(), y[keep]
