"""`run_experiment`: one training run from explicit arguments to results on disk.

Used by `m2m_tf.main` (which turns absl flags into an `ExperimentConfig`) and by
`launch/` grids. Outputs under `output_dir`:

  flags.json        the full configuration (written first; a resumed run must match it)
  history.csv       one row per epoch (loss, lr, val/test bACC and GM, M2m rates)
  tensorboard/      TensorBoard logs
  backup/           BackupAndRestore state while the run is unfinished
  best_f.weights.h5 f at the epoch with the best validation bACC
  saved_model/      that f exported as a SavedModel (`serve` endpoint: logits)
  results.json      metrics of the selected epoch (SPEC §3), written last
  g_erm/            the ERM run that trained g, when M2m had no --g_checkpoint

Every file is written atomically. An output directory that already holds
results is refused unless `overwrite=True`; an unfinished one with the same
configuration is resumed.
"""

import dataclasses
import json
import os
import shutil
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
from m2m_tf.io_utils import atomic_replace_dir, atomic_write_json, atomic_write_text
from m2m_tf.m2m.generation import M2mConfig
from m2m_tf.models.ensemble import ProbabilityEnsemble
from m2m_tf.recipes import get_recipe
from m2m_tf.training import callbacks as cb
from m2m_tf.training.methods import get_method
from m2m_tf.training.trainer import M2mTrainer

RESULTS_FILE = "results.json"


class OutputDirError(FileExistsError):
  """The output directory holds results (or another run) and overwrite is off."""


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
    return out

  def to_json(self) -> dict:
    """The configuration as a JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(self)))


def resolve_jit_compile(mode: str, arch: str) -> bool:
  """`auto`: XLA on GPU only; "true"/"false" force it.

  On this 2-core CPU XLA loses everywhere it was measured: a plain ResNet-32
  step 0.95 s against 0.54 s, an M2m ResNet-32 step ~11x slower, and for the
  MLP, whose step is too small to gain, the compile of the bucketed M2m step
  (30-50 s) makes a whole Reuters M2m run slower (18 s against 12 s with
  default kernels, `results/bench.md`). `arch` is kept for per-architecture
  policies.
  """
  del arch
  if mode in ("true", True):
    return True
  if mode in ("false", False):
    return False
  if mode != "auto":
    raise ValueError(f"jit_compile must be auto, true or false, got {mode!r}.")
  return bool(tf.config.list_physical_devices("GPU"))


def make_strategy(name: str) -> tf.distribute.Strategy:
  """"default" (one device) or "mirrored" (all local GPUs, else all logical CPUs)."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)
  raise ValueError(f"strategy must be default or mirrored, got {name!r}.")


def prepare_output_dir(output_dir: str, config_json: dict, overwrite: bool) -> bool:
  """Creates or checks the output directory. Returns True when resuming an unfinished run.

  Raises:
    OutputDirError: the directory holds results, or files of another
      configuration, and `overwrite` is False.
  """
  flags_path = os.path.join(output_dir, "flags.json")
  if os.path.isdir(output_dir) and os.listdir(output_dir):
    if overwrite:
      shutil.rmtree(output_dir)
    elif os.path.exists(os.path.join(output_dir, RESULTS_FILE)):
      raise OutputDirError(
          f"{output_dir} already holds results ({RESULTS_FILE}); pass --overwrite to replace "
          "them or choose another --output_dir.")
    elif os.path.exists(flags_path):
      with open(flags_path) as fh:
        previous = json.load(fh)
      ignore = {"overwrite", "verbose"}
      # A field added to ExperimentConfig after the run started counts as its default.
      defaults = ExperimentConfig().to_json()
      diff = sorted(k for k in set(previous) | set(config_json)
                    if k not in ignore and previous.get(k, defaults.get(k)) != config_json.get(k))
      if diff:
        raise OutputDirError(
            f"{output_dir} holds an unfinished run with a different configuration "
            f"(differs in {diff}); pass --overwrite or choose another --output_dir.")
      return True
    else:
      raise OutputDirError(f"{output_dir} is not empty and holds no run of ours; pass --overwrite "
                           "or choose another --output_dir.")
  os.makedirs(output_dir, exist_ok=True)
  atomic_write_json(flags_path, config_json)
  return False


