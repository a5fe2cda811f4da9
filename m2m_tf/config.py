"""One source of configuration: `ExperimentConfig`, nested frozen dataclasses (data, model,
schedule, training, m2m, runtime) whose fields carry default, help and rule, checked when built;
the flags are generated from them. None means the recipe's value (`resolved()`). No TensorFlow.
See docs/runs.md#configuration.
"""

import dataclasses
import math
import os
from typing import Dict, Mapping, Optional, Tuple

from data_prep import registry
from data_prep.recipes import Recipe
from m2m_tf.config_fields import Section, at_least, check_field, option
from m2m_tf.errors import ConfigError
from m2m_tf.m2m.params import M2mConfig
from m2m_tf.run_records import flatten_record

# The ERM run that trains g for the M2m run with seed s uses seed s + G_SEED_OFFSET: g must be a
# classifier trained independently of f (docs/method.md#the-two-classifiers-f-and-g).
G_SEED_OFFSET = 1000

# The names the loss, architecture and acceptance-mode registries accept; tests check that they
# equal the registries (which import TensorFlow, so they are not imported here).
LOSS_NAMES = ("ce", "focal", "ldam", "logit_adjusted", "balanced_softmax")
ARCH_NAMES = ("mlp", "resnet32", "preact_resnet18", "resnet50")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Leaves whose default changed: a record made before a leaf existed was trained with the value
# here, not with today's default (`ExperimentConfig.from_json`).
PREDATED_VALUES = {"momentum_form": "keras", "start_noise_mode": "per_sample", "cb_beta": 0.9999}


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
  """Which dataset, where its raw files are, and the builder's options."""

  dataset: str = option(
      "reuters", "A dataset name (data_prep.registry: reuters, twitter, synthetic_lt, "
      "cifar10_jpeg_lt, ...; its recipe sets the defaults) or your own data as npz:PATH, "
      "csv:PATH, folder:DIR or tfds:NAME[:CONFIG] (defaults suggested from the data; "
      "docs/data.md#your-own-data).",
      rule=(registry.is_dataset, f"must be one of {registry.dataset_choices()}"))
  data_dir: Optional[str] = option(None, "Raw data root. Default: $M2M_DATA_DIR, else "
                                   "../shared/data.")
  imbalance_ratio: Optional[int] = option(None, "N_max / N_min of the long tail: CIFAR-LT (100 or "
                                          "10), or your own balanced data made long-tailed.",
                                          rule=at_least(1), builder=True)
  imbalance_profile: Optional[str] = option(None, "Your own data: the long tail's shape, exp "
                                            "(CIFAR-LT's rule, default) or step.",
                                            choices=("exp", "step"), builder=True)
  label_column: Optional[str] = option(None, "csv: the label column, by name or index (default: "
                                       "the last).", builder=True)
  val_fraction: Optional[float] = option(None, "Your own data without a validation split: the "
                                         "stratified hold-out per class (default 0.1).",
                                         rule=(lambda v: 0 < v < 1, "must be in (0, 1)"),
                                         builder=True)
  test_fraction: Optional[float] = option(None, "Your own data without a test split: the "
                                          "stratified hold-out per class (default 0.2).",
                                          rule=(lambda v: 0 < v < 1, "must be in (0, 1)"),
                                          builder=True)
  image_size: Optional[int] = option(None, "folder/tfds images: the side they are resized to "
                                     "(default: kept if all equal, else from their sizes).",
                                     rule=at_least(8), builder=True)
  clip: Optional[str] = option(None, "Your own data: M2m's valid input domain, auto (images "
                               "[0, 1], features their per-feature training range), global (one "
                               "range for all features) or none.",
                               choices=("auto", "global", "none"), builder=True)
  vocab_size: Optional[int] = option(None, "Reuters: bag-of-words width (default 1000, the "
                                     "paper's; 2000 and 5000 are our ablation beyond the paper).",
                                     rule=at_least(2), builder=True)
  embeddings: Optional[str] = option(None, "Twitter: path to a `word f1 ... f50` embedding "
                                     "file.", builder=True)
  substitute: Optional[str] = option(None, "Twitter without --embeddings: the offline substitute "
                                     "embeddings, ngram (hashed character n-grams + orthography, "
                                     "default) or random (a hash-seeded vector per word).",
                                     choices=("random", "ngram"), builder=True)
  streaming: bool = option(False, "Image datasets: read training batches from a TFRecord "
                           "directory instead of holding the split in memory (the same batches; "
                           "docs/data.md#streaming-input).")
  dataset_options: Dict[str, object] = option(
      {}, "Further keyword options of the dataset's builder (from Python; e.g. synthetic_lt's "
      "n_max).", flag=False)
  data_digest: Optional[str] = option(
      None, "Your own data: the sha256 of the splits it loaded to (data_prep.digest), set by the "
      "run and recorded in flags.json; a run resumes only on data of the same content, "
      "wherever the files are (docs/data.md#your-own-data).", flag=False)

  @property
  def options(self) -> Dict[str, object]:
    """The keyword options passed to the dataset's builder (only those that are set)."""
    out = dict(self.dataset_options)
    out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["builder"] and getattr(self, f.name) is not None})
    return out


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
  """The classifier f (and g): architecture, MLP widths, input augmentation."""

  arch: Optional[str] = option(None, "Architecture (recipe default): mlp, resnet32, "
                               "preact_resnet18 or resnet50.", choices=ARCH_NAMES)
  hidden_units: Optional[Tuple[int, ...]] = option(
      None, "MLP hidden layer widths (recipe default: 256).",
      rule=(lambda v: all(int(u) >= 1 for u in v), "must be positive widths"))
  augment: Optional[bool] = option(None, "Random crop + flip of image batches (recipe default: "
                                   "on for images).")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(Section):
  """SGD with momentum, coupled L2 decay, warm-up then step decay; the deferral epoch."""

  epochs: Optional[int] = option(None, "Training epochs (recipe default).", rule=at_least(1))
  batch_size: Optional[int] = option(None, "Global batch size (recipe default).",
                                     rule=at_least(2))
  lr: Optional[float] = option(None, "Peak learning rate after warm-up (recipe: 0.1).",
                               rule=(lambda v: v > 0 and math.isfinite(v), "must be > 0"))
  warmup_epochs: Optional[int] = option(None, "Linear warm-up epochs (recipe: 5).",
                                        rule=at_least(0))
  lr_milestones: Optional[Tuple[int, ...]] = option(
      None, "Epochs at which the lr is multiplied by the matching --lr_factors entry (recipe "
      "default, e.g. 10 for Reuters).", rule=(lambda v: all(m >= 0 for m in v), "must be epochs"))
  lr_factors: Optional[Tuple[float, ...]] = option(
      None, "Multipliers applied at --lr_milestones (e.g. 0.1).",
      rule=(lambda v: all(m > 0 for m in v), "must be positive"))
  weight_decay: Optional[float] = option(None, "Coupled L2 weight decay, as PyTorch SGD (recipe).",
                                         rule=at_least(0))
  momentum: float = option(0.9, "SGD momentum.", rule=(lambda v: 0 <= v < 1, "must be in [0, 1)"))
  momentum_form: str = option(
      "pytorch", "Where lr enters SGD's momentum: pytorch (b <- m b + g, w -= lr b: the official "
      "code's; the buffer is rescaled at each lr change) or keras (v <- m v - lr g, the stock "
      "optimizer, which overshoots after a large lr drop). They differ only after an lr change "
      "(docs/method.md, difference 9).", choices=("pytorch", "keras"))
  deferred_epoch: Optional[int] = option(None, "First epoch of phase 2 (M2m, DRS, DRW).",
                                         rule=at_least(0))
  eval_batch_size: int = option(1024, "Batch size of the per-epoch evaluation.", rule=at_least(1))
  test_every_epoch: bool = option(False, "Evaluate the test split every epoch (test curves); by "
                                  "default only at epochs whose validation bACC reaches or ties "
                                  "the best so far, the only ones whose test numbers can be "
                                  "reported.")

  def __post_init__(self):
    super().__post_init__()
    m, f = self.lr_milestones, self.lr_factors
    if (m is None) != (f is None) or (m is not None and len(m) != len(f)):
      raise ConfigError("lr_milestones and lr_factors must be given together, with the same "
                        "length.")


