"""Loads `.weights.h5` and PyTorch-layout `.npz` files into our models, with a one-line
`CheckpointError` naming the input shape, class count, architecture or head that does not fit.
"""

import os
import tempfile
import warnings
from typing import Dict, Optional

import h5py

from m2m_tf.errors import CheckpointError
from m2m_tf.models.torch_import import load_torch_state_dict

WEIGHT_SUFFIXES = (".npz", ".weights.h5")


def shape_str(shape) -> str:
  """A shape for messages: (None, 32, 3) -> '(?, 32, 3)'."""
  dims = ["?" if d is None else str(int(d)) for d in shape]
  return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def mismatch_error(checkpoint: str, data_name: str, ckpt_shape, ckpt_k, input_shape,
              num_classes) -> CheckpointError:
  """The one-line error of a checkpoint made for another input shape or number of classes."""
  return CheckpointError(
      f"checkpoint {checkpoint!r} does not fit dataset {data_name}: the checkpoint takes input "
      f"shape {shape_str(ckpt_shape)} and predicts {ckpt_k} classes, the dataset has input "
      f"shape {shape_str(input_shape)} and {num_classes} classes")


def _h5_shapes(path: str) -> Dict[str, tuple]:
  """Every variable of a Keras `.weights.h5` file: its path in the file -> shape."""
  shapes = {}
  with h5py.File(path, "r") as f:
    f.visititems(lambda name, obj: shapes.update({name: tuple(obj.shape)})
                 if isinstance(obj, h5py.Dataset) else None)
  return shapes


def _diagnose_h5(model, checkpoint, data_name, input_shape, num_classes) -> Optional[str]:
  """Why `checkpoint` does not load into `model` (built for the dataset), or None."""
  # Compared with the model saved fresh: Keras names a file's variables after the layer types.
  try:
    got = _h5_shapes(checkpoint)
  except OSError:
    return None  # not readable as HDF5: Keras' own error says more
  with tempfile.TemporaryDirectory() as tmp:
    fresh = os.path.join(tmp, "fresh.weights.h5")
    model.save_weights(fresh)
    want = _h5_shapes(fresh)
  diff = {n: (got[n], want[n]) for n in sorted(set(got) & set(want)) if got[n] != want[n]}
  ckpt_k = [g[-1] for g, w in diff.values() if w[-1:] == (num_classes,) and g[:-1] == w[:-1]]
  # A first-layer kernel (d, units) or (kh, kw, channels, filters) gives the input's last axis.
  # (Its output width may differ too: another hidden size.)
  first = [(got[n], want[n]) for n in sorted(set(got) & set(want))
           if len(want[n]) >= 2 and len(got[n]) == len(want[n]) and want[n][-2] == input_shape[-1]]
  ckpt_in = [g[-2] for g, w in first if g[-2] != w[-2]]
  if ckpt_k or ckpt_in:
    # Weights fix only the input's last axis (features or channels), not an image's size.
    last = ckpt_in[0] if ckpt_in else (input_shape[-1] if first else None)
    in_shape = (None,) * (len(input_shape) - 1) + (last,)
    return str(mismatch_error(checkpoint, data_name, in_shape, ckpt_k[0] if ckpt_k else num_classes,
                         input_shape, num_classes))
  return _layer_difference(checkpoint, model.name, got, want, diff)


def _layer_difference(checkpoint, model_name, got, want, diff) -> Optional[str]:
  """One line on variables that differ in name or shape (another arch or head), or None."""
  only_ckpt = sorted({n.rsplit("/vars/", 1)[0] for n in set(got) - set(want)})
  only_model = sorted({n.rsplit("/vars/", 1)[0] for n in set(want) - set(got)})
  if diff:
    name, (g, w) = next(iter(diff.items()))
    return (f"checkpoint {checkpoint!r} does not fit model {model_name!r}: variable {name} has "
            f"shape {g} in the checkpoint, {w} in the model (another --arch or hidden size?)")
  if only_ckpt or only_model:
    hint = (" (--normed_head must match the checkpoint: LDAM runs have the cosine head)"
            if any("normed_dense" in n for n in only_ckpt + only_model) else "")
    return (f"checkpoint {checkpoint!r} does not fit model {model_name!r}: layers only in the "
            f"checkpoint {only_ckpt[:3]}, only in the model {only_model[:3]}{hint}")
  return None


def load_weights(model, checkpoint: str, data_name: str = "?") -> None:
  """Loads a `.npz` (PyTorch layout) or `.weights.h5` file into `model`, built for the dataset.

  Raises CheckpointError for a missing file, another format, or weights that do not fit;
  data_name is for the messages.
  """
  if not os.path.exists(checkpoint):
    raise CheckpointError(f"checkpoint not found: {checkpoint!r}")
  if not checkpoint.endswith(WEIGHT_SUFFIXES):
    raise CheckpointError(f"checkpoint {checkpoint!r} must end in .weights.h5 or .npz")
  input_shape, num_classes = tuple(model.input_shape[1:]), int(model.output_shape[-1])
  if checkpoint.endswith(".npz"):
    try:
      load_torch_state_dict(model, checkpoint)
    except ValueError as e:  # its messages name the keys and both shapes
      raise CheckpointError(f"dataset {data_name} (input shape {shape_str(input_shape)}, "
                            f"{num_classes} classes): {e}") from e
    return
  # Keras warns about the layers it skips before it raises; those warnings are
  # noise once the error is named in one line, and are re-issued otherwise.
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
      model.load_weights(checkpoint)
      error = None
    except ValueError as e:
      error = e
  why = None if error is None else _diagnose_h5(model, checkpoint, data_name, input_shape,
                                                num_classes)
  if why is not None:
    raise CheckpointError(why) from error
  for w in caught:
    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  if error is not None:
    raise error  # not a shape problem we can name: keep Keras' own error
