"""Per-example losses and class weights of M2m's baselines (docs/method.md#baselines-and-losses).

Every loss here maps integer labels [B] and logits [B, K] to a PER-EXAMPLE loss
of shape [B]. The batch reduction (with optional per-class weights) is done
separately by `weighted_mean`, so that the trainer can divide by the GLOBAL
batch size under `tf.distribute` (each replica sees B / R examples; summing the
replicas' gradients must give the single-device gradient).

All functions are plain TF ops: usable eagerly, inside `tf.function`, under
XLA (`jit_compile=True`) and inside `strategy.run`. Low-precision logits
(float16 / bfloat16, mixed precision) are computed in float32; float64 stays
float64 (used by the gradient tests).

The logit-adjusted loss (Menon et al., ICLR 2021, eq. 10) is `CE(z + tau log pi, y)`
with pi the training class prior N_k / sum N; Balanced Softmax (Ren et al., NeurIPS
2020) is the same loss at tau = 1, kept as a named alias
(docs/method.md#logit-adjustment-and-balanced-softmax).

The official code (alinlab/M2m `utils.py`, itself copied from
kaidic/LDAM-DRW `losses.py`) is followed for:
  * focal loss: `(1 - p_y)^gamma * CE` with `p_y = exp(-CE)`, alpha = 1
    (Keras' `CategoricalFocalCrossentropy` defaults to alpha = 0.25, which is
    NOT the paper's);
  * LDAM: margins `m_k = C / N_k^(1/4)` scaled so that `max_k m_k = max_margin`
    (0.5), subtracted from the true-class (cosine) logit, then the logits are
    multiplied by the scale `s` (30) before the softmax cross entropy.
One deliberate difference: with class weights, the official FocalLoss applies
the weight INSIDE the modulating factor (`p = exp(-w_y * CE)`, then
`(1 - p)^gamma * w_y * CE`), because it feeds PyTorch's already weighted CE to
`focal_loss`. Here the weight multiplies the unweighted focal loss
(`w_y * (1 - p_y)^gamma * CE`, the textbook weighted focal loss). The two agree
when all weights are 1, which is the paper's Focal baseline.
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
  """Per-class loss weights w_k (float32, length K).

  * "none": w_k = 1.
  * "rw" (re-weighting): w_k proportional to 1 / N_k, normalised to mean 1
    (sum K). This is the official M2m code with `--eff_beta 1`:
    `per_cls_weights = 1 / N; per_cls_weights / sum * K` (train.py, the
    "For Cost-Sensitive Learning" block).
  * "cb" (class-balanced, Cui et al. 2019): w_k proportional to
    (1 - beta) / (1 - beta^N_k), normalised to sum K (official M2m train.py and
    LDAM-DRW cifar_train.py, beta = 0.9999).

  Args:
    kind: one of CLASS_WEIGHTS.
    class_counts: N_k, training examples per class; all must be > 0.
    beta: the effective-number hyper-parameter of "cb", in (0, 1).
  Returns:
    float32 array of shape [K] summing to K.
  Raises:
    ValueError: unknown kind, zero/negative counts, or beta outside (0, 1).
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
  """Softmax cross entropy per example: CE_i = -log softmax(z_i)[y_i].

  Args:
    labels: int [B] class indices.
    logits: float [B, K].
  Returns:
    float [B] (float32, or float64 for float64 logits). Numerically stable
    (log-sum-exp) for logits of any magnitude.
  """
  labels, logits = _prepare(labels, logits)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits)


