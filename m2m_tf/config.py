"""One source of configuration: nested dataclasses, checked when they are built.

An `ExperimentConfig` is what one run needs (`m2m_tf.training.run.run_experiment`):

  seed, output_dir
  data      DataConfig      dataset, data root and the builder's options
  model     ModelConfig     architecture, MLP widths, augmentation
  schedule  ScheduleConfig  epochs, batch, lr schedule, weight decay, deferral
  training  TrainingConfig  re-balancing method, loss, g, M2m ablation switches
  m2m       M2mConfig       M2m's phase-2 hyper-parameters (docs/method.md)
  runtime   RuntimeConfig   devices, XLA, output-folder policy, phase-1 sharing

Every leaf has a unique name, a default, a help text and (where there is one) a
rule, all in the field's metadata. The command-line flags are generated from
these fields (`m2m_tf.config_flags`), the run records every leaf in its
flags.json, and each section checks its own fields in `__post_init__`, so a bad
value fails when the configuration is built, before any work. A None default
means "the dataset's recipe value" (`m2m_tf.recipes`); `resolved()` fills them
and `check_resolved()` applies the rules that tie fields together.

This module imports no TensorFlow: building a configuration is cheap.
"""

import dataclasses
import math
import os
from typing import Callable, Dict, Optional, Tuple

from data_prep import user_data
from m2m_tf.errors import ConfigError
from m2m_tf.run_records import NAMED_DATA_OPTIONS, flatten_record
from m2m_tf.recipes import RECIPES, get_recipe
from m2m_tf.training.methods import METHODS, get_method

# The names the loss, architecture and acceptance-mode registries accept; tests check that they
# equal the registries (which import TensorFlow, so they are not imported here).
LOSS_NAMES = ("ce", "focal", "ldam", "logit_adjusted", "balanced_softmax")
ARCH_NAMES = ("mlp", "resnet32", "preact_resnet18", "resnet50")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
ACCEPT_MODES = ("translate", "clean", "random_label")
START_NOISE_MODES = ("official", "per_sample")
# Leaves whose default changed: a record made before a leaf existed was trained with the value
# here, not with today's default (`ExperimentConfig.from_json`).
PREDATED_VALUES = {"momentum_form": "keras", "start_noise_mode": "per_sample", "cb_beta": 0.9999}


def option(default, help_text: str, *, rule: Optional[Tuple[Callable, str]] = None,
           choices: Optional[Tuple[str, ...]] = None, flag: bool = True, record: bool = True):
  """A configuration field with its help text and its check.

  Args:
    default: the default value (immutable).
    help_text: the flag's help.
    rule: (predicate, "must ...") applied to a value that is not None.
    choices: the allowed strings (an enum flag).
    flag: False for fields that have no command-line flag.
    record: False for fields that a run does not record (it takes them from
      elsewhere, e.g. the dataset).
  """
  kind = {"default_factory": dict} if default == {} else {"default": default}
  return dataclasses.field(**kind, metadata={
      "help": help_text, "rule": rule, "choices": choices, "flag": flag, "record": record})


def _at_least(low):
  return (lambda v: v >= low, f"must be >= {low}")


def check_field(name: str, value, meta) -> None:
  """Raises ConfigError if `value` breaks the field's choices or rule (None always passes)."""
  if value is None:
    return
  choices, rule = meta.get("choices"), meta.get("rule")
  if choices is not None and value not in choices:
    raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}.")
  if rule is not None and not rule[0](value):
    raise ConfigError(f"{name} {rule[1]}, got {value!r}.")


