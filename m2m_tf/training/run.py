"""`run_experiment`: one training run from explicit arguments to results on disk.

Used by `m2m_tf.main` (which turns absl flags into an `ExperimentConfig`) and by
`launch/` grids. Outputs under `output_dir` (docs/runs.md):

  flags.json        the full configuration (a resumed run must match it)
  history.csv       one row per epoch (loss, lr, val/test bACC and GM, M2m rates)
  tensorboard/      TensorBoard logs
  ckpt/             crash-safe epoch checkpoints while the run is unfinished
  best_f.weights.h5 f at the epoch with the best validation bACC (+ best_state.json)
  saved_model/      that f as a SavedModel (`serve`: logits; text datasets also take raw
                    text with `serve_text`: docs/runs.md#serving-the-exported-model)
  report.md         the run's report: headline numbers and figures/*.png (`m2m_tf.report`)
  results.json      metrics of the selected epoch, written last
  g_erm/            the ERM run that trained g, when M2m had no g_checkpoint

The run holds a lock on the folder, writes every file atomically and can be
killed at any instant: the same call resumes it. An output directory that
already holds results is refused unless `overwrite=True`, which deletes only
what a run of ours wrote, and only after the inputs were checked.
"""

import dataclasses
import functools
import os
import sys
import time
from typing import Optional, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from data_prep import digest as digest_lib
from data_prep import streamed
from data_prep import user_data
from data_prep import user_recipe
from data_prep.registry import load_dataset
from m2m_tf import losses as losses_lib
from m2m_tf import report as report_lib
from m2m_tf import serving
from m2m_tf.data import pipeline
from m2m_tf.data import streaming
from m2m_tf.config import ExperimentConfig
from m2m_tf.errors import CheckpointError, ConfigError, DataError, OutputDirError
from m2m_tf.io_utils import atomic_replace_dir, atomic_write_json, read_json
from m2m_tf.models import build_classifier
from m2m_tf.models import weights_io
from m2m_tf.models.ensemble import ProbabilityEnsemble
from m2m_tf.recipes import G_SEED_OFFSET, Recipe
from m2m_tf.run_records import flatten_record, record_path
from m2m_tf.training import callbacks as cb
from m2m_tf.training import checkpoint as ckpt_lib
from m2m_tf.training import determinism
from m2m_tf.training import output_dir as out_lib
from m2m_tf.training import multi_worker as mw
from m2m_tf.training import precision as precision_lib
from m2m_tf.training.methods import get_method
from m2m_tf.training.trainer import M2mTrainer

RESULTS_FILE = out_lib.RESULTS_FILE


def validate_config(cfg: ExperimentConfig) -> None:
  """Refuses a resolved configuration that cannot give a meaningful run, before any work.

  Each field was checked when the configuration was built; this adds the rules
  that tie fields together (`ExperimentConfig.check_resolved`).

  Raises:
    ConfigError: naming the field and the rule.
  """
  cfg.check_resolved()


# Leaves that only M2m reads: two runs of methods without translation (ERM, DRS, ...) that
# differ only in these compute the same (a recipe's new M2m default must not block their resume).
M2M_ONLY_FIELDS = frozenset(ExperimentConfig().to_json()["m2m"]) | frozenset(
    {"g_checkpoint", "self_translation", "seed_pool_size"})


def comparable_config(record: dict) -> dict:
  """A flags.json (or `to_json()`) as resolved leaves {name: JSON value}, for comparisons.

  Fields a record predates take their default or the recipe's value, as they
  did when that run was made; a record that no longer reads as a configuration
  is compared as it stands.
  """
  try:
    flat = ExperimentConfig.from_json(record).resolved().flat()
  except (ConfigError, ValueError, TypeError):
    flat = flatten_record(record)
  return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}


def _translates(flat: dict) -> bool:
  try:
    return get_method(flat.get("method")).m2m
  except ValueError:
    return True  # an unknown method: compare everything


def _uses_cb_weights(flat: dict) -> bool:
  try:
    method = get_method(flat.get("method"))
  except ValueError:
    return True  # an unknown method: compare everything
  return "cb" in (method.class_weight, method.deferred_class_weight)


