"""Command-line flags generated from the fields of `m2m_tf.config.ExperimentConfig`: one per leaf,
with its name, default, help and rule (the flag's validator), typed by the annotation (bool, int,
float, str or enum, comma-separated tuple of ints/floats).
"""

import dataclasses
import typing
from typing import Dict

from absl import flags

from m2m_tf import config as config_lib
from m2m_tf.config_fields import check_field
from m2m_tf.errors import ConfigError
from m2m_tf.training.methods import METHODS

# The choices of the flags whose field leaves them to the layer that owns them.
CHOICES = {"method": tuple(sorted(METHODS))}


def _base_type(annotation):
  """(type, is_tuple) for int, Optional[float], Tuple[int, ...], ..."""
  args = [a for a in typing.get_args(annotation) if a is not type(None)]
  if typing.get_origin(annotation) is typing.Union:
    return _base_type(args[0])
  if typing.get_origin(annotation) is tuple:
    return args[0], True
  return annotation, False


def _leaf_fields() -> Dict[str, tuple]:
  """Leaf name -> (dataclasses.Field, resolved annotation, default in ExperimentConfig())."""
  default = config_lib.ExperimentConfig()
  out = {}
  owners = [(config_lib.ExperimentConfig, default)] + [
      (cls, getattr(default, name)) for name, cls in config_lib.SECTIONS.items()]
  for cls, instance in owners:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
      if f.name in config_lib.SECTIONS or not f.metadata.get("flag", True):
        continue
      out[f.name] = (f, hints[f.name], getattr(instance, f.name))
  return out


def _define(name, field, annotation, default, flag_values) -> None:
  kind, is_tuple = _base_type(annotation)
  choices, help_text = field.metadata.get("choices") or CHOICES.get(name), field.metadata["help"]
  if is_tuple:
    flags.DEFINE_list(name, None if default is None else [str(v) for v in default], help_text,
                      flag_values=flag_values)
  elif kind is bool:
    flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
  elif kind is int:
    flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
  elif kind is float:
    flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
  elif choices:
    flags.DEFINE_enum(name, default, list(choices), help_text, flag_values=flag_values)
  else:
    flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


def _parse(value, annotation):
  """A flag's value as the field holds it (lists of strings become typed tuples)."""
  kind, is_tuple = _base_type(annotation)
  if is_tuple and value is not None:
    return tuple(kind(v) for v in value)
  return value


def _validator(name, field, annotation):
  def check(value):
    try:
      check_field(name, _parse(value, annotation), field.metadata)
    except (ConfigError, ValueError) as e:
      raise flags.ValidationError(f"--{e}") from None
    return True
  return check


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one flag per leaf of `ExperimentConfig` (with its rule as a validator)."""
  for name, (field, annotation, default) in _leaf_fields().items():
    _define(name, field, annotation, default, flag_values)
    if field.metadata.get("rule") is not None:
      flags.register_validator(name, _validator(name, field, annotation), flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS
                      ) -> config_lib.ExperimentConfig:
  """The `ExperimentConfig` the parsed flags describe.

  Raises:
    ConfigError: a rule that ties several flags together is broken.
  """
  leaves = {name: _parse(flag_values[name].value, annotation)
            for name, (_, annotation, _) in _leaf_fields().items()}
  return config_lib.ExperimentConfig.from_leaves(**leaves)
