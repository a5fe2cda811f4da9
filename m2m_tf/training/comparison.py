"""Which differences between two configuration records can change a run's result: the rules
by which a folder resumes, g is reused and a run branches (docs/runs.md#resume-what-must-match)."""

from m2m_tf.config import ExperimentConfig
from m2m_tf.errors import ConfigError
from m2m_tf.run_records import flatten_record
from m2m_tf.training import output_dir as out_lib
from m2m_tf.training.methods import get_method

# Leaves that only M2m reads: two runs of methods without translation (ERM, DRS, ...) that
# differ only in these compute the same (a recipe's new M2m default must not block their resume).
M2M_ONLY_FIELDS = frozenset(ExperimentConfig().to_json()["m2m"]) | frozenset(
    {"g_checkpoint", "self_translation", "seed_pool_size"})


def comparable_config(record: dict) -> dict:
  """A flags.json (or `to_json()`) as resolved leaves {name: JSON value} (fields it predates:
  their default or recipe value; a record that no longer parses: as it stands)."""
  try:
    flat = ExperimentConfig.from_json(record).resolved().flat()
  except (ConfigError, ValueError, TypeError):
    flat = flatten_record(record)
  return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}


def _translates(flat: dict) -> bool:
  try:
    return get_method(flat.get("method")).m2m
  except ValueError:
    return True  # an unknown method: compare everything


def _uses_cb_weights(flat: dict) -> bool:
  try:
    method = get_method(flat.get("method"))
  except ValueError:
    return True  # an unknown method: compare everything
  return "cb" in (method.class_weight, method.deferred_class_weight)


# Leaves that can change a result only where their predicate holds for one of the two runs.
CONDITIONAL_FIELDS = {
    "cb_beta": _uses_cb_weights,
    "la_tau": lambda flat: flat.get("loss") == "logit_adjusted",
}


def _by_content(diff: list, a: dict, b: dict) -> list:
  # Your own data count by content once both records hold its `data_digest` (moved or renamed
  # files resume); a record made before digests compares the path, and no digest.
  if a.get("data_digest") and b.get("data_digest"):
    return [k for k in diff if k != "dataset"]
  return [k for k in diff if k != "data_digest"]


def differences(previous: dict, current: dict) -> list:
  """The leaves in which two configuration records differ in a way that can change the result
  (M2m's own only if one run translates; CONDITIONAL_FIELDS only where one run reads them)."""
  a, b = comparable_config(previous), comparable_config(current)
  diff = _by_content(out_lib.config_differences(a, b, {}), a, b)
  if not (_translates(a) or _translates(b)):
    diff = [k for k in diff if k not in M2M_ONLY_FIELDS]
  return [k for k in diff if k not in CONDITIONAL_FIELDS
          or CONDITIONAL_FIELDS[k](a) or CONDITIONAL_FIELDS[k](b)]