# Leaves that can change a result only where their predicate holds for one of the two runs.
CONDITIONAL_FIELDS = {
    "cb_beta": _uses_cb_weights,
    "la_tau": lambda flat: flat.get("loss") == "logit_adjusted",
}


def _by_content(diff: list, a: dict, b: dict) -> list:
  """Your own data count by content once both records hold its `data_digest`: the path in
  `dataset` then does not count (moved or renamed files resume). A record made before digests
  has none: its path is compared, and no digest."""
  if a.get("data_digest") and b.get("data_digest"):
    return [k for k in diff if k != "dataset"]
  return [k for k in diff if k != "data_digest"]


def differences(previous: dict, current: dict) -> list:
  """The leaves in which two configuration records differ in a way that can change the result
  (M2m's own leaves count only when one of the two runs translates, those of
  CONDITIONAL_FIELDS only where one of the two runs reads them)."""
  a, b = comparable_config(previous), comparable_config(current)
  diff = _by_content(out_lib.config_differences(a, b, {}), a, b)
  if not (_translates(a) or _translates(b)):
    diff = [k for k in diff if k not in M2M_ONLY_FIELDS]
  return [k for k in diff if k not in CONDITIONAL_FIELDS
          or CONDITIONAL_FIELDS[k](a) or CONDITIONAL_FIELDS[k](b)]


def resolve_jit_compile(mode: str) -> bool:
  """`auto`: XLA on GPU only (measured slower on CPU, compile included: BUILD.md); true/false
  force it."""
  if mode in ("true", True):
    return True
  if mode in ("false", False):
    return False
  if mode != "auto":
    raise ConfigError(f"jit_compile must be auto, true or false, got {mode!r}.")
  return bool(tf.config.list_physical_devices("GPU"))


def make_strategy(name: str) -> tf.distribute.Strategy:
  """"default" (one device), "mirrored" (all local GPUs, else all logical CPUs) or "multi_worker"
  (the process's MultiWorkerMirroredStrategy over TF_CONFIG's or Slurm's cluster)."""
  if name == "multi_worker":
    return mw.cluster_strategy()
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return _mirrored_strategy()
  raise ConfigError(f"strategy must be default, mirrored or multi_worker, got {name!r}.")


@functools.lru_cache(maxsize=None)
def _mirrored_strategy() -> tf.distribute.MirroredStrategy:
  """The process's MirroredStrategy over all local GPUs, else all logical CPUs.

  One per process: a second one starts its collective keys where the first did, and the
  runtime then mixes their collectives ("Collective instance 100 expected ... but got ...",
  when an M2m run trains g and then f in one process).
  """
  gpus = tf.config.list_logical_devices("GPU")
  devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
  return tf.distribute.MirroredStrategy(devices=devices)


def _cluster(cfg: ExperimentConfig) -> Optional[tf.distribute.Strategy]:
  """The process's multi-worker strategy under --strategy=multi_worker, else None."""
  return mw.cluster_strategy() if cfg.runtime.strategy == "multi_worker" else None


def check_g_paths(g_checkpoint: Optional[str]) -> None:
  """Raises CheckpointError unless every comma-separated g file exists and has a known format."""
  for path in (g_checkpoint or "").split(","):
    if not path or not os.path.exists(path):
      raise CheckpointError(
          f"g checkpoint not found: {path!r}. Pass --g_checkpoint=PATH to an existing "
          ".weights.h5 (or official .npz) file, or leave it unset to train g with ERM first.")
    if not path.endswith(weights_io.WEIGHT_SUFFIXES):
      raise CheckpointError(f"g checkpoint {path!r} must end in .weights.h5 or .npz.")


def _class_weight(kind: Optional[str], counts: np.ndarray,
                  cfg: ExperimentConfig) -> Optional[np.ndarray]:
  if kind is None or kind == "none":
    return None
  beta = {"beta": cfg.training.cb_beta} if kind == "cb" else {}
  return losses_lib.class_weights(kind, counts, **beta)


def build_loss(cfg: ExperimentConfig, counts: np.ndarray):
  """The per-example loss of the run, with its hyper-parameters from the configuration
  (balanced_softmax has none: it is logit_adjusted with tau fixed at 1)."""
  t = cfg.training
  hparams = {"ce": {}, "focal": {"gamma": t.focal_gamma},
             "ldam": {"max_margin": t.ldam_max_margin, "scale": t.ldam_scale},
             "logit_adjusted": {"tau": t.la_tau}, "balanced_softmax": {}}[t.loss]
  return losses_lib.make_loss(t.loss, counts, **hparams)


