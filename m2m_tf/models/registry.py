"""Builds a model by architecture name (the names used in configs and flags)."""

# Not `from m2m_tf.models import mlp`: the package re-exports the function
# `mlp`, which shadows the submodule of the same name.
from m2m_tf.models.mlp import mlp as _mlp
from m2m_tf.models import resnet

ARCHITECTURES = ("mlp", "resnet32", "preact_resnet18", "resnet50")


def build_model(arch, input_shape, num_classes, *, normed_head=False, **kw):
  """A fresh, uncompiled `keras.Model` mapping inputs to logits.

  Args:
    arch: one of ARCHITECTURES; "mlp" takes input_shape (d,), the ResNets (H, W, C) in [0, 1].
    normed_head: cosine `NormedDense` last layer (for LDAM).
    **kw: the builder's other keyword arguments (hidden_units, mean, std, name).
  Raises:
    ValueError: unknown `arch`, or an `input_shape` of the wrong rank.
  """
  input_shape = tuple(int(d) for d in input_shape)
  if arch == "mlp":
    if len(input_shape) != 1:
      raise ValueError(
          f"build_model: arch 'mlp' needs a 1-D input_shape (d,), got "
          f"{input_shape}")
    return _mlp(input_shape[0], num_classes, normed_head=normed_head, **kw)
  builders = {
      "resnet32": resnet.resnet32,
      "preact_resnet18": resnet.preact_resnet18,
      "resnet50": resnet.resnet50,
  }
  if arch not in builders:
    raise ValueError(
        f"build_model: unknown arch {arch!r}; expected one of "
        f"{', '.join(ARCHITECTURES)}")
  return builders[arch](num_classes, input_shape=input_shape,
                        normed_head=normed_head, **kw)


def build_classifier(arch, input_shape, num_classes, *, normed_head=False, hidden_units=None,
                     name=None, normalization=None):
  """f or g of a run: `build_model` with optional MLP widths, name and input normalization.

  normalization: (mean, std) per feature or channel; None keeps the builder's (none for the MLP,
  CIFAR-10's for the ResNets). hidden_units is ignored by the ResNets.
  """
  kw = {} if name is None else {"name": name}
  if normalization is not None:
    kw["mean"], kw["std"] = normalization
  if arch == "mlp" and hidden_units:
    kw["hidden_units"] = tuple(hidden_units)
  return build_model(arch, input_shape, num_classes, normed_head=normed_head, **kw)
