"""Per-example losses, class weights and the batch reduction of M2m's baselines.

Each loss maps int labels [B] and logits [B, K] to a per-example loss [B] (float16/bfloat16
logits computed in float32); `weighted_mean` reduces it. See docs/method.md#baselines-and-losses.
"""

from typing import Callable, Dict, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from m2m_tf.logit_adjustment import check_tau, log_prior

LOSSES = ("ce", "focal", "ldam", "logit_adjusted", "balanced_softmax")
# Named aliases: the loss they are, with the hyper-parameters they fix.
LOSS_ALIASES = {"balanced_softmax": ("logit_adjusted", {"tau": 1.0})}
CLASS_WEIGHTS = ("none", "rw", "cb")
REDUCTIONS = ("batch", "weights")

ArrayLike = Union[np.ndarray, Sequence[float], Sequence[int]]


def _check_counts(class_counts: ArrayLike, where: str) -> np.ndarray:
  """Validates N_k (1-D, all > 0) and returns it as float64."""
  counts = np.asarray(class_counts)
  if counts.ndim != 1 or counts.size == 0:
    raise ValueError(
        f"{where}: class_counts must be a non-empty 1-D array, got shape "
        f"{counts.shape}")
  if not np.all(np.isfinite(counts.astype(np.float64))):
    raise ValueError(f"{where}: class_counts must be finite, got {counts}")
  if np.any(counts <= 0):
    bad = np.flatnonzero(counts <= 0).tolist()
    raise ValueError(
        f"{where}: every class needs at least one training example; "
        f"classes {bad} have counts {counts[bad].tolist()}")
  return counts.astype(np.float64)


def class_weights(kind: str, class_counts: ArrayLike, *,
                  beta: float = 0.9999) -> np.ndarray:
  """Per-class loss weights w_k: "none" (1), "rw" (1 / N_k) or "cb" ((1 - beta) / (1 - beta^N_k)).

  See docs/method.md#re-sampling-and-re-weighting.

  Returns float32 [K] summing to K. Raises ValueError for an unknown kind (one of
  CLASS_WEIGHTS), counts N_k that are not all > 0, or beta outside (0, 1).
  """
  if kind not in CLASS_WEIGHTS:
    raise ValueError(
        f"class_weights: unknown kind {kind!r}; valid kinds: {CLASS_WEIGHTS}")
  counts = _check_counts(class_counts, "class_weights")
  k = counts.size
  if kind == "none":
    return np.ones(k, np.float32)
  if kind == "rw":
    w = 1.0 / counts
  else:
    if not 0.0 < beta < 1.0:
      raise ValueError(f"class_weights: beta must be in (0, 1), got {beta}")
    # 1 - beta^N computed as -expm1(N log beta): accurate when beta is near 1.
    effective_num = -np.expm1(counts * np.log(beta))
    w = (1.0 - beta) / effective_num
  return (w / w.sum() * k).astype(np.float32)


def _prepare(labels, logits):
  """Casts logits to a float type >= float32 and labels to int32."""
  logits = tf.convert_to_tensor(logits)
  if logits.dtype in (tf.float16, tf.bfloat16):
    logits = tf.cast(logits, tf.float32)
  labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
  return labels, logits


def cross_entropy(labels, logits) -> tf.Tensor:
  """Softmax cross entropy per example, -log softmax(z_i)[y_i].

  int labels [B], logits [B, K] -> [B], float32 (float64 for float64 logits).
  """
  labels, logits = _prepare(labels, logits)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits)


def focal(labels, logits, gamma: float = 1.0) -> tf.Tensor:
  """Focal loss per example, (1 - p_y)^gamma * CE with p_y = exp(-CE) and alpha = 1: -> [B].

  gamma >= 0 (0 gives CE), else ValueError. See docs/method.md#losses and
  docs/method.md#difference-11-focal-class-weights.
  """
  if gamma < 0:
    raise ValueError(f"focal: gamma must be >= 0, got {gamma}")
  ce = cross_entropy(labels, logits)
  if gamma == 0:
    return ce
  one_minus_p = -tf.math.expm1(-ce)
  # Where p rounds to 1 (CE = 0), d/dx x^gamma is infinite for gamma < 1 and inf * 0 gives a NaN
  # gradient; the true limit of FL ~ CE^(1 + gamma) has gradient 0, which the double where gives.
  positive = one_minus_p > 0
  safe = tf.where(positive, one_minus_p, tf.ones_like(one_minus_p))
  weight = tf.where(positive, tf.pow(safe, tf.cast(gamma, ce.dtype)), tf.zeros_like(ce))
  return weight * ce