def g_config(cfg: ExperimentConfig) -> ExperimentConfig:
  """The ERM run that trains g for an M2m run: same data and recipe, seed + G_SEED_OFFSET."""
  return cfg.replace(
      method="erm", loss="ce", seed=cfg.seed + G_SEED_OFFSET,
      output_dir=os.path.join(cfg.output_dir, "g_erm"), g_checkpoint=None, overwrite=False,
      self_translation=False, init_from=None, init_epoch=None, keep_epochs=())


def train_g(cfg: ExperimentConfig, data=None) -> str:
  """Trains g with ERM under output_dir/g_erm (see `g_config`); returns its weights file.

  A finished g_erm run of the same configuration is reused, so resuming an M2m
  run does not retrain g; one of another configuration is refused.
  """
  g_cfg = g_config(cfg)
  weights = os.path.join(g_cfg.output_dir, ckpt_lib.BEST_WEIGHTS_FILE)
  strategy = _cluster(cfg)
  # Every worker of a multi-worker run follows the chief's view of g's folder (the same runs,
  # hence the same collectives, everywhere).
  if mw.chief_value(strategy, os.path.exists(os.path.join(g_cfg.output_dir, RESULTS_FILE))):
    previous = read_json(os.path.join(g_cfg.output_dir, out_lib.FLAGS_FILE)) or {}
    diff = differences(previous, g_cfg.resolved().to_json())
    if diff:
      raise OutputDirError(f"{g_cfg.output_dir} holds a g trained with another configuration "
                           f"(differs in {diff}); pass --overwrite to train it again.")
    if mw.is_chief(strategy):  # a kill between g's results.json and its clean-up leaves
      ckpt_lib.RunCheckpoint(g_cfg.output_dir, None).finalize()  # checkpoints: drop them now
    return weights
  say(cfg, f"training g with ERM (seed {g_cfg.seed}) in {g_cfg.output_dir}")
  run_experiment(g_cfg, data=data)
  mw.chief_value(strategy, 1)  # a barrier: the others read g's weights once the chief wrote them
  return weights


def load_data(cfg: ExperimentConfig):
  """The dataset's splits; malformed data becomes a one-line DataError naming the problem."""
  try:
    if cfg.data.streaming:  # the training split stays on disk (docs/data.md#streaming-input)
      data = streamed.load_streamed(cfg.data.dataset, cfg.data.data_dir, **cfg.data.options)
    else:
      data = load_dataset(cfg.data.dataset, cfg.data.data_dir, **cfg.data.options)
  except ValueError as e:
    raise DataError(f"{cfg.data.dataset}: {e}") from None
  check_splits(cfg.data.dataset, data)
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


def _normalization(cfg: ExperimentConfig, data):
  """(mean, std) that the models standardise their input with: your own data only.

  They are standardised inside the model (per feature, or per channel for images): the data,
  M2m's clip range and the exported model stay in the user's units. Computed once per trainer
  (a pass over the training set), for f and every g alike.
  """
  return user_recipe.model_normalization(cfg.data.dataset, data)


def _classifier(cfg: ExperimentConfig, data, normalization, *, normed_head: bool,
                name: str) -> keras.Model:
  return build_classifier(cfg.model.arch, data.input_shape, data.num_classes,
                          normed_head=normed_head, hidden_units=cfg.model.hidden_units, name=name,
                          normalization=normalization)


def _build_g(cfg: ExperimentConfig, data, g_path: str, normalization):
  members = []
  for i, path in enumerate(g_path.split(",")):
    member = _classifier(cfg, data, normalization, normed_head=False, name=f"g{i}")
    weights_io.load_weights(member, path, data.name)
    members.append(member)
  return members[0] if len(members) == 1 else ProbabilityEnsemble(members, name="g_ensemble")


def _optimizer(cfg: ExperimentConfig):
  optimizer = keras.optimizers.SGD(learning_rate=cfg.schedule.lr, momentum=cfg.schedule.momentum)
  return precision_lib.wrap_optimizer(optimizer, cfg.runtime.precision)


