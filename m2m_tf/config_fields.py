"""The field helpers of the configuration's sections (m2m_tf/config.py, m2m_tf/m2m/params.py):
a field carries its help text, choices and rule, and a section checks them when it is built."""

import dataclasses
from typing import Callable, Optional, Tuple

from m2m_tf.errors import ConfigError


def option(default, help_text: str, *, rule: Optional[Tuple[Callable, str]] = None,
           choices: Optional[Tuple[str, ...]] = None, flag: bool = True, record: bool = True,
           builder: bool = False):
  """A configuration field with its help text and its check.

  Args:
    default: the default value (immutable; {} gives an empty dict per instance).
    help_text: the flag's help.
    rule: (predicate, "must ...") applied to a value that is not None.
    choices: the allowed strings (an enum flag).
    flag: False for fields that have no command-line flag.
    record: False for fields a run does not record in flags.json.
    builder: True for data options passed to the dataset's builder when set.
  """
  kind = {"default_factory": dict} if default == {} else {"default": default}
  return dataclasses.field(**kind, metadata={
      "help": help_text, "rule": rule, "choices": choices, "flag": flag, "record": record,
      "builder": builder})


def at_least(low) -> Tuple[Callable, str]:
  """The rule "must be >= low"."""
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


class Section:
  """A dataclass mix-in that checks every field against its metadata after construction."""

  def __post_init__(self):
    for f in dataclasses.fields(self):
      check_field(f.name, getattr(self, f.name), f.metadata)
