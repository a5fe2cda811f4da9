"""Phase-1 sharing: a run that starts from another's committed state (--init_from), when their
phase 1 is the same (docs/runs.md#phase-1-sharing-branching)."""

import os

from data_prep.atomic import read_json
from m2m_tf.config import ExperimentConfig
from m2m_tf.errors import CheckpointError, ConfigError
from m2m_tf.run_records import FLAGS_FILE, record_path
from m2m_tf.training import checkpoint as ckpt_lib
from m2m_tf.training import output_dir as out_lib
from m2m_tf.training.comparison import M2M_ONLY_FIELDS, comparable_config, differences
from m2m_tf.training.methods import get_method

# Fields that do not shape phase 1 (before the deferred epoch): a deferred run may branch from a
# run that differs only in these: the whole M2m section, and these leaves.
PHASE2_FIELDS = frozenset({"method", "epochs", "deferred_epoch", "init_from", "init_epoch"}
                          ) | M2M_ONLY_FIELDS | out_lib.NOT_RESULT_FIELDS


def steady_lr_at(src: dict, epoch: int) -> bool:
  """Whether a run (`src`: its `comparable_config`) kept its lr from the end of its warm-up up
  to `epoch` completed epochs: then it may go on in the other momentum form
  (docs/runs.md#phase-1-sharing-branching)."""
  return src["warmup_epochs"] < epoch and all(m >= epoch for m in src["lr_milestones"] or ())


def check_branch(source: dict, cfg: ExperimentConfig) -> None:
  """Refuses to branch `cfg` from a run (`source`: its flags.json) whose phase 1 differs in
  anything that shapes it; the momentum form may differ at an epoch of steady lr.

  Raises:
    ConfigError: naming the differing fields or methods.
  """
  diff = [k for k in differences(source, cfg.to_json()) if k not in PHASE2_FIELDS]
  init_from, init_epoch = cfg.runtime.init_from, cfg.runtime.init_epoch
  src = comparable_config(source)
  if "cb" not in (get_method(src["method"]).class_weight,
                   get_method(cfg.training.method).class_weight):
    diff = [k for k in diff if k != "cb_beta"]  # CB weights act in phase 2 only (DRW), or never
  if "momentum_form" in diff and steady_lr_at(src, init_epoch):
    diff.remove("momentum_form")
  if diff:
    hint = (" (momentum_form may differ only at an epoch the source's lr has been steady since "
            "its warm-up)" if "momentum_form" in diff else "")
    raise ConfigError(f"cannot branch from {init_from}: its phase 1 differs in {diff}{hint}.")
  if get_method(src["method"]).phase1 != get_method(cfg.training.method).phase1:
    raise ConfigError(f"cannot branch {cfg.training.method} from {init_from}: method "
                      f"{src['method']} trains phase 1 differently.")
  for name, method, deferred in (
      ("source", src["method"], src["deferred_epoch"]),
      ("this run", cfg.training.method, cfg.schedule.deferred_epoch)):
    if get_method(method).deferred and deferred < init_epoch:
      raise ConfigError(f"cannot branch at epoch {init_epoch}: the {name}'s second phase "
                        f"starts earlier, at epoch {deferred}.")


def branch(cfg: ExperimentConfig, trainer, checkpoint) -> int:
  """Loads `init_from`'s state after `init_epoch` epochs and commits it as this run's first;
  returns init_epoch. Raises CheckpointError (no such run or commit) or `check_branch`'s error."""
  init_from, init_epoch = cfg.runtime.init_from, cfg.runtime.init_epoch
  source = read_json(os.path.join(init_from, FLAGS_FILE))
  if source is None:
    raise CheckpointError(f"--init_from={init_from} is not a run folder (no flags.json).")
  check_branch(source, cfg)
  record = record_path(init_from, init_epoch)
  if not os.path.exists(record):
    raise CheckpointError(f"{init_from} has no committed state after {init_epoch} epochs "
                          f"({record}); that run must keep it (keep_epochs).")
  state = ckpt_lib.load_state(record)
  checkpoint.set_model(trainer)
  checkpoint.apply(trainer, state)
  checkpoint.commit(init_epoch)  # our own first commit: a kill from here resumes here
  return init_epoch