def build_trainer(cfg: ExperimentConfig, data, g_path: Optional[str], x_train, y_train):
  """The compiled `M2mTrainer` (f, the frozen g, the optimizer), built in the strategy's scope."""
  method, t = get_method(cfg.training.method), cfg.training
  keras.utils.set_random_seed(cfg.seed)
  strategy = make_strategy(cfg.runtime.strategy)
  with strategy.scope(), precision_lib.precision_scope(cfg.runtime.precision):
    optimizer = _optimizer(cfg)
    normalization = _normalization(cfg, data)
    f = _classifier(cfg, data, normalization, normed_head=t.loss == "ldam", name="f")
    g = _build_g(cfg, data, g_path, normalization) if g_path else None
    seed_pool = None
    if t.seed_pool_size:
      seed_pool = fixed_seed_pool(x_train, y_train, data.num_classes, t.seed_pool_size, cfg.seed)
    trainer = M2mTrainer(
        f, g, class_counts=data.class_counts, loss=build_loss(cfg, data.class_counts),
        loss_reduction=t.loss_reduction,
        m2m=dataclasses.replace(cfg.m2m, clip_range=data.clip_range) if method.m2m else None,
        self_translation=t.self_translation, seed_pool=seed_pool,
        weight_decay=cfg.schedule.weight_decay, seed=cfg.seed,
        class_weight=_class_weight(method.class_weight, data.class_counts, cfg))
    trainer.compile(optimizer=optimizer, jit_compile=resolve_jit_compile(cfg.runtime.jit_compile))
    trainer.build((None,) + tuple(data.input_shape))
    optimizer.build(f.trainable_variables)
  return trainer


def build_callbacks(cfg: ExperimentConfig, data, steps: int):
  """The run's callbacks in commit order, and its `RunCheckpoint` (the last of them)."""
  method, s = get_method(cfg.training.method), cfg.schedule
  counts = data.class_counts
  evaluation = cb.BalancedEvaluation(
      {"val": (data.x_val, data.y_val), "test": (data.x_test, data.y_test)}, counts,
      batch_size=s.eval_batch_size, select_on="val", every_epoch=s.test_every_epoch)
  checkpoint = ckpt_lib.RunCheckpoint(cfg.output_dir, evaluation,
                                      keep_epochs=cfg.runtime.keep_epochs)
  callbacks = [
      cb.PhaseSchedule(s.deferred_epoch if method.m2m else None,
                       weights_from=s.deferred_epoch,
                       phase1_class_weight=_class_weight(method.class_weight, counts, cfg),
                       phase2_class_weight=_class_weight(method.deferred_class_weight, counts,
                                                         cfg)),
      cb.EpochLearningRate(s.lr, s.warmup_epochs, s.lr_milestones, s.lr_factors,
                           rescale_momentum=s.momentum_form == "pytorch"),
      cb.DivergenceGuard(data.num_classes),
      evaluation,
  ]
  if method.m2m:
    callbacks.append(cb.M2mStatistics(steps * s.batch_size))
  callbacks.append(keras.callbacks.TensorBoard(os.path.join(cfg.output_dir, "tensorboard"),
                                               write_graph=False))
  # RunCheckpoint comes LAST: its commit is the end of an epoch. A run killed
  # before it repeats that epoch, with the same batches, draws and evaluation.
  callbacks.append(checkpoint)
  return callbacks, evaluation, checkpoint


# Fields that do not shape phase 1 (before the deferred epoch): a deferred run may branch from a
# run that differs only in these (phase-1 sharing, docs/runs.md): the whole M2m section, and
# these leaves.
PHASE2_FIELDS = frozenset({"method", "epochs", "deferred_epoch", "init_from", "init_epoch"}
                          ) | M2M_ONLY_FIELDS | out_lib.NOT_RESULT_FIELDS


def steady_lr_at(src: dict, epoch: int) -> bool:
  """Whether a run (`src`: its `comparable_config`) kept its lr from the end of its warm-up up
  to `epoch` completed epochs.

  Then SGD's two momentum forms hold the same buffer up to the factor -lr (the last lr change,
  the warm-up's, has faded from it as momentum^steps), so a run may go on from that state in the
  other form (docs/runs.md#phase-1-sharing-branching).
  """
  return src["warmup_epochs"] < epoch and all(m >= epoch for m in src["lr_milestones"] or ())


