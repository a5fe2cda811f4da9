r"""Keep the finished runs of the table grids in the repository, so work goes on elsewhere.

  python -m launch.store save --dataset=reuters     # runs/{ROOTS}/reuters -> results/
  python -m launch.store restore --dataset=reuters  # results/ -> runs/ (missing runs only)

The tuning and table grids are hundreds of short runs under runs/ (not committed).
Work on this project stops every few hours and may resume on a fresh machine, so
`save` writes what a finished run leaves that the tables and the selection read
(its results.json, history.csv and flags.json) into one compressed file,
`results/run_store/<dataset>.jsonl.gz`, plus the weights of the ERM runs that are
g for M2m runs (`<store>/<dataset>_g/`, small for the text datasets). `restore`
puts back every stored run that runs/ lacks (with its post-hoc adjustment,
posthoc_la.json, when it has one); `launch.tune` and `launch.grid` then skip
them, as they skip any finished run. A g whose weights were not stored
(larger than MAX_G_BYTES) is not restored: the grid trains it again.
"""

import gzip
import json
import os
import shutil
import sys
from typing import Iterator, List

from absl import flags

from m2m_tf.cli import run_absl
from data_prep.atomic import atomic_save, atomic_write_text
from m2m_tf.config import G_SEED_OFFSET
from m2m_tf.run_records import BEST_WEIGHTS_FILE, FLAGS_FILE, HISTORY_FILE, POSTHOC_FILE
from m2m_tf.run_records import RESULTS_FILE

FLAGS = flags.FLAGS

# runs/<root>/<dataset> of each grid kept: the tuning runs, the grids in Keras' momentum form
# (recorded before PyTorch's became the default; the ablation, vocabulary and substitute
# tables) and the Table-2 grids in PyTorch's form (the default; results/<dataset>.md).
ROOTS = ("tune", "grid", "grid_pytorch")
FILES = (RESULTS_FILE, HISTORY_FILE, FLAGS_FILE)
# Kept when a run has them: its post-hoc logit adjustment (a table row of its own).
OPTIONAL_FILES = (POSTHOC_FILE,)
MAX_G_BYTES = 4 << 20
STORE = os.path.join("results", "run_store")


def finished_runs(runs: str, dataset: str) -> Iterator[str]:
  """Paths, relative to `runs`, of every finished run (a results.json) of the dataset's grids."""
  for kind in ROOTS:
    top = os.path.join(runs, kind, dataset)
    for here, dirs, files in os.walk(top):
      dirs.sort()
      if RESULTS_FILE in files:
        dirs.clear()  # a run's own subfolders (saved_model, ckpt) hold no runs
        yield os.path.relpath(here, runs)


def is_stored_root(root: str, dataset: str, runs: str = "runs") -> bool:
  """Whether `root` is the run folder of a grid this store keeps (`runs/<ROOTS>/<dataset>`)."""
  return os.path.normpath(root) in {os.path.normpath(os.path.join(runs, kind, dataset))
                                    for kind in ROOTS}


def _is_g(rel: str) -> bool:
  """Whether a run is an ERM run that trains g (`runner.g_runs`: erm_..._s<seed>, seed >=
  G_SEED_OFFSET)."""
  name = os.path.basename(rel)
  return name.startswith("erm_") and int(name.rsplit("_s", 1)[1]) >= G_SEED_OFFSET


def _write_bytes(path: str, data: bytes) -> None:
  with open(path, "wb") as fh:
    fh.write(data)


def _record(runs: str, rel: str, g_dir: str, store: str) -> dict:
  """A finished run's store record: its FILES (and OPTIONAL_FILES it has); a g's weights are
  copied to `g_dir` when small enough (MAX_G_BYTES), and the record names them."""
  rec = {"run": rel}
  for name in FILES + tuple(f for f in OPTIONAL_FILES if os.path.exists(os.path.join(runs, rel,
                                                                                       f))):
    with open(os.path.join(runs, rel, name)) as fh:
      rec[name] = fh.read()
  weights = os.path.join(runs, rel, BEST_WEIGHTS_FILE)
  if _is_g(rel) and os.path.getsize(weights) <= MAX_G_BYTES:
    dest = os.path.join(g_dir, rel.replace(os.sep, "__") + ".weights.h5")
    if not os.path.exists(dest):
      atomic_save(lambda tmp, src=weights: shutil.copyfile(src, tmp), dest)
    rec["g_weights"] = os.path.relpath(dest, store)
  return rec


