"""What a run trains with, built from its configuration: f, g, loss, optimizer, callbacks."""

import dataclasses
import os
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from data_prep import registry
from m2m_tf import losses as losses_lib
from m2m_tf.config import ExperimentConfig
from m2m_tf.data import pipeline
from m2m_tf.errors import CheckpointError, ConfigError
from m2m_tf.models import build_classifier
from m2m_tf.models import weights_io
from m2m_tf.models.ensemble import ProbabilityEnsemble
from m2m_tf.training import callbacks as cb
from m2m_tf.training import checkpoint as ckpt_lib
from m2m_tf.training import precision as precision_lib
from m2m_tf.training.methods import get_method
from m2m_tf.training.runner import make_strategy
from m2m_tf.training.trainer import M2mTrainer


def resolve_jit_compile(mode) -> bool:
  """--jit_compile: `auto` is XLA on GPU only (BUILD.md: slower on CPU); true/false force it.

  Raises:
    ConfigError: another value.
  """
  if mode in ("true", True):
    return True
  if mode in ("false", False):
    return False
  if mode != "auto":
    raise ConfigError(f"jit_compile must be auto, true or false, got {mode!r}.")
  return bool(tf.config.list_physical_devices("GPU"))


def check_g_paths(g_checkpoint: Optional[str]) -> None:
  """Raises CheckpointError unless every comma-separated g file exists and has a known format."""
  for path in (g_checkpoint or "").split(","):
    if not path or not os.path.exists(path):
      raise CheckpointError(
          f"g checkpoint not found: {path!r}. Pass --g_checkpoint=PATH to an existing "
          ".weights.h5 (or official .npz) file, or leave it unset to train g with ERM first.")
    if not path.endswith(weights_io.WEIGHT_SUFFIXES):
      raise CheckpointError(f"g checkpoint {path!r} must end in .weights.h5 or .npz.")


def class_weight(kind: Optional[str], counts: np.ndarray,
                 cfg: ExperimentConfig) -> Optional[np.ndarray]:
  """Per-class loss weights of `kind` ("cb", ... or None/"none": no weights) for `counts`."""
  if kind is None or kind == "none":
    return None
  beta = {"beta": cfg.training.cb_beta} if kind == "cb" else {}
  return losses_lib.class_weights(kind, counts, **beta)


def build_loss(cfg: ExperimentConfig, counts: np.ndarray):
  """The per-example loss of the run, with its hyper-parameters from the configuration."""
  t = cfg.training
  hparams = {"ce": {}, "focal": {"gamma": t.focal_gamma},
             "ldam": {"max_margin": t.ldam_max_margin, "scale": t.ldam_scale},
             "logit_adjusted": {"tau": t.la_tau}, "balanced_softmax": {}}[t.loss]
  return losses_lib.make_loss(t.loss, counts, **hparams)


def normalization(cfg: ExperimentConfig, data):
  """(mean, std) that the models standardise their input with (your own data only; else None).

  Done inside the model, so the data, M2m's clip range and the exported model stay in the user's
  units (docs/data.md#your-own-data).
  """
  return registry.model_normalization(cfg.data.dataset, data)


def classifier(cfg: ExperimentConfig, data, norm, *, normed_head: bool,
               name: str) -> keras.Model:
  """A fresh classifier of the configured architecture for `data`, standardising with `norm`."""
  return build_classifier(cfg.model.arch, data.input_shape, data.num_classes,
                          normed_head=normed_head, hidden_units=cfg.model.hidden_units, name=name,
                          normalization=norm)


def build_g(cfg: ExperimentConfig, data, g_path: str, norm) -> keras.Model:
  """g from its comma-separated file(s): one model, or the ensemble of their probabilities."""
  members = []
  for i, path in enumerate(g_path.split(",")):
    member = classifier(cfg, data, norm, normed_head=False, name=f"g{i}")
    weights_io.load_weights(member, path, data.name)
    members.append(member)
  return members[0] if len(members) == 1 else ProbabilityEnsemble(members, name="g_ensemble")


def optimizer(cfg: ExperimentConfig) -> keras.optimizers.Optimizer:
  """SGD with the run's lr and momentum, wrapped for its --precision."""
  sgd = keras.optimizers.SGD(learning_rate=cfg.schedule.lr, momentum=cfg.schedule.momentum)
  return precision_lib.wrap_optimizer(sgd, cfg.runtime.precision)


def fixed_seed_pool(x, y, num_classes: int, per_class: int, seed: int):
  """The seed-pool ablation: (x, y) of P examples per class (all of a smaller class), fixed
  before training."""
  rng = np.random.default_rng(seed)
  keep = []
  for k in range(num_classes):
    idx = np.flatnonzero(y == k)
    keep.append(rng.permutation(idx)[:per_class])
  keep = np.sort(np.concatenate(keep))
  return pipeline.to_model_input(tf.constant(x[keep])).numpy(), y[keep]


def build_trainer(cfg: ExperimentConfig, data, g_path: Optional[str], x_train, y_train):
  """The compiled, built `M2mTrainer` (f, the frozen g from `g_path`, the optimizer), made in the
  scope of the run's strategy after seeding Keras with `cfg.seed`."""
  method, t = get_method(cfg.training.method), cfg.training
  keras.utils.set_random_seed(cfg.seed)
  strategy = make_strategy(cfg.runtime.strategy)
  with strategy.scope(), precision_lib.precision_scope(cfg.runtime.precision):
    opt = optimizer(cfg)
    norm = normalization(cfg, data)
    f = classifier(cfg, data, norm, normed_head=t.loss == "ldam", name="f")
    g = build_g(cfg, data, g_path, norm) if g_path else None
    seed_pool = None
    if t.seed_pool_size:
      seed_pool = fixed_seed_pool(x_train, y_train, data.num_classes, t.seed_pool_size, cfg.seed)
    trainer = M2mTrainer(
        f, g, class_counts=data.class_counts, loss=build_loss(cfg, data.class_counts),
        loss_reduction=t.loss_reduction,
        m2m=dataclasses.replace(cfg.m2m, clip_range=data.clip_range) if method.m2m else None,
        self_translation=t.self_translation, seed_pool=seed_pool,
        weight_decay=cfg.schedule.weight_decay, seed=cfg.seed,
        class_weight=class_weight(method.class_weight, data.class_counts, cfg))
    trainer.compile(optimizer=opt, jit_compile=resolve_jit_compile(cfg.runtime.jit_compile))
    trainer.build((None,) + tuple(data.input_shape))
    opt.build(f.trainable_variables)
  return trainer


def build_callbacks(cfg: ExperimentConfig, data, steps: int):
  """The run's callbacks in commit order, its `BalancedEvaluation` and its `RunCheckpoint`."""
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
                       phase1_class_weight=class_weight(method.class_weight, counts, cfg),
                       phase2_class_weight=class_weight(method.deferred_class_weight, counts,
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