def check_branch(source: dict, cfg: ExperimentConfig) -> None:
  """Refuses to branch `cfg` from a run whose phase 1 differs in anything that shapes it.

  The momentum form may differ at an epoch of steady lr (`steady_lr_at`): the branched run's
  first `init_epoch` epochs are then the source's, in the source's form (its flags.json).

  Raises:
    ConfigError: naming the differing fields or methods.
  """
  diff = [k for k in differences(source, cfg.to_json()) if k not in PHASE2_FIELDS]
  init_from, init_epoch = cfg.runtime.init_from, cfg.runtime.init_epoch
  src = comparable_config(source)
  if "cb" not in (get_method(src["method"]).class_weight,
                   get_method(cfg.training.method).class_weight):
    diff = [k for k in diff if k != "cb_beta"]  # CB weights act in phase 2 only (DRW), or never
  if "momentum_form" in diff and steady_lr_at(src, init_epoch):
    diff.remove("momentum_form")
  if diff:
    hint = (" (momentum_form may differ only at an epoch the source's lr has been steady since "
            "its warm-up)" if "momentum_form" in diff else "")
    raise ConfigError(f"cannot branch from {init_from}: its phase 1 differs in {diff}{hint}.")
  if get_method(src["method"]).phase1 != get_method(cfg.training.method).phase1:
    raise ConfigError(f"cannot branch {cfg.training.method} from {init_from}: method "
                      f"{src['method']} trains phase 1 differently.")
  for name, method, deferred in (
      ("source", src["method"], src["deferred_epoch"]),
      ("this run", cfg.training.method, cfg.schedule.deferred_epoch)):
    if get_method(method).deferred and deferred < init_epoch:
      raise ConfigError(f"cannot branch at epoch {init_epoch}: the {name}'s second phase "
                        f"starts earlier, at epoch {deferred}.")


def branch(cfg: ExperimentConfig, trainer, checkpoint) -> int:
  """Starts from `init_from`'s committed state after `init_epoch` epochs; returns init_epoch."""
  init_from, init_epoch = cfg.runtime.init_from, cfg.runtime.init_epoch
  source = read_json(os.path.join(init_from, out_lib.FLAGS_FILE))
  if source is None:
    raise CheckpointError(f"--init_from={init_from} is not a run folder (no flags.json).")
  check_branch(source, cfg)
  record = record_path(init_from, init_epoch)
  if not os.path.exists(record):
    raise CheckpointError(f"{init_from} has no committed state after {init_epoch} epochs "
                          f"({record}); that run must keep it (keep_epochs).")
  state = ckpt_lib.load_state(record)
  checkpoint.set_model(trainer)
  checkpoint.apply(trainer, state)
  checkpoint.commit(init_epoch)  # our own first commit: a kill from here resumes here
  say(cfg, f"branched from {init_from} after {init_epoch} epochs")
  return init_epoch


def start_epoch(cfg: ExperimentConfig, trainer, checkpoint) -> int:
  """Restores this run's newest commit, else branches (init_from), else 0."""
  done = checkpoint.restore(trainer)
  if done == 0 and cfg.runtime.init_from:
    done = branch(cfg, trainer, checkpoint)
  if done:
    say(cfg, f"resuming {cfg.output_dir} after {done} of {cfg.schedule.epochs} epochs")
  return done


def say(cfg: ExperimentConfig, message: str) -> None:
  """A progress line on stderr for runs with verbose > 0 (what is trained, where)."""
  if cfg.runtime.verbose:
    print(f"m2m_tf: {message}", file=sys.stderr, flush=True)


def _describe(cfg: ExperimentConfig) -> str:
  t, method = cfg.training, get_method(cfg.training.method)
  name = f"{t.loss.upper()}-{t.method.upper()}" if t.method != "erm" else t.loss.upper()
  if method.deferred:
    name += f" (phase 2 from epoch {cfg.schedule.deferred_epoch + 1})"
  if cfg.runtime.precision != "float32":
    name += f" in {cfg.runtime.precision}"
  return name