def backup_start_epoch(backup_dir: str) -> int:
  """The epoch BackupAndRestore will resume at (0 for a fresh run)."""
  path = os.path.join(backup_dir, "training_metadata.json")
  if not os.path.exists(path):
    return 0
  with open(path) as fh:
    return int(json.load(fh)["epoch"])


def truncate_history(path: str, start_epoch: int) -> None:
  """Drops the history.csv rows of epochs >= start_epoch before a resumed run appends.

  An epoch whose row was written but whose backup was not (a kill between the
  two) is repeated on resume; without this its row would appear twice.
  """
  if not os.path.exists(path):
    return
  with open(path) as fh:
    lines = fh.read().splitlines(keepends=True)

  def keep(line):
    try:
      return int(line.split(",", 1)[0]) < start_epoch
    except ValueError:
      return False

  atomic_write_text(path, "".join(lines[:1] + [l for l in lines[1:] if keep(l)]))


def build_classifier(arch: str, input_shape, num_classes: int, *, normed_head: bool,
                     hidden_units=(256,), name: str) -> keras.Model:
  """f or g for a dataset: the recipe's architecture, with the cosine head for LDAM."""
  kwargs = {"hidden_units": tuple(hidden_units)} if arch == "mlp" else {}
  return models_lib.build_model(arch, input_shape, num_classes, normed_head=normed_head,
                                name=name, **kwargs)


def load_g_weights(g: keras.Model, path: str) -> None:
  """Loads g from a Keras `.weights.h5` file or a PyTorch-layout ResNet-32 `.npz`."""
  if not path or not os.path.exists(path):
    raise FileNotFoundError(
        f"g checkpoint not found: {path!r}. Pass --g_checkpoint=PATH to an existing "
        ".weights.h5 (or official .npz) file, or leave it unset to train g with ERM first.")
  if path.endswith(".npz"):
    models_lib.load_torch_state_dict(g, path)
  elif path.endswith(".weights.h5"):
    g.load_weights(path)
  else:
    raise ValueError(f"g checkpoint {path!r} must end in .weights.h5 or .npz.")


def _class_weight(kind: Optional[str], counts: np.ndarray) -> Optional[np.ndarray]:
  if kind is None or kind == "none":
    return None
  return losses_lib.class_weights(kind, counts)


def train_g(cfg: ExperimentConfig, data=None) -> str:
  """Trains g with ERM (CE, same recipe and seed) under output_dir/g_erm; returns its weights file.

  A finished g_erm run is reused, so resuming an M2m run does not retrain g.
  """
  g_dir = os.path.join(cfg.output_dir, "g_erm")
  weights = os.path.join(g_dir, "best_f.weights.h5")
  if os.path.exists(os.path.join(g_dir, RESULTS_FILE)) and os.path.exists(weights):
    return weights
  g_cfg = dataclasses.replace(cfg, method="erm", loss="ce", output_dir=g_dir, g_checkpoint=None,
                              overwrite=False, self_translation=False)
  run_experiment(g_cfg, data=data)
  return weights