class _Section:
  """Checks every field against its metadata after construction."""

  def __post_init__(self):
    for f in dataclasses.fields(self):
      check_field(f.name, getattr(self, f.name), f.metadata)


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
  """Which dataset, where its raw files are, and the builder's options."""

  dataset: str = option(
      "reuters", "A dataset name (data_prep.registry: reuters, twitter, synthetic_lt, "
      "cifar10_jpeg_lt, ...; its recipe sets the defaults) or your own data as npz:PATH, "
      "csv:PATH, folder:DIR or tfds:NAME[:CONFIG] (defaults suggested from the data; "
      "docs/data.md#your-own-data).",
      rule=(lambda v: v in RECIPES or user_data.is_spec(v), "must be one of "
            f"{sorted(RECIPES)} or KIND:PATH with KIND in {list(user_data.SOURCE_KINDS)}"))
  data_dir: Optional[str] = option(None, "Raw data root. Default: $M2M_DATA_DIR, else "
                                   "../shared/data.")
  imbalance_ratio: Optional[int] = option(None, "N_max / N_min of the long tail: CIFAR-LT (100 or "
                                          "10), or your own balanced data made long-tailed.",
                                          rule=_at_least(1))
  imbalance_profile: Optional[str] = option(None, "Your own data: the long tail's shape, exp "
                                            "(CIFAR-LT's rule, default) or step.",
                                            choices=("exp", "step"))
  label_column: Optional[str] = option(None, "csv: the label column, by name or index (default: "
                                       "the last).")
  val_fraction: Optional[float] = option(None, "Your own data without a validation split: the "
                                         "stratified hold-out per class (default 0.1).",
                                         rule=(lambda v: 0 < v < 1, "must be in (0, 1)"))
  test_fraction: Optional[float] = option(None, "Your own data without a test split: the "
                                          "stratified hold-out per class (default 0.2).",
                                          rule=(lambda v: 0 < v < 1, "must be in (0, 1)"))
  image_size: Optional[int] = option(None, "folder/tfds images: the side they are resized to "
                                     "(default: kept if all equal, else from their sizes).",
                                     rule=_at_least(8))
  clip: Optional[str] = option(None, "Your own data: M2m's valid input domain, auto (images "
                               "[0, 1], features their per-feature training range), global (one "
                               "range for all features) or none.",
                               choices=("auto", "global", "none"))
  vocab_size: Optional[int] = option(None, "Reuters: bag-of-words width (default 1000, the "
                                     "paper's; 2000 and 5000 are our ablation beyond the paper).",
                                     rule=_at_least(2))
  embeddings: Optional[str] = option(None, "Twitter: path to a `word f1 ... f50` embedding file.")
  substitute: Optional[str] = option(None, "Twitter without --embeddings: the offline substitute "
                                     "embeddings, ngram (hashed character n-grams + orthography, "
                                     "default) or random (a hash-seeded vector per word).",
                                     choices=("random", "ngram"))
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
    out.update({k: getattr(self, k) for k in NAMED_DATA_OPTIONS if getattr(self, k) is not None})
    return out


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
  """The classifier f (and g): architecture, MLP widths, input augmentation."""

  arch: Optional[str] = option(None, "Architecture (recipe default): mlp, resnet32, "
                               "preact_resnet18 or resnet50.", choices=ARCH_NAMES)
  hidden_units: Optional[Tuple[int, ...]] = option(
      None, "MLP hidden layer widths (recipe default: 256).",
      rule=(lambda v: all(int(u) >= 1 for u in v), "must be positive widths"))
  augment: Optional[bool] = option(None, "Random crop + flip of image batches (recipe default: "
                                   "on for images).")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(_Section):
  """SGD with momentum, coupled L2 decay, warm-up then step decay; the deferral epoch."""

  epochs: Optional[int] = option(None, "Training epochs (recipe default).", rule=_at_least(1))
  batch_size: Optional[int] = option(None, "Global batch size (recipe default).",
                                     rule=_at_least(2))
  lr: Optional[float] = option(None, "Peak learning rate after warm-up (recipe: 0.1).",
                               rule=(lambda v: v > 0 and math.isfinite(v), "must be > 0"))
  warmup_epochs: Optional[int] = option(None, "Linear warm-up epochs (recipe: 5).",
                                        rule=_at_least(0))
  lr_milestones: Optional[Tuple[int, ...]] = option(
      None, "Epochs at which the lr is multiplied by the matching --lr_factors entry (recipe "
      "default, e.g. 10 for Reuters).", rule=(lambda v: all(m >= 0 for m in v), "must be epochs"))
  lr_factors: Optional[Tuple[float, ...]] = option(
      None, "Multipliers applied at --lr_milestones (e.g. 0.1).",
      rule=(lambda v: all(m > 0 for m in v), "must be positive"))
  weight_decay: Optional[float] = option(None, "Coupled L2 weight decay, as PyTorch SGD (recipe).",
                                         rule=_at_least(0))
  momentum: float = option(0.9, "SGD momentum.", rule=(lambda v: 0 <= v < 1, "must be in [0, 1)"))
  momentum_form: str = option(
      "pytorch", "Where lr enters SGD's momentum: pytorch (b <- m b + g, w -= lr b: the official "
      "code's; the buffer is rescaled at each lr change) or keras (v <- m v - lr g, the stock "
      "optimizer, which overshoots after a large lr drop). They differ only after an lr change "
      "(docs/method.md, difference 9).", choices=("pytorch", "keras"))
  deferred_epoch: Optional[int] = option(None, "First epoch of phase 2 (M2m, DRS, DRW).",
                                         rule=_at_least(0))
  eval_batch_size: int = option(1024, "Batch size of the per-epoch evaluation.", rule=_at_least(1))
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
class TrainingConfig(_Section):
  """What is trained how: the re-balancing method, the loss, g and M2m's ablation switches."""

  method: str = option("m2m", "Re-balancing method: erm (none), rs, smote, rw, cb_rw, drs, drw "
                       "or m2m.", choices=tuple(sorted(METHODS)))
  loss: str = option("ce", "Loss: ce, focal (gamma 1), ldam (cosine head), logit_adjusted "
                     "(CE on z + la_tau log prior) or balanced_softmax (the same at tau 1).",
                     choices=LOSS_NAMES)
  loss_reduction: str = option("batch", "Weighted-loss reduction: sum(w*l)/B (batch) or "
                               "sum(w*l)/sum(w) (weights).", choices=("batch", "weights"))
  focal_gamma: float = option(1.0, "Focal loss: the focusing exponent gamma (1, as the paper's "
                              "baseline).", rule=_at_least(0))
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
                               "from the batch).", rule=_at_least(0))

  def __post_init__(self):
    super().__post_init__()
    if self.loss == "balanced_softmax" and self.la_tau != 1.0:
      raise ConfigError(f"loss balanced_softmax is logit_adjusted at tau 1; la_tau={self.la_tau} "
                        "asks for --loss=logit_adjusted.")