def _train_dataset(cfg: ExperimentConfig, data, x_train, y_train, first: int,
                   input_context=None):
  method, s = get_method(cfg.training.method), cfg.schedule
  balanced_from = {"never": None, "start": 0, "deferred": s.deferred_epoch}[method.balanced_from]
  kwargs = dict(num_classes=data.num_classes, batch_size=s.batch_size, seed=cfg.seed,
                epochs=s.epochs, start_epoch=first, balanced_from_epoch=balanced_from,
                epoch_size=len(data.x_train),
                augment=cfg.model.augment and data.input_kind == "image",
                input_context=input_context)
  if data.train_source is not None:  # --streaming: the same batches, read from disk
    return streaming.train_dataset(data.train_source, **kwargs)
  return pipeline.train_dataset(x_train, y_train, **kwargs)


def _worker_prints(cfg: ExperimentConfig, data, g_path: Optional[str]) -> dict:
  """What must agree between the workers of a run (`mw.worker_prints`): the configuration
  without folders, paths and verbosity (your own data's path neither: its digest counts), the
  data's content digest and g's files' sha256."""
  skip = out_lib.NOT_RESULT_FIELDS | out_lib.PATH_FIELDS | {"data_digest"}
  if cfg.data.data_digest:
    skip |= {"dataset"}
  config = {k: v for k, v in comparable_config(cfg.to_json()).items() if k not in skip}
  return mw.worker_prints(config, cfg.data.data_digest or digest_lib.data_digest(data), g_path)


def _train(cfg: ExperimentConfig, data, trainer, x_train, y_train, first: int, last: int,
           callbacks, steps: int) -> None:
  """Trains epochs [first, last): `trainer.fit`, or under --strategy=multi_worker the
  distributed loop (fit fails there), which drives the same train_step and callbacks."""
  s, strategy = cfg.schedule, trainer.distribute_strategy
  if mw.is_multi_worker(strategy):
    # Each worker reads its shard of every global batch: together, the single-host stream.
    dataset = mw.distribute(strategy, lambda ctx: _train_dataset(
        cfg, data, x_train, y_train, first, input_context=ctx), s.batch_size)
    mw.fit_distributed(trainer, dataset, epochs=last, initial_epoch=first,
                       steps_per_epoch=steps, callbacks=callbacks, verbose=cfg.runtime.verbose)
    return
  # The dataset is shuffled by our pipeline (seeded per epoch); fit must not try.
  # The pipeline still spans the whole schedule: the batches of an epoch do not depend on
  # where this invocation stops.
  trainer.fit(_train_dataset(cfg, data, x_train, y_train, first), epochs=last,
              initial_epoch=first, steps_per_epoch=steps, callbacks=callbacks,
              verbose=cfg.runtime.verbose, shuffle=False)


def stop_epoch(cfg: ExperimentConfig) -> int:
  """The epoch this invocation trains up to: the schedule's end, or --stop_after's if earlier."""
  return min(cfg.schedule.epochs, cfg.runtime.stop_after or cfg.schedule.epochs)


def fit(cfg: ExperimentConfig, data, trainer, x_train, y_train,
        shared_dir: Optional[str] = None, g_path: Optional[str] = None) -> Tuple[object, object]:
  """Runs (or resumes) training; returns the `BalancedEvaluation` and the `RunCheckpoint`.

  `shared_dir`: where the chief of a multi-worker run commits (default `cfg.output_dir`); the
  other workers start from its newest commit. `g_path`: g's file(s), whose sha256 the workers
  compare.
  """
  s = cfg.schedule
  steps = pipeline.steps_per_epoch(len(x_train), s.batch_size, len(data.x_train))
  callbacks, evaluation, checkpoint = build_callbacks(cfg, data, steps)
  first = start_epoch(cfg, trainer, checkpoint)
  if mw.is_multi_worker(trainer.distribute_strategy):
    first = mw.follow_chief(trainer, checkpoint, first, shared_dir or cfg.output_dir,
                            _worker_prints(cfg, data, g_path))
  last = stop_epoch(cfg)
  if first < last:
    say(cfg, f"training {_describe(cfg)}, epochs {first + 1}-{last} in {cfg.output_dir}")
    _train(cfg, data, trainer, x_train, y_train, first, last, callbacks, steps)
  if last == s.epochs and evaluation.best_weights is None:
    raise RuntimeError("Training finished without a single evaluated epoch.")
  return evaluation, checkpoint