def run_experiment(config: ExperimentConfig, data=None) -> dict:
  """Trains one model as `config` says and returns the results dict (also in results.json).

  Args:
    config: an `ExperimentConfig` (recipe fields may be None).
    data: an optional pre-loaded `DatasetSplits` (else loaded by name).
  Returns:
    The results: dataset, method, loss, seed, test/val bACC and GM (percent),
    best_epoch, per_class_recall, the other SPEC §3 metrics and seconds.
  """
  t0 = time.time()
  cfg = config.resolved()
  method = get_method(cfg.method)
  if cfg.loss not in losses_lib.LOSSES:
    raise ValueError(f"Unknown loss {cfg.loss!r}; valid: {list(losses_lib.LOSSES)}.")
  if cfg.epochs < 1 or cfg.batch_size < 1:
    raise ValueError("epochs and batch_size must be >= 1.")
  if cfg.overwrite and os.path.isdir(cfg.output_dir):
    shutil.rmtree(cfg.output_dir)
  # Refuses a directory with results before any work; True when resuming.
  resuming = prepare_output_dir(cfg.output_dir, cfg.to_json(), overwrite=False)
  if data is None:
    data = load_dataset(cfg.dataset, cfg.data_dir, **cfg.dataset_options)
  recipe = get_recipe(cfg.dataset)
  g_path = cfg.g_checkpoint
  if method.needs_g and not cfg.self_translation:
    if g_path is None:
      g_path = train_g(cfg, data)
    for path in g_path.split(","):
      if not os.path.exists(path):
        load_g_weights(None, path)  # raises a clear FileNotFoundError

  counts = data.class_counts
  num_classes = data.num_classes
  if np.any(counts == 0):
    raise ValueError(f"Classes {np.flatnonzero(counts == 0).tolist()} of {cfg.dataset} have no "
                     "training example.")
  x_train, y_train = data.x_train, data.y_train
  if method.oversample == "smote":
    from m2m_tf.smote import smote  # pylint: disable=g-import-not-at-top
    x_train, y_train = smote(x_train.astype(np.float32), y_train, k_neighbors=5, seed=cfg.seed)
  epoch_size = len(data.x_train)

  phase1_cw = _class_weight(method.class_weight, counts)
  keras.utils.set_random_seed(cfg.seed)
  if cfg.mixed_precision:
    if not tf.config.list_physical_devices("GPU"):
      logging.warning("mixed_float16 on a CPU is slow; it is meant for GPUs.")
    keras.mixed_precision.set_global_policy("mixed_float16")
  strategy = make_strategy(cfg.strategy)
  jit = resolve_jit_compile(cfg.jit_compile, recipe.arch)
  normed = cfg.loss == "ldam"
  input_shape = data.input_shape
  with strategy.scope():
    f = build_classifier(recipe.arch, input_shape, num_classes, normed_head=normed,
                         hidden_units=recipe.hidden_units, name="f")
    g = None
    if method.needs_g and not cfg.self_translation:
      members = []
      for i, path in enumerate(g_path.split(",")):
        member = build_classifier(recipe.arch, input_shape, num_classes, normed_head=False,
                                  hidden_units=recipe.hidden_units, name=f"g{i}")
        load_g_weights(member, path)
        members.append(member)
      g = members[0] if len(members) == 1 else ProbabilityEnsemble(members, name="g_ensemble")
    m2m = None
    if method.m2m:
      m2m = M2mConfig(beta=cfg.beta, lam=cfg.lam, gamma=cfg.gamma, steps=cfg.steps,
                      step_size=cfg.step_size, start_noise=cfg.start_noise,
                      clip_range=data.clip_range, reject=not cfg.no_reject,
                      accept_mode=cfg.accept_mode, n_buckets=cfg.n_buckets,
                      fold_batchnorm=cfg.fold_batchnorm)
    seed_pool = None
    if cfg.seed_pool_size:
      seed_pool = fixed_seed_pool(x_train, y_train, num_classes, cfg.seed_pool_size, cfg.seed)
    trainer = M2mTrainer(f, g, class_counts=counts, loss=cfg.loss,
                         loss_reduction=cfg.loss_reduction, m2m=m2m,
                         self_translation=cfg.self_translation, seed_pool=seed_pool,
                         weight_decay=cfg.weight_decay,
                         class_weight=phase1_cw,
                         seed=cfg.seed)
    optimizer = keras.optimizers.SGD(learning_rate=cfg.lr, momentum=cfg.momentum)
    if cfg.mixed_precision:
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    trainer.compile(optimizer=optimizer, jit_compile=jit)
    trainer.build((None,) + tuple(input_shape))

  backup_dir = os.path.join(cfg.output_dir, "backup")
  start_epoch = backup_start_epoch(backup_dir) if resuming else 0
  balanced_from = {"never": None, "start": 0, "deferred": cfg.deferred_epoch}[method.balanced_from]
  train_ds = pipeline.train_dataset(
      x_train, y_train, num_classes=num_classes, batch_size=cfg.batch_size, seed=cfg.seed,
      epochs=cfg.epochs, start_epoch=start_epoch, balanced_from_epoch=balanced_from,
      epoch_size=epoch_size, augment=recipe.augment and data.input_kind == "image")
  steps = pipeline.steps_per_epoch(len(x_train), cfg.batch_size, epoch_size)

  evaluation = cb.BalancedEvaluation(
      {"val": (data.x_val, data.y_val), "test": (data.x_test, data.y_test)}, counts,
      batch_size=cfg.eval_batch_size, select_on="val", state_dir=cfg.output_dir)
  history_path = os.path.join(cfg.output_dir, "history.csv")
  if resuming:
    truncate_history(history_path, start_epoch)
  # BackupAndRestore comes LAST: its epoch-end save is the commit point of an
  # epoch. A run killed before it repeats that epoch (deterministically, with
  # the same evaluation and CSV row); first in the list, a kill between its save
  # and BalancedEvaluation would skip that epoch's evaluation on resume.
  callbacks = [
      cb.PhaseSchedule(cfg.deferred_epoch if method.m2m else None,
                       weights_from=cfg.deferred_epoch, phase1_class_weight=phase1_cw,
                       phase2_class_weight=_class_weight(method.deferred_class_weight, counts)),
      cb.EpochLearningRate(cfg.lr, cfg.warmup_epochs, cfg.lr_milestones, cfg.lr_factors),
      cb.RaiseOnNaN(),
      evaluation,
  ]
  if method.m2m:
    callbacks.append(cb.M2mStatistics(steps * cfg.batch_size))
  callbacks += [
      keras.callbacks.CSVLogger(history_path, append=resuming),
      keras.callbacks.TensorBoard(os.path.join(cfg.output_dir, "tensorboard"), write_graph=False),
      keras.callbacks.BackupAndRestore(backup_dir),
  ]
  try:
    trainer.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps, callbacks=callbacks,
                verbose=cfg.verbose)
  finally:
    if cfg.mixed_precision:
      keras.mixed_precision.set_global_policy("float32")

  if evaluation.best_weights is None:
    raise RuntimeError("Training finished without a single evaluated epoch.")
  f.set_weights(evaluation.best_weights)
  export_dir = os.path.join(cfg.output_dir, "saved_model")
  atomic_replace_dir(lambda p: f.export(p, format="tf_saved_model", verbose=False), export_dir)
  best = evaluation.best_summaries
  results = {
      "dataset": cfg.dataset,
      "data_label": data.label,
      "method": cfg.method,
      "rebalancing": "none" if cfg.method == "erm" else cfg.method,
      "loss": cfg.loss,
      "seed": cfg.seed,
      "best_epoch": evaluation.best_epoch,
      "test_bacc": best["test"]["bacc"],
      "test_gm": best["test"]["gm"],
      "val_bacc": best["val"]["bacc"],
      "val_gm": best["val"]["gm"],
      "n_zero_recall": best["test"]["n_zero_recall"],
      "per_class_recall": best["test"]["per_class_recall"],
      "test": best["test"],
      "val": best["val"],
      "class_counts": counts.tolist(),
      "class_names": list(data.class_names),
      "jit_compile": jit,
      "strategy": cfg.strategy,
      "seconds": time.time() - t0,
  }
  atomic_write_json(os.path.join(cfg.output_dir, RESULTS_FILE), results)
  return results


def fixed_seed_pool(x, y, num_classes: int, per_class: int, seed: int):
  """The seed-pool ablation: P examples per class (all of a smaller class), fixed before training."""
  rng = np.random.default_rng(seed)
  keep = []
  for k in range(num_classes):
    idx = np.flatnonzero(y == k)
    keep.append(rng.permutation(idx)[:per_class])
  keep = np.sort(np.concatenate(keep))
  return pipeline.to_model_input(tf.constant(x[keep])).numpy(), y[keep]