def ldam_margins(class_counts: ArrayLike,
                 max_margin: float = 0.5) -> np.ndarray:
  """LDAM margins m_k = C / N_k^(1/4), C such that the smallest class gets max_margin.

  Returns:
    float64 array [K].
  Raises:
    ValueError: max_margin <= 0 or bad counts.
  """
  if not max_margin > 0:
    raise ValueError(f"ldam_margins: max_margin must be > 0, got {max_margin}")
  counts = _check_counts(class_counts, "ldam_margins")
  m = 1.0 / np.sqrt(np.sqrt(counts))
  return m * (max_margin / np.max(m))


def ldam(labels, logits, class_counts: ArrayLike, max_margin: float = 0.5,
         scale: float = 30.0) -> tf.Tensor:
  """LDAM loss per example: CE(s * (z_i - m_{y_i} e_{y_i}), y_i).

  logits [B, K] should be cosines from `NormedDense` (docs/method.md#ldam-and-the-cosine-head);
  margins from `ldam_margins(class_counts, max_margin)`; s = scale. Returns [B].

  Raises:
    ValueError: scale <= 0, bad counts, or logits with another number of classes.
  """
  if not scale > 0:
    raise ValueError(f"ldam: scale must be > 0, got {scale}")
  margins = ldam_margins(class_counts, max_margin)
  labels, logits = _prepare(labels, logits)
  k = margins.size
  if logits.shape.rank is not None and logits.shape[-1] is not None:
    if logits.shape[-1] != k:
      raise ValueError(
          f"ldam: logits have {logits.shape[-1]} classes but class_counts has "
          f"{k}")
  m = tf.constant(margins, dtype=logits.dtype)
  onehot = tf.one_hot(labels, k, dtype=logits.dtype)
  shifted = logits - onehot * tf.gather(m, labels)[:, None]
  return cross_entropy(labels, tf.cast(scale, logits.dtype) * shifted)


def logit_adjusted(labels, logits, class_counts: ArrayLike,
                   tau: float = 1.0) -> tf.Tensor:
  """Logit-adjusted cross entropy per example: CE(z + tau log pi, y), pi_k = N_k / sum N.

  tau = 1 is Balanced Softmax; tau = 0 is `cross_entropy` exactly
  (docs/method.md#logit-adjustment-and-balanced-softmax).

  Returns [B], float32 (float64 for float64 logits).

  Raises:
    ValueError: bad tau or counts, or logits with another number of classes.
  """
  tau = check_tau(tau)
  prior = log_prior(class_counts)
  labels, logits = _prepare(labels, logits)
  if logits.shape.rank is not None and logits.shape[-1] is not None:
    if logits.shape[-1] != prior.size:
      raise ValueError(f"logit_adjusted: logits have {logits.shape[-1]} classes but "
                       f"class_counts has {prior.size}")
  shift = tf.constant(tau * prior, dtype=logits.dtype)
  return cross_entropy(labels, logits + shift)


class _Loss:
  """A per-example loss with fixed hyper-parameters: `(labels, logits) -> [B]`."""

  def __init__(self, name: str, fn: Callable, hparams: Dict):
    self.name = name
    self.hparams = dict(hparams)
    self._fn = fn

  def __call__(self, labels, logits) -> tf.Tensor:
    return self._fn(labels, logits, **self.hparams)

  def __repr__(self):
    hp = {k: v for k, v in self.hparams.items() if k != "class_counts"}
    return f"Loss({self.name!r}, {hp})"


_HPARAMS = {
    "ce": (),
    "focal": ("gamma",),
    "ldam": ("max_margin", "scale"),
    "logit_adjusted": ("tau",),
    "balanced_softmax": (),
}


