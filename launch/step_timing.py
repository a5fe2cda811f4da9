"""Timing of compiled training steps (m2m_tf's ERM and M2m steps), shared by the benchmarks
(`benchmarks.bench`, `benchmarks.streaming`, `benchmarks.multiworker`) and the GPU check
(`launch.cifar.gpu_check`): the workloads, the step configurations, the machine's description,
and `time_steps`, which times configurations in interleaved rounds.

TensorFlow is imported on first use, so that the commands that use this module answer --help
(and `benchmarks.bench --from_json`) without it.
"""

import dataclasses
import math
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from m2m_tf import machine


class TimedSteps:
  """A configuration's step times, timed-sample size and first-call time; subclasses define
  `step(repeat) -> seconds per step`.

  Args:
    cfg: the configuration (its `name` labels errors and tables).
  """

  def __init__(self, cfg):
    self.cfg = cfg
    self.trainer = None  # an M2mTrainer where the step is m2m_tf's
    self.times: List[float] = []
    self.n_steps = 0
    self.repeat = 1
    self.first_call_s: Optional[float] = None
    self.logs: dict = {}

  def step(self, repeat: int = 1) -> float:
    """`repeat` steps; returns seconds per step."""
    raise NotImplementedError

  def warm_up(self, n_warm: int, min_sample_s: float) -> None:
    """`n_warm` untimed steps; the first one's time (trace + compile) is `first_call_s`.

    With more than one warm-up step, `repeat` becomes the number of consecutive
    steps that last about `min_sample_s` (at most 200), timed as one sample.
    """
    last = None
    for i in range(n_warm):
      last = self.step()
      if i == 0:
        self.first_call_s = last
    if n_warm > 1:
      self.repeat = max(1, min(200, int(math.ceil(min_sample_s / max(last, 1e-6)))))


# Class counts of the benchmark workloads.
CIFAR10_LT_R100_COUNTS = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)
# Reuters R52 training counts of the 36 kept classes (docs/data.md#reuters-r52, 6436 docs).
REUTERS_COUNTS = (2840, 1596, 253, 251, 206, 190, 123, 108, 97, 90, 70, 58, 54, 46, 41, 37, 37,
                  33, 31, 31, 31, 26, 24, 22, 19, 17, 15, 14, 13, 13, 13, 10, 9, 8, 6, 4)
# The precisions of a step (--precision of a run) and their tags in configuration names.
PRECISION_TAGS = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}


@dataclasses.dataclass(frozen=True)
class Workload:
  """One benchmarked model, batch size and class distribution."""

  key: str
  label: str
  arch: str
  input_shape: Tuple[int, ...]
  class_counts: Tuple[int, ...]
  batch_size: int
  step_size: float
  weight_decay: float
  augment: bool
  hidden_units: Tuple[int, ...] = (256,)
  translation_steps: int = 10


WORKLOADS: Dict[str, Workload] = {
    "mlp": Workload("mlp", "Reuters MLP 1000-256-36, batch 64", "mlp", (1000,), REUTERS_COUNTS,
                    64, 1.0, 5e-5, False),
    "resnet32": Workload("resnet32", "ResNet-32, CIFAR-LT-10 ratio 100, batch 128", "resnet32",
                         (32, 32, 3), CIFAR10_LT_R100_COUNTS, 128, 0.1, 2e-4, True),
}