@dataclasses.dataclass(frozen=True)
class TrainingConfig(Section):
  """What is trained how: the re-balancing method, the loss, g and M2m's ablation switches."""

  method: str = option("m2m", "Re-balancing method: erm (none), rs, smote, rw, cb_rw, drs, drw "
                       "or m2m.")
  loss: str = option("ce", "Loss: ce, focal (gamma 1), ldam (cosine head), logit_adjusted "
                     "(CE on z + la_tau log prior) or balanced_softmax (the same at tau 1).",
                     choices=LOSS_NAMES)
  loss_reduction: str = option("batch", "Weighted-loss reduction: sum(w*l)/B (batch) or "
                               "sum(w*l)/sum(w) (weights).", choices=("batch", "weights"))
  focal_gamma: float = option(1.0, "Focal loss: the focusing exponent gamma (1, as the paper's "
                              "baseline).", rule=at_least(0))
  ldam_max_margin: float = option(0.5, "LDAM: the largest class margin (the smallest class's; "
                                  "0.5 officially).", rule=(lambda v: v > 0, "must be > 0"))
  ldam_scale: float = option(30.0, "LDAM: the logit scale s of the cosine head (30 officially).",
                             rule=(lambda v: v > 0, "must be > 0"))
  la_tau: float = option(1.0, "Logit-adjusted loss: tau in CE(z + tau log pi, y), pi the "
                         "training class prior (1, Menon et al.'s; balanced_softmax fixes it).",
                         rule=(lambda v: math.isfinite(v) and v >= 0, "must be a finite number "
                               ">= 0"))
  cb_beta: Optional[float] = option(
      0.9999, "Class-balanced weights (CB-RW, DRW): the effective-number beta (recipe: 0.999 for "
      "CIFAR-LT, the M2m release's; else 0.9999, LDAM-DRW's paper).",
      rule=(lambda v: 0 < v < 1, "must be in (0, 1)"))
  g_checkpoint: Optional[str] = option(
      None, "Frozen g for M2m: a .weights.h5 file, or an official PyTorch-layout ResNet-32 .npz; "
      "several comma-separated files make an ensemble g (M2m-Ensemble ablation). Unset: train g "
      "with ERM first (its own seed stream, seed + 1000).")
  self_translation: bool = option(False, "Ablation M2m-Self: translate with f instead of g.")
  seed_pool_size: int = option(0, "Ablation: seeds from a fixed pool of P per class (0: seeds "
                               "from the batch).", rule=at_least(0))

  def __post_init__(self):
    super().__post_init__()
    if self.loss == "balanced_softmax" and self.la_tau != 1.0:
      raise ConfigError(f"loss balanced_softmax is logit_adjusted at tau 1; la_tau={self.la_tau} "
                        "asks for --loss=logit_adjusted.")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig(Section):
  """How the run executes; none of these changes what a finished run computes."""

  jit_compile: str = option("auto", "XLA for the train step. auto: on for GPUs, off on CPUs "
                            "(measured slower there, compile included).",
                            choices=("auto", "true", "false"))
  precision: str = option("float32", "Compute dtype of f and g: float32, mixed_bfloat16 (CPUs "
                          "with bfloat16 units, TPUs, recent GPUs) or mixed_float16 (GPUs; dynamic "
                          "loss scaling). Variables, the loss and the M2m translation stay float32 "
                          "(docs/runs.md#precision).",
                          choices=PRECISIONS)
  strategy: str = option("default", "tf.distribute strategy: default (one device), mirrored (the "
                         "local GPUs or CPUs), multi_worker (the cluster in TF_CONFIG or the Slurm "
                         "job step; docs/distributed.md).",
                         choices=("default", "mirrored", "multi_worker"))
  overwrite: bool = option(False, "Replace an output directory that already holds results "
                           "(only files a run of ours wrote are deleted).")
  verbose: int = option(1, "Keras fit verbosity (1: progress bar per epoch, 2: one line).",
                        rule=at_least(0))
  init_from: Optional[str] = option(None, "Phase-1 sharing: start from this run folder's "
                                    "committed state after --init_epoch epochs (it must differ "
                                    "only in what phase 2 uses; docs/runs.md).")
  init_epoch: Optional[int] = option(None, "Completed epochs of --init_from's state to start "
                                     "from.", rule=at_least(1))
  keep_epochs: Tuple[int, ...] = option((), "Keep the state after these completed epochs for "
                                        "good (branch points for --init_from).",
                                        rule=(lambda v: all(e >= 1 for e in v), "must be epochs"))
  stop_after: Optional[int] = option(None, "End this invocation once this many epochs are "
                                     "committed; the run stays unfinished, to go on by the same "
                                     "command without it (a phase-1 run that only has to reach "
                                     "its branch point: docs/runs.md).", rule=at_least(1))
  inter_op_threads: int = option(
      1, "TensorFlow's inter-op threads: 1 runs a step's independent ops one at a time, which "
      "makes a seeded conv-net run bit-reproducible on one machine; 0 is TensorFlow's default "
      "(concurrent ops, last bits schedule-dependent; docs/runs.md#determinism).",
      rule=at_least(0))
  export: bool = option(True, "Export the best f as a SavedModel (saved_model/); --noexport "
                        "for runs whose results.json is all that is read (launch.tune).")

  def __post_init__(self):
    super().__post_init__()
    if (self.init_from is None) != (self.init_epoch is None):
      raise ConfigError("init_from and init_epoch must be given together.")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "schedule": ScheduleConfig,
            "training": TrainingConfig, "m2m": M2mConfig, "runtime": RuntimeConfig}