def _loss_record(loss_fn) -> dict:
  """The trained loss's hyper-parameters for results.json (N_k is recorded on its own); an
  alias names the loss it is (balanced_softmax: logit_adjusted, tau 1)."""
  hparams = {k: v for k, v in getattr(loss_fn, "hparams", {}).items() if k != "class_counts"}
  alias = losses_lib.LOSS_ALIASES.get(getattr(loss_fn, "name", None))
  return dict(hparams, alias_of=alias[0]) if alias else hparams


def _results(cfg: ExperimentConfig, data, trainer, evaluation, checkpoint, t0) -> dict:
  best, t = evaluation.best_summaries, cfg.training
  return {
      "dataset": cfg.data.dataset, "data_label": data.label, "method": t.method,
      "rebalancing": "none" if t.method == "erm" else t.method, "loss": t.loss,
      "loss_hparams": _loss_record(trainer.loss_fn),
      "seed": cfg.seed, "output_dir": cfg.output_dir, "best_epoch": evaluation.best_epoch,
      "test_bacc": best["test"]["bacc"], "test_gm": best["test"]["gm"],
      "val_bacc": best["val"]["bacc"], "val_gm": best["val"]["gm"],
      "n_zero_recall": best["test"]["n_zero_recall"],
      "per_class_recall": best["test"]["per_class_recall"],
      "test": best["test"], "val": best["val"],
      "class_counts": data.class_counts.tolist(), "class_names": list(data.class_names),
      "clip_range": None if data.clip_range is None else list(data.clip_range),
      "jit_compile": bool(trainer.jit_compile), "strategy": cfg.runtime.strategy,
      "precision": cfg.runtime.precision,
      "warnings": cb.chance_warnings(best["val"]["bacc"], data.num_classes),
      "seconds": time.time() - t0,  # this invocation only
      # Every epoch's wall time across all invocations (a branched run: the source's first).
      "epoch_seconds": checkpoint.epoch_seconds,
      "epoch_machines": checkpoint.epoch_machines,  # where each epoch ran (None: not recorded)
  }


def write_report(cfg: ExperimentConfig, data, trainer, results: dict) -> None:
  """The run's report (figures/, report.md: `m2m_tf.report`) with f at its best weights.

  Drawn before results.json, so a run killed before its end gets it when it ends. A failure to
  draw is a warning, not a lost run: `python -m m2m_tf.report` draws it again.
  """
  if not mw.is_chief(trainer.distribute_strategy):
    return  # the other workers' folders are private and deleted
  try:
    report_lib.write_report(cfg.output_dir, results, report_lib.grid_models(trainer, data))
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("%s: no report (%s: %s); run python -m m2m_tf.report %s", cfg.output_dir,
                    type(e).__name__, e, cfg.output_dir, exc_info=True)


def export_and_report(cfg: ExperimentConfig, data, trainer, evaluation, checkpoint, t0) -> dict:
  """Exports the best f, writes the report, then results.json (the run's last file), then drops
  the checkpoints."""
  f = trainer.f
  f.set_weights(evaluation.best_weights)
  export_dir = os.path.join(cfg.output_dir, "saved_model")
  if cfg.runtime.export:
    # Text datasets also get a raw-text endpoint (docs/runs.md#serving-the-exported-model).
    atomic_replace_dir(lambda p: serving.export_saved_model(
        f, p, data.text_features, class_names=data.class_names), export_dir)
  results = _results(cfg, data, trainer, evaluation, checkpoint, t0)
  for w in results["warnings"]:
    logging.warning("%s: %s", cfg.output_dir, w)
  write_report(cfg, data, trainer, results)
  atomic_write_json(os.path.join(cfg.output_dir, RESULTS_FILE), results)
  checkpoint.finalize()
  return results


def _needs_g(cfg: ExperimentConfig) -> bool:
  return get_method(cfg.training.method).needs_g and not cfg.training.self_translation


def _obtain_g(cfg: ExperimentConfig, data) -> Optional[str]:
  """g's weights file(s): the given checkpoint, a g trained now with ERM, or None (no g)."""
  if not _needs_g(cfg):
    return None
  return cfg.training.g_checkpoint or train_g(cfg, data)