def focal(labels, logits, gamma: float = 1.0) -> tf.Tensor:
  """Focal loss per example, as in the official LDAM-DRW / M2m code.

  FL_i = (1 - p_i)^gamma * CE_i,  p_i = softmax(z_i)[y_i] = exp(-CE_i),
  alpha = 1 (Lin et al. 2017 with no alpha balancing; the paper's Focal
  baseline uses gamma = 1). `1 - p` is computed as `-expm1(-CE)` so that it
  keeps its precision when p is close to 1.

  Args:
    labels: int [B].
    logits: float [B, K].
    gamma: focusing parameter >= 0 (gamma = 0 gives CE).
  Returns:
    float [B].
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
  """LDAM margins m_k = C / N_k^(1/4) with C chosen so max_k m_k = max_margin.

  As the official `LDAMLoss.__init__`: `m = 1 / sqrt(sqrt(N)); m *= max_m /
  max(m)`. The smallest class gets exactly `max_margin`.

  Returns:
    float64 array [K].
  """
  if not max_margin > 0:
    raise ValueError(f"ldam_margins: max_margin must be > 0, got {max_margin}")
  counts = _check_counts(class_counts, "ldam_margins")
  m = 1.0 / np.sqrt(np.sqrt(counts))
  return m * (max_margin / np.max(m))


def ldam(labels, logits, class_counts: ArrayLike, max_margin: float = 0.5,
         scale: float = 30.0) -> tf.Tensor:
  """LDAM loss per example (Cao et al. 2019; official LDAMLoss).

  L_i = CE(s * (z_i - m_{y_i} e_{y_i}), y_i): the margin of the true class is
  subtracted from its logit only, then all logits are scaled by s. The logits
  are meant to be cosine similarities from a normalised last layer (the
  official `resnet32_norm`); with a plain linear head LDAM diverges
  (docs/method.md#ldam-and-the-cosine-head).

  Args:
    labels: int [B].
    logits: float [B, K] (cosine logits in [-1, 1]).
    class_counts: N_k, length K, all > 0.
    max_margin: the largest margin (the smallest class's), 0.5 officially.
    scale: s, 30 officially.
  Returns:
    float [B].
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
  """Logit-adjusted softmax cross entropy per example (Menon et al. 2021, eq. 10).

  L_i = -log softmax(z_i + tau log pi)[y_i], pi_k = N_k / sum_j N_j: the
  training prior is added to the logits before the softmax, during training
  only (evaluation uses the raw logits). tau = 1 is Balanced Softmax (Ren et
  al. 2020); tau = 0 is `cross_entropy` exactly (z + 0 * log pi == z).

  Args:
    labels: int [B].
    logits: float [B, K].
    class_counts: N_k, length K, all > 0.
    tau: the adjustment's temperature, finite and >= 0.
  Returns:
    float [B] (float32 for float16/bfloat16/float32 logits, float64 for float64).
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
  """The hyper-parameters of a loss that needs N_k ("ldam", "logit_adjusted" and its alias),
  class_counts included, validated now so that a bad value fails before any training."""
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
    name: one of LOSSES: "ce", "focal" (hparam `gamma`, default 1.0), "ldam"
      (hparams `max_margin` 0.5, `scale` 30.0), "logit_adjusted" (hparam `tau`,
      default 1.0) or "balanced_softmax" (no hparams: logit_adjusted at tau = 1,
      keeping its own name). The last three need class_counts.
    class_counts: N_k; required by "ldam" and the logit-adjusted losses,
      validated and ignored by the others.
    **hparams: the loss's hyper-parameters; unknown names are an error, so a
      typo cannot silently fall back to a default.
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
  """Reduces a per-example loss [B] to a scalar with per-class weights w_k.

  Two conventions exist (w_i = class_weight[y_i], l_i the per-example loss):
    * "batch":   sum_i w_i l_i / B             (Keras' weighted mean)
    * "weights": sum_i w_i l_i / sum_i w_i     (PyTorch's
      `CrossEntropyLoss(weight=w, reduction='mean')`)

  Default "batch", because it is what the OFFICIAL M2m code does
  (alinlab/M2m at commit 5c59cb7): `train.py` lines 375-380 build every
  criterion with the class weights AND `reduction='none'`
  (`nn.CrossEntropyLoss(weight=per_cls_weights, reduction='none')`,
  `FocalLoss(weight=..., reduction='none')`, `LDAMLoss(..., weight=...,
  reduction='none')`), so each element is already `w_i l_i`, and then reduce
  with a plain mean over the batch: line 80 (`train_epoch`,
  `loss = criterion(outputs, targets).mean()`) and line 198 (`train_net`, the
  M2m step, `loss.mean().backward()`), i.e. divide by B. The official
  LDAM-DRW code (kaidic/LDAM-DRW) instead uses PyTorch's default
  `reduction='mean'` for CE and LDAM (`cifar_train.py`, `main_worker`:
  `nn.CrossEntropyLoss(weight=per_cls_weights)`; `losses.py` line 45:
  `F.cross_entropy(self.s*output, target, weight=self.weight)`), i.e.
  "weights", while its FocalLoss takes `.mean()` of the weighted per-example
  values (`losses.py` lines 11 and 21), i.e. "batch". The paper's numbers for
  M2m and all its baselines come from the M2m code, hence "batch"; pass
  reduction="weights" to follow LDAM-DRW's CE / LDAM. With unit weights the
  two coincide. (With "batch" the weights also rescale the effective learning
  rate, by mean_i w_i; with "weights" they do not.)

  Distribution (`tf.distribute`, R replicas each holding B / R examples,
  gradients SUMMED across replicas as Keras and `strategy.run` +
  all-reduce do):
    * "batch": divides by `global_batch_size` (the whole step's B, across all
      replicas). If None: the local batch size times `num_replicas_in_sync` of
      the current replica context (exact whenever the replicas' batches have
      equal size).
    * "weights": divides by the GLOBAL sum of weights W = sum over all
      replicas of sum_i w_i, so that sum_r grad(sum_{i in r} w_i l_i / W) is
      the single-device gradient exactly (even when the replicas' local sums
      differ; "local sum times R" would not be exact). W is `global_weight_sum`
      if given; otherwise, inside a replica context with more than one
      replica, it is obtained with `ReplicaContext.all_reduce(SUM, local
      sum)`; otherwise it is the local sum. W carries no gradient (it depends
      only on the labels).
  `global_batch_size` is ignored by "weights".

  Args:
    per_example_loss: float [B].
    labels: int [B].
    class_weight: None (all ones) or float array-like [K].
    global_batch_size: int or scalar tensor (see above); "batch" only.
    reduction: one of REDUCTIONS.
    global_weight_sum: optional scalar, the global sum of w_i for "weights".
  Returns:
    scalar tensor, same dtype as per_example_loss.
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