def _leaf_sections() -> Dict[str, str]:
  """Leaf field name -> the section that holds it (fields a run does not record are not leaves)."""
  out = {}
  for section, cls in SECTIONS.items():
    for f in dataclasses.fields(cls):
      if f.metadata.get("record", True):
        out[f.name] = section
  return out


def _recorded(section) -> Dict[str, object]:
  """A section's leaves. M2mConfig.clip_range is not one: a run takes it from the dataset."""
  return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
          if f.metadata.get("record", True)}


def _as_tuple(value):
  return tuple(value) if isinstance(value, list) else value


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything one run needs, by section (docs/runs.md#configuration). Build it by sections or
  from leaf names:

    ExperimentConfig.from_leaves(dataset="reuters", method="m2m", lam=0.3)

  Attributes:
    seed: seed of f's initialisation, the data order and M2m's random draws
      (g, when trained by the run, uses seed + 1000: docs/method.md).
    output_dir: the run folder (None: runs/<dataset>_<loss>_<method>_s<seed>).
  """

  seed: int = option(0, "Seed of initialisation, data order and M2m's random draws.",
                     rule=at_least(0))
  output_dir: Optional[str] = option(None, "Where results go (default runs/<dataset>_<loss>_"
                                     "<method>_s<seed>). Refused if it holds results, unless "
                                     "--overwrite.")
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
  training: TrainingConfig = dataclasses.field(
      default_factory=lambda: TrainingConfig(cb_beta=None))
  # In a run, None means the recipe's value.
  m2m: M2mConfig = dataclasses.field(default_factory=lambda: M2mConfig(
      step_size=None, beta=None, lam=None, gamma=None, start_noise_mode=None))
  runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

  def __post_init__(self):
    for name in ("seed", "output_dir"):
      check_field(name, getattr(self, name), _TOP_FIELDS[name].metadata)

  @classmethod
  def from_leaves(cls, **leaves) -> "ExperimentConfig":
    """A configuration from leaf names (`seed`, `dataset`, `lam`, ...); the rest default.

    Raises:
      ConfigError: an unknown name or a value that breaks its field's rule.
    """
    return cls().replace(**leaves)

  def replace(self, **leaves) -> "ExperimentConfig":
    """A copy with the given leaves changed (checked like a new configuration)."""
    where = _leaf_sections()
    top = {k: leaves.pop(k) for k in list(leaves) if k in _TOP_FIELDS}
    unknown = sorted(k for k in leaves if k not in where)
    if unknown:
      raise ConfigError(f"unknown configuration fields {unknown}.")
    changes = dict(top)
    for section in SECTIONS:
      part = {k: _as_tuple(v) for k, v in leaves.items() if where[k] == section}
      if part:
        changes[section] = dataclasses.replace(getattr(self, section), **part)
    return dataclasses.replace(self, **changes)

  def flat(self) -> Dict[str, object]:
    """Every leaf by its name (the form that runs compare and flags use)."""
    out = {name: getattr(self, name) for name in _TOP_FIELDS}
    for section in SECTIONS:
      out.update(_recorded(getattr(self, section)))
    return out

  def to_json(self) -> dict:
    """The configuration as a JSON-able nested dict (tuples become lists); flags.json holds it."""
    out = {name: getattr(self, name) for name in _TOP_FIELDS}
    out.update({s: _recorded(getattr(self, s)) for s in SECTIONS})
    return _jsonable(out)

  @classmethod
  def from_json(cls, record: dict) -> "ExperimentConfig":
    """Reads `to_json`'s form, or the flat flags.json of runs made before the sections.

    Unknown names (fields that no longer exist) are ignored; missing ones default, or take
    PREDATED_VALUES (what runs made before the leaf existed used); the old boolean
    `mixed_precision` reads as precision mixed_float16.
    """
    leaves = {**PREDATED_VALUES, **flatten_record(record)}
    if leaves.get("mixed_precision") and "precision" not in leaves:
      leaves["precision"] = "mixed_float16"  # the boolean flag that --precision replaced
    known = set(_leaf_sections()) | set(_TOP_FIELDS)
    return cls.from_leaves(**{k: v for k, v in leaves.items() if k in known})

  def resolved(self, recipe: Optional[Recipe] = None) -> "ExperimentConfig":
    """A copy with every None recipe field (and output_dir) filled; see `check_resolved`.

    Args:
      recipe: the `Recipe` to fill from; default the registered dataset's. Your own data
        (KIND:PATH) have none: theirs is suggested from the data (`data_prep.recipes`).
    Raises:
      ConfigError: unset recipe fields and no recipe (your own data, or a dataset without one).
    """
    flat, name = self.flat(), self.data.dataset
    missing = [k for k in _RECIPE_FIELDS if flat[k] is None]
    if recipe is None and (missing or self._wants_substitute()):
      recipe = self._registered_recipe(missing)
    changes = {k: _recipe_values(recipe)[k] for k in missing}
    if self._wants_substitute() and recipe is not None and recipe.substitute is not None:
      changes["substitute"] = recipe.substitute
    if self.output_dir is None:
      t = self.training
      changes["output_dir"] = os.path.join(
          "runs", f"{registry.file_stem(name)}_{t.loss}_{t.method}_s{self.seed}")
    return self.replace(**changes)

  def _wants_substitute(self) -> bool:
    return self.data.substitute is None and self.data.embeddings is None

  def _registered_recipe(self, missing) -> Optional[Recipe]:
    """The registered dataset's recipe (None: your own data with no field missing)."""
    name = self.data.dataset
    if registry.is_dataset(name) and name not in registry.DATASETS:
      if missing:
        raise ConfigError(f"dataset {name} has no recipe: its unset fields {missing} are "
                          "suggested from its data (run_experiment does this).")
      return None
    return registry.get_recipe(name)

  def check_resolved(self, methods: Mapping[str, object]) -> None:
    """The rules that tie fields together, on a resolved configuration.

    Args:
      methods: the known re-balancing methods by name (`m2m_tf.training.methods.METHODS`;
        each with `deferred` and `oversample`).
    Raises:
      ConfigError: naming the fields and the rule.
    """
    s, method = self.schedule, methods.get(self.training.method)
    if method is None:
      raise ConfigError(f"method must be one of {sorted(methods)}, got "
                        f"{self.training.method!r}.")
    if method.deferred and not 0 <= s.deferred_epoch < s.epochs:
      raise ConfigError(
          f"method {self.training.method} starts its second phase at deferred_epoch="
          f"{s.deferred_epoch}, which must lie in [0, epochs={s.epochs}); otherwise it would "
          f"train plain {'ERM' if self.training.loss == 'ce' else self.training.loss.upper()} "
          "under its name.")
    init_epoch = self.runtime.init_epoch
    if init_epoch is not None and not 0 < init_epoch < s.epochs:
      raise ConfigError(f"init_epoch must lie in (0, epochs={s.epochs}), got {init_epoch}.")
    if self.data.streaming and (method.oversample == "smote" or self.training.seed_pool_size):
      raise ConfigError("streaming reads the training split from disk batch by batch; SMOTE and "
                        "seed_pool_size need it in memory (drop --streaming).")


def _recipe_values(recipe: Optional[Recipe]) -> Dict[str, object]:
  """The leaves a recipe fills, by leaf name ({} for no recipe)."""
  if recipe is None:
    return {}
  r = recipe
  return dict(epochs=r.epochs, batch_size=r.batch_size, lr=r.lr, warmup_epochs=r.warmup_epochs,
              lr_milestones=tuple(r.milestones), lr_factors=tuple(r.factors),
              weight_decay=r.weight_decay, deferred_epoch=r.deferred_epoch,
              step_size=r.step_size, arch=r.arch, hidden_units=tuple(r.hidden_units),
              augment=r.augment, beta=r.beta, lam=r.lam, gamma=r.gamma,
              start_noise_mode=r.start_noise_mode, cb_beta=r.cb_beta)


# The fields a recipe fills when they are None (data_prep.recipes.Recipe).
_RECIPE_FIELDS = ("epochs", "batch_size", "lr", "warmup_epochs", "lr_milestones", "lr_factors",
                  "weight_decay", "deferred_epoch", "step_size", "arch", "hidden_units", "augment",
                  "beta", "lam", "gamma", "start_noise_mode", "cb_beta")
_TOP_FIELDS = {f.name: f for f in dataclasses.fields(ExperimentConfig) if f.name not in SECTIONS}


def _jsonable(value):
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value