def _training_set(cfg: ExperimentConfig, data):
  x_train, y_train = data.x_train, data.y_train
  if get_method(cfg.training.method).oversample == "smote":
    from m2m_tf.smote import smote  # pylint: disable=g-import-not-at-top
    x_train, y_train = smote(x_train.astype(np.float32), y_train, k_neighbors=5, seed=cfg.seed)
  return x_train, y_train


def suggested_recipe(data, epochs: Optional[int] = None) -> Recipe:
  """The recipe suggested for your own data; with `epochs` given, its epoch-valued fields
  (warm-up, lr milestones, deferral) keep their fraction of training (deferral at 80%)."""
  r = Recipe(**user_data.suggest_recipe(data))
  if epochs is None or epochs == r.epochs:
    return r
  scale = lambda e: int(round(e * epochs / r.epochs))  # pylint: disable=unnecessary-lambda-assignment
  return dataclasses.replace(r, epochs=epochs, warmup_epochs=scale(r.warmup_epochs),
                             milestones=tuple(scale(m) for m in r.milestones),
                             deferred_epoch=min(scale(r.deferred_epoch), epochs - 1))


def run_experiment(config: ExperimentConfig, data=None) -> dict:
  """Trains one model as `config` says and returns the results dict (also in results.json).

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
  # Before TensorFlow's first op, as the cluster below: how many ops may run at once.
  determinism.limit_inter_op_threads(config.runtime.inter_op_threads)
  # A multi-worker strategy must exist before TensorFlow's first op (it configures the process's
  # collectives): made first, so a missing cluster is also one line before any work.
  strategy = _cluster(config)
  if user_data.is_spec(config.data.dataset):
    # Your own data: the recipe is suggested from the data, so they are read first.
    data = data if data is not None else load_data(config)
    cfg = config.resolved(suggested_recipe(data, config.schedule.epochs))
    cfg = cfg.replace(data_digest=digest_lib.data_digest(data))  # its content, in flags.json
  else:
    cfg = config.resolved()
  validate_config(cfg)
  # Multi-worker: the chief writes cfg.output_dir, the other workers a private folder.
  with mw.own_output_dir(strategy, cfg.output_dir) as own:
    results = _run_in(cfg, cfg if own == cfg.output_dir else cfg.replace(output_dir=own), data,
                      t0)
  return dict(results, output_dir=cfg.output_dir)


def _run_in(shared: ExperimentConfig, cfg: ExperimentConfig, data, t0: float) -> dict:
  """`run_experiment`'s work in this process's folder `cfg.output_dir`: `shared.output_dir`,
  except on the non-chief workers of a multi-worker run (docs/distributed.md)."""
  with out_lib.RunLock(cfg.output_dir):
    plan = out_lib.plan_output_dir(cfg.output_dir, cfg.to_json(), cfg.runtime.overwrite,
                                   lambda previous: differences(previous, cfg.to_json()))
    data = data if data is not None else load_data(cfg)
    if cfg.training.g_checkpoint and _needs_g(cfg):
      check_g_paths(cfg.training.g_checkpoint)
    plan.apply()  # inputs checked: only now may --overwrite delete anything
    g_path = _obtain_g(shared, data)  # g's run is in the shared folder, as --output_dir/g_erm
    x_train, y_train = _training_set(cfg, data)
    trainer = build_trainer(cfg, data, g_path, x_train, y_train)
    evaluation, checkpoint = fit(cfg, data, trainer, x_train, y_train, shared.output_dir, g_path)
    if stop_epoch(cfg) < cfg.schedule.epochs:  # --stop_after: unfinished, no results.json
      done = len(checkpoint.epoch_seconds)
      say(cfg, f"stopped after {done} of {cfg.schedule.epochs} epochs (--stop_after)")
      return {"stopped_after": done, "epochs": cfg.schedule.epochs}
    return export_and_report(cfg, data, trainer, evaluation, checkpoint, t0)


def fixed_seed_pool(x, y, num_classes: int, per_class: int, seed: int):
  """The seed-pool ablation: P examples per class (all of a smaller class), fixed before
  training."""
  rng = np.random.default_rng(seed)
  keep = []
  for k in range(num_classes):
    idx = np.flatnonzero(y == k)
    keep.append(rng.permutation(idx)[:per_class])
  keep = np.sort(np.concatenate(keep))
  return pipeline.to_model_input(tf.constant(x[keep])).numpy(), y[keep]
