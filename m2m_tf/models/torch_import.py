"""Converts between a PyTorch state_dict saved as .npz and a Keras model of this package.

Keys follow from the layer names (docs/method.md#pytorch-checkpoints).
"""

import os

import keras
import numpy as np

from m2m_tf.models import heads

_IGNORED_SUFFIXES = (".num_batches_tracked",)
_DATA_PARALLEL_PREFIX = "module."


def _walk_layers(layer):
  """Yields every leaf layer, descending into nested models."""
  sublayers = getattr(layer, "layers", None)
  if isinstance(layer, keras.Model) and sublayers is not None:
    for sub in sublayers:
      yield from _walk_layers(sub)
  else:
    yield layer


def _conv_kernel(a):
  return np.transpose(a, (2, 3, 1, 0))  # torch (out, in, kh, kw) -> Keras (kh, kw, in, out)


def _dense_kernel(a):
  return np.transpose(a, (1, 0))  # torch (out, in) -> Keras (in, out)


def _same(a):
  return a


def _bias(layer) -> list:
  return [("bias", layer.bias, tuple(layer.bias.shape), _same)] if layer.use_bias else []


def _layer_entries(layer) -> list:
  """(torch suffix, Keras variable, torch-layout shape, converter) of one leaf layer."""
  if isinstance(layer, keras.layers.Conv2D) and not isinstance(
      layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
              keras.layers.Conv2DTranspose)):
    kh, kw, cin, cout = layer.kernel.shape
    return [("weight", layer.kernel, (cout, cin, kh, kw), _conv_kernel)] + _bias(layer)
  if isinstance(layer, keras.layers.BatchNormalization):
    entries = [("weight", layer.gamma, tuple(layer.gamma.shape), _same)] if layer.scale else []
    entries += [("bias", layer.beta, tuple(layer.beta.shape), _same)] if layer.center else []
    return entries + [
        ("running_mean", layer.moving_mean, tuple(layer.moving_mean.shape), _same),
        ("running_var", layer.moving_variance, tuple(layer.moving_variance.shape), _same)]
  if isinstance(layer, keras.layers.Dense):
    cin, cout = layer.kernel.shape
    return [("weight", layer.kernel, (cout, cin), _dense_kernel)] + _bias(layer)
  if isinstance(layer, heads.NormedDense):
    return [("weight", layer.kernel, tuple(layer.kernel.shape), _same)]
  if layer.weights:
    raise ValueError(
        f"load_torch_state_dict: layer {layer.name!r} of type "
        f"{type(layer).__name__} has weights but no PyTorch mapping")
  return []


def _expected_tensors(model):
  """Maps PyTorch key -> (keras variable, torch-layout shape, converter)."""
  expected = {}
  for layer in _walk_layers(model):
    for suffix, variable, torch_shape, convert in _layer_entries(layer):
      expected[f"{layer.name}.{suffix}"] = (
          variable, tuple(int(d) for d in torch_shape), convert)
  return expected


def load_torch_state_dict(model, npz_path):
  """Loads a PyTorch-layout state_dict (.npz) into the built `model`; returns `model`.

  Every key and shape is checked before any variable is written.

  Raises:
    FileNotFoundError: `npz_path` does not exist.
    ValueError: an unreadable .npz, a missing or unused key, or a shape mismatch.
  """
  path = os.fspath(npz_path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"load_torch_state_dict: no such file: {path}")
  try:
    with np.load(path, allow_pickle=False) as data:
      state = {k: np.asarray(data[k]) for k in data.files}
  except (OSError, ValueError) as e:
    raise ValueError(
        f"load_torch_state_dict: {path} is not a readable .npz file: {e}"
    ) from e
  if state and all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state):
    state = {k[len(_DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
  state = {k: v for k, v in state.items()
           if not k.endswith(_IGNORED_SUFFIXES)}

  expected = _expected_tensors(model)
  problems = []
  missing = sorted(set(expected) - set(state))
  if missing:
    problems.append(f"missing keys {missing}")
  unexpected = sorted(set(state) - set(expected))
  if unexpected:
    problems.append(f"unexpected keys {unexpected}")
  for key in sorted(set(expected) & set(state)):
    variable, torch_shape, _ = expected[key]
    if tuple(state[key].shape) != torch_shape:
      problems.append(
          f"shape mismatch for key {key!r}: checkpoint has "
          f"{tuple(state[key].shape)}, model expects {torch_shape} "
          f"(PyTorch layout; Keras variable {variable.path} has shape "
          f"{tuple(variable.shape)})")
  if problems:
    raise ValueError(
        f"load_torch_state_dict: {path} does not fit model {model.name!r}: "
        + "; ".join(problems))

  for key, (variable, _, convert) in expected.items():
    variable.assign(convert(state[key]).astype(variable.dtype))
  return model


_TO_TORCH = {_conv_kernel: lambda a: np.transpose(a, (3, 2, 0, 1)),
             _dense_kernel: lambda a: np.transpose(a, (1, 0)), _same: lambda a: a}


def torch_state_dict(model) -> dict:
  """The inverse of `load_torch_state_dict`: `model`'s weights as a PyTorch-layout {key: array}."""
  return {key: _TO_TORCH[convert](np.asarray(variable.numpy()))
          for key, (variable, _, convert) in _expected_tensors(model).items()}