@dataclasses.dataclass(frozen=True)
class M2mConfig(_Section):
  """Hyper-parameters and ablation switches of M2m's phase 2 (docs/method.md).

  Attributes:
    beta: seed-rejection base in w_ij = 1 - beta^{max(N_yj - N_yi, 0)}.
    lam: weight of f's seed-class logit in the translation objective.
    gamma: acceptance threshold on g's probability of the target class
      (the official code compares the probability; the paper's text says loss).
    steps: T, translation steps.
    step_size: eta (0.1 for images, 1.0 for Reuters).
    (beta, lam, gamma and step_size are None only inside an `ExperimentConfig`,
    where None means the recipe's value.)
    start_noise: L2 radius of the random start (official: 0.5).
    start_noise_mode: the random start's law, "official" or "per_sample" (ours).
    clip_range: valid input domain (min, max), or None for no clipping. A run
      takes it from the dataset; it has no flag.
    no_reject: True gives the M2m-No-Reject ablation (no Bernoulli draw).
    accept_mode: "translate" (x*, y_i); "clean" (M2m-Clean: the clean seed x_j
      labelled y_i); "random_label" (M2m-RS-Rand's labels: x* labelled with a
      random class other than y_i and y_j).
    n_buckets: number of compiled translation sizes (1 = whole batch, naive).
    fold_batchnorm: run the translation's inference passes through g and f
      with BatchNorm folded into the convolutions (`m2m_tf.models.folding`;
      the same function up to float32 rounding, faster).
  """

  beta: Optional[float] = option(0.999, "M2m seed rejection: w_ij = 1 - beta^max(N_yj - N_yi, "
                                 "0) (recipe: the official 0.999, or the dataset's "
                                 "validation-selected value).",
                                 rule=(lambda v: 0 <= v < 1, "must be in [0, 1)"))
  lam: Optional[float] = option(0.5, "M2m: weight of f's seed-class logit in the translation "
                                "loss (recipe: the official 0.5, or the dataset's selected value).",
                                rule=_at_least(0))
  gamma: Optional[float] = option(0.9, "M2m: accept x* iff g's probability of the target >= "
                                  "gamma (recipe: the official 0.9, or the dataset's selected "
                                  "value).", rule=(lambda v: 0 <= v <= 1, "must be in [0, 1]"))
  steps: int = option(10, "M2m: translation steps T.", rule=_at_least(0))
  step_size: Optional[float] = option(0.1, "M2m: L2 step size eta (recipe: 1.0 Reuters, "
                                      "else 0.1).", rule=(lambda v: v > 0, "must be > 0"))
  start_noise: float = option(0.5, "M2m: L2 radius of the random start (official 0.5).",
                              rule=_at_least(0))
  start_noise_mode: Optional[str] = option(
      "official", "M2m: the random start's law. official: U(-0.5, 0.5) noise, each channel "
      "scaled to L2 norm start_noise over the translated rows; per_sample (ours): radius "
      "start_noise * U(0, 1) per sample (recipe: official for images, per_sample for text).",
      choices=START_NOISE_MODES)
  clip_range: Optional[Tuple[float, float]] = option((0.0, 1.0), "Valid input domain.",
                                                     flag=False, record=False)
  no_reject: bool = option(False, "Ablation M2m-No-Reject: skip the Bernoulli rejection.")
  accept_mode: str = option("translate", "Ablations: translate (M2m), clean (M2m-Clean: accepted "
                            "slots get the clean seed), random_label (RS-Rand's labels).",
                            choices=ACCEPT_MODES)
  n_buckets: int = option(8, "M2m: compiled translation sizes (1 = translate the whole batch, "
                          "the naive static-shape version).", rule=_at_least(1))
  fold_batchnorm: bool = option(True, "M2m: run the translation's inference passes through g "
                                "and f with BatchNorm folded into the convolutions (same function "
                                "up to float32 rounding, faster); --nofold_batchnorm calls the "
                                "models as they are.")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig(_Section):
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
                        rule=_at_least(0))
  init_from: Optional[str] = option(None, "Phase-1 sharing: start from this run folder's "
                                    "committed state after --init_epoch epochs (it must differ "
                                    "only in what phase 2 uses; docs/runs.md).")
  init_epoch: Optional[int] = option(None, "Completed epochs of --init_from's state to start "
                                     "from.", rule=_at_least(1))
  keep_epochs: Tuple[int, ...] = option((), "Keep the state after these completed epochs for "
                                        "good (branch points for --init_from).",
                                        rule=(lambda v: all(e >= 1 for e in v), "must be epochs"))
  stop_after: Optional[int] = option(None, "End this invocation once this many epochs are "
                                     "committed; the run stays unfinished, to go on by the same "
                                     "command without it (a phase-1 run that only has to reach "
                                     "its branch point: docs/runs.md).", rule=_at_least(1))
  inter_op_threads: int = option(
      1, "TensorFlow's inter-op threads: 1 runs a step's independent ops one at a time, which "
      "makes a seeded conv-net run bit-reproducible on one machine; 0 is TensorFlow's default "
      "(concurrent ops, last bits schedule-dependent; docs/runs.md#determinism).",
      rule=_at_least(0))
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
  """Everything one run needs (module docstring). Build it by sections or from leaf names:

    ExperimentConfig.from_leaves(dataset="reuters", method="m2m", lam=0.3)

  Attributes:
    seed: seed of f's initialisation, the data order and M2m's random draws
      (g, when trained by the run, uses seed + 1000: docs/method.md).
    output_dir: the run folder (None: runs/<dataset>_<loss>_<method>_s<seed>).
  """

  seed: int = option(0, "Seed of initialisation, data order and M2m's random draws.",
                     rule=_at_least(0))
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

  def resolved(self, recipe=None) -> "ExperimentConfig":
    """A copy with every None recipe field (and output_dir) filled; see `check_resolved`.

    Args:
      recipe: the `m2m_tf.recipes.Recipe` to fill from; default the dataset's.
        Your own data (a KIND:PATH dataset) has none: its recipe is suggested
        from the data (`run_experiment` loads them first).
    Raises:
      ConfigError: a KIND:PATH dataset with unset recipe fields and no recipe.
    """
    flat = self.flat()
    missing = [k for k in _RECIPE_FIELDS if flat[k] is None]
    changes = {}
    if missing:
      if recipe is None and user_data.is_spec(self.data.dataset):
        raise ConfigError(f"dataset {self.data.dataset} has no recipe: its unset fields "
                          f"{missing} are suggested from its data (run_experiment does this).")
      r = recipe or get_recipe(self.data.dataset)
      fill = dict(epochs=r.epochs, batch_size=r.batch_size, lr=r.lr,
                  warmup_epochs=r.warmup_epochs, lr_milestones=tuple(r.milestones),
                  lr_factors=tuple(r.factors), weight_decay=r.weight_decay,
                  deferred_epoch=r.deferred_epoch, step_size=r.step_size, arch=r.arch,
                  hidden_units=tuple(r.hidden_units), augment=r.augment, beta=r.beta,
                  lam=r.lam, gamma=r.gamma, start_noise_mode=r.start_noise_mode,
                  cb_beta=r.cb_beta)
      changes = {k: fill[k] for k in missing}
    if self.data.substitute is None and self.data.embeddings is None and (
        recipe is not None or not user_data.is_spec(self.data.dataset)):
      substitute = (recipe or get_recipe(self.data.dataset)).substitute
      if substitute is not None:
        changes["substitute"] = substitute
    if self.output_dir is None:
      t, name = self.training, self.data.dataset
      name = user_data.short_name(name) if user_data.is_spec(name) else name
      changes["output_dir"] = os.path.join("runs", f"{name}_{t.loss}_{t.method}_s{self.seed}")
    return self.replace(**changes)

  def check_resolved(self) -> None:
    """The rules that tie fields together, on a resolved configuration.

    Raises:
      ConfigError: naming the fields and the rule.
    """
    s, method = self.schedule, get_method(self.training.method)
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


# The fields a recipe fills when they are None (m2m_tf.recipes.Recipe).
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