def _stored(path: str) -> List[dict]:
  """The records of a store file ([] when there is none)."""
  if not os.path.exists(path):
    return []
  with gzip.open(path, "rt") as fh:
    return [json.loads(line) for line in fh if line.strip()]


def _walk_order(rel: str) -> tuple:
  """The order `finished_runs` yields a run in (root by ROOTS, then its path's parts)."""
  parts = rel.split("/")
  return (ROOTS.index(parts[0]) if parts[0] in ROOTS else len(ROOTS), parts)


def save(runs: str, dataset: str, store: str) -> int:
  """Writes every finished run of the dataset's grids into the store; returns how many.

  A stored run that `runs` lacks (a g whose weights were too large to keep, which `restore`
  does not put back) keeps its record: a save never drops a run it cannot see.
  """
  g_dir, path = os.path.join(store, f"{dataset}_g"), os.path.join(store, f"{dataset}.jsonl.gz")
  recs = {rel: _record(runs, rel, g_dir, store) for rel in finished_runs(runs, dataset)}
  recs.update({r["run"]: r for r in _stored(path) if r["run"] not in recs})
  lines = [json.dumps(recs[rel], sort_keys=True) for rel in sorted(recs, key=_walk_order)]
  data = gzip.compress("\n".join(lines).encode(), mtime=0)  # mtime 0: same runs, same bytes
  atomic_save(lambda tmp: _write_bytes(tmp, data), path)
  return len(lines)


def restore(runs: str, dataset: str, store: str) -> List[str]:
  """Puts back every stored run that `runs` lacks (results.json last); returns their paths."""
  records = _stored(os.path.join(store, f"{dataset}.jsonl.gz"))
  done = []
  for rec in records:
    out = os.path.join(runs, rec["run"])
    if os.path.exists(os.path.join(out, RESULTS_FILE)):
      continue
    if _is_g(rec["run"]) and "g_weights" not in rec:
      continue  # no weights kept: the grid trains this g again
    os.makedirs(out, exist_ok=True)
    if "g_weights" in rec:
      shutil.copyfile(os.path.join(store, rec["g_weights"]), os.path.join(out, BEST_WEIGHTS_FILE))
    for name in [f for f in OPTIONAL_FILES if f in rec] + list(FILES):  # results.json last:
      atomic_write_text(os.path.join(out, name), rec[name])  # a run is finished once it exists
    done.append(rec["run"])
  return done


def main(argv) -> int:
  """`save` or `restore` (the first argument or --action)."""
  action = FLAGS.action or (argv[1] if len(argv) == 2 else None)
  if action not in ("save", "restore"):
    sys.exit("launch.store: say save or restore (python -m launch.store save --dataset=reuters)")
  if action == "save":
    n = save(FLAGS.runs, FLAGS.dataset, FLAGS.store)
    print(f"saved {n} finished runs of {FLAGS.dataset} to {FLAGS.store}")
  else:
    done = restore(FLAGS.runs, FLAGS.dataset, FLAGS.store)
    print(f"restored {len(done)} runs of {FLAGS.dataset} from {FLAGS.store}")
  return 0


def define_flags() -> None:
  """The command's flags (defined only when run as a command: launch.tune and launch.grid
  import this module and have flags of the same names)."""
  flags.DEFINE_enum("action", None, ["save", "restore"], "Alias of the first argument.")
  flags.DEFINE_string("dataset", "reuters", "Dataset whose grids to save or restore.")
  flags.DEFINE_string("runs", "runs", "The run folder (holding tune/<dataset>, grid/<dataset>).")
  flags.DEFINE_string("store", STORE, "Where the store lives.")


if __name__ == "__main__":
  define_flags()
  run_absl(main)