def quick_workload(w: Workload) -> Workload:
  """A tiny version of a workload for tests: small inputs, batch 16, T = 2."""
  counts = tuple(max(2, c // 50) for c in w.class_counts)
  if w.arch == "mlp":
    return dataclasses.replace(w, label=w.label + " (quick)", input_shape=(20,),
                               hidden_units=(8,), class_counts=counts[:6], batch_size=16,
                               translation_steps=2)
  return dataclasses.replace(w, label=w.label + " (quick)", input_shape=(8, 8, 3),
                             class_counts=counts, batch_size=16, translation_steps=2)


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """One timed step: ERM or M2m, XLA on or off, bucket count, compute precision."""

  method: str  # "erm", "m2m" or "torch_erm" (the project's PyTorch ResNet-32, --torch)
  jit: bool
  n_buckets: int = 0  # 0 for ERM
  fold_batchnorm: bool = True  # M2m: BatchNorm folded in the translation passes
  precision: str = "float32"  # --precision of a run: float32, mixed_bfloat16, mixed_float16

  @property
  def name(self) -> str:
    """The configuration's name in the tables, e.g. "m2m_b8/xla" or "erm/default@bf16"."""
    mode = "xla" if self.jit else "default"
    at = "" if self.precision == "float32" else "@" + PRECISION_TAGS[self.precision]
    if self.method == "erm":
      return f"erm/{mode}{at}"
    if self.method == "torch_erm":
      return "erm/pytorch"
    suffix = "" if self.fold_batchnorm else "_nofold"
    return f"m2m_b{self.n_buckets}{suffix}/{mode}{at}"


# The vector and matrix units that decide float32 / bfloat16 speed (/proc/cpuinfo flag names).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_features() -> List[str]:
  """Which of CPU_FEATURES this CPU has (bfloat16 is emulated without avx512_bf16 / amx_bf16)."""
  flags = set(machine.cpuinfo().get("flags", "").split())
  return [f for f in CPU_FEATURES if f in flags]


def machine_info() -> dict:
  """CPU model, cores, TF and Keras versions, and the device the steps run on."""
  import keras  # lazy: TensorFlow (module docstring)
  import tensorflow as tf  # lazy: TensorFlow (module docstring)
  gpus = tf.config.list_physical_devices("GPU")
  device = "CPU"
  if gpus:
    details = tf.config.experimental.get_device_details(gpus[0])
    device = f"GPU: {details.get('device_name', gpus[0].name)}"
  return {
      "cpu": machine.cpu_model(machine.cpuinfo()),
      "cpu_features": cpu_features(),
      "cores": os.cpu_count(),
      "device": device,
      "tensorflow": tf.__version__,
      "keras": keras.__version__,
      "python": platform.python_version(),
      "load_average_start": load_average(),
  }


def load_average() -> Optional[List[float]]:
  """The 1, 5 and 15 minute load averages (None where the OS has none)."""
  try:
    return [round(v, 2) for v in os.getloadavg()]
  except OSError:
    return None


def synthetic_arrays(w: Workload, seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """A training set with the workload's class counts: random inputs, real label counts.

  Images are uint8 (the pipeline scales them to [0, 1] and augments them);
  vectors are sparse-ish float32 in [0, 1] like normalised bag-of-words rows.
  """
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(len(w.class_counts)), w.class_counts).astype(np.int64)
  if len(w.input_shape) == 3:
    x = rng.integers(0, 256, (len(y),) + w.input_shape, dtype=np.uint8)
  else:
    x = (rng.random((len(y),) + w.input_shape, dtype=np.float32) < 0.05).astype(np.float32)
  return x, y


def _train_dataset(w: Workload, x, y, seed: int):
  """The real balanced (augmented for images) training pipeline over (x, y)."""
  from m2m_tf.data import pipeline  # lazy: TensorFlow (module docstring)
  return pipeline.train_dataset(x, y, num_classes=len(w.class_counts), batch_size=w.batch_size,
                                seed=seed, epochs=1000, balanced_from_epoch=0, augment=w.augment)


def balanced_batches(w: Workload, x, y, n_batches: int, seed: int):
  """`n_batches` real batches of the balanced (augmented) pipeline, kept in memory."""
  import tensorflow as tf  # lazy: TensorFlow (module docstring)
  batches = list(_train_dataset(w, x, y, seed).take(n_batches))
  xs = tf.stack([b[0] for b in batches])
  ys = tf.stack([b[1] for b in batches])
  return xs, ys


def build_trainer(w: Workload, cfg: StepConfig, seed: int):
  """An `M2mTrainer` as `run_experiment` builds it, compiled, with its train_function made."""
  from m2m_tf.training import precision  # lazy: TensorFlow (module docstring)
  with precision.precision_scope(cfg.precision):
    return _build_trainer(w, cfg, seed, precision.wrap_optimizer)


def _build_trainer(w: Workload, cfg: StepConfig, seed: int, wrap_optimizer):
  import keras  # lazy: TensorFlow (module docstring)
  from m2m_tf.m2m.generation import M2mConfig  # lazy: TensorFlow (module docstring)
  from m2m_tf.models import build_model  # lazy: TensorFlow (module docstring)
  from m2m_tf.training.trainer import M2mTrainer  # lazy: TensorFlow (module docstring)
  keras.utils.set_random_seed(seed)
  kwargs = {"hidden_units": w.hidden_units} if w.arch == "mlp" else {}
  num_classes = len(w.class_counts)
  f = build_model(w.arch, w.input_shape, num_classes, name="f", **kwargs)
  g = None
  m2m = None
  if cfg.method == "m2m":
    g = build_model(w.arch, w.input_shape, num_classes, name="g", **kwargs)
    m2m = M2mConfig(steps=w.translation_steps, step_size=w.step_size, clip_range=(0.0, 1.0),
                    n_buckets=cfg.n_buckets, fold_batchnorm=cfg.fold_batchnorm)
  trainer = M2mTrainer(f, g, class_counts=w.class_counts, m2m=m2m, weight_decay=w.weight_decay,
                       seed=seed)
  optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
  trainer.compile(optimizer=wrap_optimizer(optimizer, cfg.precision),
                  jit_compile=cfg.jit)
  trainer.build((None,) + tuple(w.input_shape))
  if m2m is not None:
    trainer.phase2.assign(True)
  trainer.make_train_function()
  return trainer


class _Timed(TimedSteps):
  """A trainer, an in-memory iterator of balanced batches, and its step times."""

  def __init__(self, w: Workload, cfg: StepConfig, xs, ys, seed: int):
    import tensorflow as tf  # lazy: TensorFlow (module docstring)
    super().__init__(cfg)
    self.trainer = build_trainer(w, cfg, seed)
    data = tf.data.Dataset.from_tensor_slices((xs, ys)).repeat().prefetch(2)
    self.iterator = iter(data)

  def step(self, repeat: int = 1) -> float:
    """`repeat` compiled steps, synchronised on the last loss; returns seconds per step."""
    t0 = time.perf_counter()
    for _ in range(repeat):
      logs = self.trainer.train_function(self.iterator)
    loss = float(np.asarray(logs["loss"]))
    dt = (time.perf_counter() - t0) / repeat
    if not np.isfinite(loss):
      raise FloatingPointError(f"{self.cfg.name}: non-finite loss {loss}.")
    self.logs = logs
    return dt


def step_timer(w: Workload, cfg: StepConfig, seed: int, n_batches: int = 8) -> TimedSteps:
  """A built, untimed m2m_tf step of `cfg` over `n_batches` in-memory balanced batches of
  synthetic data with the workload's class counts (`time_steps` times such steps)."""
  x, y = synthetic_arrays(w, seed)
  xs, ys = balanced_batches(w, x, y, n_batches=n_batches, seed=seed)
  return _Timed(w, cfg, xs, ys, seed)


def _step_row(w: Workload, t: _Timed) -> dict:
  """The JSON row of one timed configuration (with the translated-slot fractions of M2m)."""
  med = statistics.median(t.times) if t.times else float("nan")
  row = {
      "workload": w.key,
      "config": t.cfg.name,
      "method": t.cfg.method,
      "jit_compile": t.cfg.jit,
      "n_buckets": t.cfg.n_buckets or None,
      "fold_batchnorm": t.cfg.fold_batchnorm if t.cfg.method == "m2m" else None,
      "precision": t.cfg.precision,
      "batch_size": w.batch_size,
      "median_step_s": med,
      "step_times_s": [round(v, 5) for v in t.times],
      "steps_per_sample": t.repeat,
      "first_call_s": t.first_call_s,
      "samples_per_s": w.batch_size / med if med > 0 else None,
  }
  if t.cfg.method == "m2m":
    # The trackers are sums over every step this trainer ran.
    n_run = int(t.trainer.optimizer.iterations.numpy())
    stats = {k: float(np.asarray(t.logs[k])) for k in ("gen_slots", "candidates", "accepted")}
    row["translated_slot_fraction"] = stats["candidates"] / (n_run * w.batch_size)
    row["generation_slot_fraction"] = stats["gen_slots"] / (n_run * w.batch_size)
  return row


def time_steps(w: Workload, configs: Sequence[StepConfig], *, warmup: int, steps: int,
               slow_steps: int, seed: int, min_sample_s: float = 0.25, log=print,
               timers: Optional[Dict[str, Callable[..., TimedSteps]]] = None) -> List[dict]:
  """Median step times of `configs`, timed in interleaved rounds.

  Each configuration first runs `warmup` untimed steps (the first one traces and
  compiles; its time is reported as first_call_s), then round r runs one timed
  step of every configuration that still needs one. XLA-compiled conv-net M2m
  steps take tens of seconds on a CPU, so they get `slow_steps` timed steps
  (and one warm-up). A step shorter than `min_sample_s` (the MLP's few
  milliseconds) is timed as the mean of a block of consecutive steps lasting
  about `min_sample_s`, and each block counts as one timed sample. `timers` maps a
  configuration's method to the `TimedSteps` maker `(w, cfg, xs, ys, seed)` of the steps that
  are not m2m_tf's (the PyTorch step of `benchmarks.bench --torch`).
  """
  x, y = synthetic_arrays(w, seed)
  xs, ys = balanced_batches(w, x, y, n_batches=8, seed=seed)
  timed = []
  for cfg in configs:
    slow = cfg.jit and cfg.method == "m2m" and w.arch != "mlp"
    t = (timers or {}).get(cfg.method, _Timed)(w, cfg, xs, ys, seed)
    t.n_steps = slow_steps if slow else steps
    t.warm_up(min(warmup, 1) if slow else warmup, min_sample_s)
    log(f"  {w.key} {cfg.name}: first call (trace + compile) {t.first_call_s:.2f} s")
    timed.append(t)
  for r in range(max(t.n_steps for t in timed)):
    for t in timed:
      if r < t.n_steps:
        t.times.append(t.step(t.repeat))
  rows = []
  for t in timed:
    rows.append(_step_row(w, t))
    log(f"  {w.key} {t.cfg.name}: median {rows[-1]['median_step_s']:.4f} s over "
        f"{len(t.times)} steps")
  return rows


def input_rate(w: Workload, *, n_batches: int, seed: int) -> dict:
  """Samples/s of the real balanced (augmented) `train_dataset`, read on its own."""
  x, y = synthetic_arrays(w, seed)
  it = iter(_train_dataset(w, x, y, seed))
  for _ in range(3):
    next(it)
  t0 = time.perf_counter()
  for _ in range(n_batches):
    b = next(it)
  np.asarray(b[1])
  dt = time.perf_counter() - t0
  return {"batches": n_batches, "seconds": dt, "samples_per_s": n_batches * w.batch_size / dt,
          "augment": w.augment}