def _counted_hparams(name: str, class_counts, hparams: Dict) -> Dict:
  """Validated hyper-parameters (class_counts included) of a loss that needs N_k."""
  if class_counts is None:
    raise ValueError(f"make_loss: {name!r} needs class_counts")
  counts = np.asarray(class_counts)
  if name == "ldam":
    hp = {"max_margin": float(hparams.get("max_margin", 0.5)),
          "scale": float(hparams.get("scale", 30.0))}
    ldam_margins(counts, hp["max_margin"])
  else:
    hp = dict(LOSS_ALIASES[name][1]) if name in LOSS_ALIASES else {
        "tau": float(hparams.get("tau", 1.0))}
    check_tau(hp["tau"])
  return {"class_counts": counts, **hp}


def make_loss(name: str, class_counts: Optional[ArrayLike] = None,
              **hparams) -> Callable:
  """Returns a per-example loss `(labels, logits) -> [B]` by name.

  Args:
    name: one of LOSSES: "ce", "focal" (`gamma` 1.0), "ldam" (`max_margin` 0.5,
      `scale` 30.0), "logit_adjusted" (`tau` 1.0) or "balanced_softmax" (tau = 1).
    class_counts: N_k; required by the last three, validated if given.
    **hparams: the loss's hyper-parameters; unknown names are an error.
  Raises:
    ValueError: unknown name (the message lists the valid ones), unknown or
      bad hyper-parameter, or missing class_counts.
  """
  if name not in LOSSES:
    raise ValueError(f"make_loss: unknown loss {name!r}; valid losses: {LOSSES}")
  unknown = sorted(set(hparams) - set(_HPARAMS[name]))
  if unknown:
    raise ValueError(
        f"make_loss: loss {name!r} takes hyper-parameters {_HPARAMS[name]}, got "
        f"unknown {unknown}")
  if class_counts is not None:
    _check_counts(class_counts, "make_loss")
  if name == "ce":
    return _Loss(name, cross_entropy, {})
  if name == "focal":
    return _Loss(name, focal, {"gamma": float(hparams.get("gamma", 1.0))})
  fn = ldam if name == "ldam" else logit_adjusted
  return _Loss(name, fn, _counted_hparams(name, class_counts, hparams))


def weighted_mean(per_example_loss, labels, class_weight=None,
                  global_batch_size=None, *, reduction: str = "batch",
                  global_weight_sum=None) -> tf.Tensor:
  """Reduces a per-example loss [B] to a scalar with per-class weights w_i = class_weight[y_i].

  "batch" returns sum_i w_i l_i / B, "weights" sum_i w_i l_i / sum_i w_i; both use the global
  batch (or weight sum) under `tf.distribute` (docs/method.md#loss-reduction).

  Args:
    class_weight: None (all ones) or non-negative float array-like [K].
    global_batch_size: "batch" only; default local B times num_replicas_in_sync.
    reduction: one of REDUCTIONS.
    global_weight_sum: "weights" only; default the all-reduced sum of w_i.
  Returns a scalar of per_example_loss's dtype; raises ValueError for an unknown reduction or a
  bad class_weight.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(
        f"weighted_mean: unknown reduction {reduction!r}; valid: {REDUCTIONS}")
  loss = tf.convert_to_tensor(per_example_loss)
  loss = tf.reshape(loss, [-1])
  labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
  if class_weight is None:
    w = tf.ones_like(loss)
  else:
    cw = class_weight
    if not tf.is_tensor(cw):
      cw = np.asarray(cw)
      if cw.ndim != 1 or np.any(cw < 0):
        raise ValueError(
            "weighted_mean: class_weight must be a 1-D array of non-negative "
            f"weights, got {cw}")
    w = tf.gather(tf.cast(cw, loss.dtype), labels)
  total = tf.reduce_sum(w * loss)
  ctx = tf.distribute.get_replica_context()
  n_replicas = ctx.num_replicas_in_sync if ctx is not None else 1
  if reduction == "batch":
    if global_batch_size is None:
      denom = tf.cast(tf.size(loss) * n_replicas, loss.dtype)
    else:
      denom = tf.cast(global_batch_size, loss.dtype)
    return total / denom
  if global_weight_sum is not None:
    denom = tf.cast(global_weight_sum, loss.dtype)
  else:
    denom = tf.reduce_sum(w)
    if ctx is not None and n_replicas > 1:
      denom = ctx.all_reduce(tf.distribute.ReduceOp.SUM, denom)
  return total / tf.stop_gradient(denom)
