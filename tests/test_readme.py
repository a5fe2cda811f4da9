"""README promises: the Keras snippet runs as printed, and the results section is generated."""

import csv
import os
import re
import subprocess
import sys
import tempfile

import pytest
from absl.testing import absltest
import numpy as np

from launch import readme

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
  with open(os.path.join(ROOT, "README.md")) as fh:
    return fh.read()


def _readme_cli(args, cwd):
  """Runs `python -m launch.readme ARGS` in `cwd` (the repository is put on PYTHONPATH)."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", "launch.readme"] + args, cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def _write_csv(path, runs):
  """A grid table's CSV: (row, seed, test bACC) per run."""
  with open(path, "w") as fh:
    fh.write("row,seed,test_bacc\n" + "".join(f"{r},{s},{b}\n" for r, s, b in runs))


class ReadmeTest(absltest.TestCase):

  @pytest.mark.slow
  def test_snippet_is_short_and_runs(self):
    block = re.search(r"<!-- snippet:begin -->\n```python\n(.*?)```\n<!-- snippet:end -->",
                      _readme(), re.S)
    self.assertIsNotNone(block, "README lacks the Keras snippet markers")
    code = block.group(1)
    self.assertLessEqual(len([l for l in code.splitlines() if l.strip()]), 30)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               M2M_CACHE_DIR=tempfile.mkdtemp())
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    match = re.search(r"test bACC ([0-9.]+) at epoch (\d+)", proc.stdout)
    self.assertIsNotNone(match, proc.stdout)
    # 5 classes: chance is 20%; the snippet must have learnt something.
    self.assertGreater(float(match.group(1)), 30.0)

  def test_results_section_is_generated_from_results_files(self):
    text = _readme()
    self.assertEqual(readme.render(text, os.path.join(ROOT, "results")), text,
                     "README results section is stale: run `python -m launch.readme`")

  def test_check_exits_1_on_a_stale_readme_and_writes_nothing(self):
    tmp = tempfile.mkdtemp()
    results, path = os.path.join(tmp, "results"), os.path.join(tmp, "README.md")
    os.makedirs(results)
    with open(os.path.join(results, "reuters.md"), "w") as fh:
      fh.write("# reuters: Table 2\n\n| a |\n")
    _write_csv(os.path.join(results, "reuters.csv"), [("erm", 0, 60.0), ("erm", 1, 62.0)])
    with open(path, "w") as fh:
      fh.write(f"# Title\n\n{readme.BEGIN}\nold\n{readme.END}\n\ntail\n")
    args = [f"--readme={path}", f"--results_dir={results}"]
    stale = _readme_cli(args + ["--check"], cwd=tmp)
    self.assertEqual(stale.returncode, 1)
    self.assertEqual(stale.stderr.splitlines(), [
        "README.md is stale (its results section differs from results/): regenerate it with "
        f"`python -m launch.readme --readme={path} --results_dir={results}`."])
    with open(path) as fh:
      self.assertIn("\nold\n", fh.read())  # --check wrote nothing
    self.assertEqual(_readme_cli(args, cwd=tmp).returncode, 0)  # regenerate
    with open(path) as fh:
      text = fh.read()
    self.assertIn("- [`reuters.md`](results/reuters.md): reuters: Table 2", text)
    self.assertIn("| ERM | – | 61.0 ± 1.4 (2) / 59.8 | – |", text)
    self.assertTrue(text.endswith(f"{readme.END}\n\ntail\n"))
    self.assertEqual(_readme_cli(args + ["--check"], cwd=tmp).returncode, 0)
    # A changed run makes README stale again.
    _write_csv(os.path.join(results, "reuters.csv"), [("erm", 0, 60.0), ("erm", 1, 64.0)])
    self.assertEqual(_readme_cli(args + ["--check"], cwd=tmp).returncode, 1)

  def test_headline_is_each_rows_mean_and_std_over_its_finished_seeds(self):
    results = tempfile.mkdtemp()
    _write_csv(os.path.join(results, "twitter.csv"),
               [("m2m", 0, 67.0), ("m2m", 1, 68.0), ("m2m", 2, 69.5), ("drs", 0, 70.0)])
    with open(os.path.join(results, "cifar10_jpeg_lt.csv"), "w") as fh:
      fh.write("stage,seed,status,test_bacc\nm2m,0,done,73.0\nm2m,1,done,75.0\n"
               "m2m,2,running,\nldam,0,not started,\n")
    rows = {r[0]: r for r in (line.split(" | ") for line in readme.headline(results).splitlines())}
    sd = np.std([67.0, 68.0, 69.5], ddof=1)
    self.assertEqual(rows["| ERM-M2m"], ["| ERM-M2m", "74.0 ± 1.4 (73.0, 75.0) / 78.3", "–",
                                         f"68.2 ± {sd:.1f} (3) |"])
    self.assertEqual(rows["| ERM-DRS"], ["| ERM-DRS", "–", "–", "70.0 (1) |"])
    self.assertNotIn("| LDAM", rows)  # no finished run anywhere

  def test_readme_is_short_and_links_every_results_table_and_doc(self):
    text = _readme()
    self.assertLessEqual(len(text.splitlines()), 250)
    for path in sorted(os.listdir(os.path.join(ROOT, "results"))):
      if path.endswith(".md"):
        self.assertIn(f"(results/{path})", text)
    for path in sorted(os.listdir(os.path.join(ROOT, "docs"))):
      self.assertIn(f"(docs/{path})", text)

  def test_help_exits_0_and_writes_nothing(self):
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "README.md")
    with open(path, "w") as fh:
      fh.write(f"{readme.BEGIN}\nold\n{readme.END}\n")
    proc = _readme_cli(["--help", f"--readme={path}"], cwd=ROOT)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertIn("--check", proc.stdout)
    with open(path) as fh:
      self.assertEqual(fh.read(), f"{readme.BEGIN}\nold\n{readme.END}\n")

  def test_committed_readme_passes_check(self):
    proc = _readme_cli(["--check"], cwd=ROOT)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertEqual(proc.stdout.strip(), "README.md is up to date.")

  def test_quick_start_number_is_the_tables_m2m_seed_0(self):
    # The figure quoted beside the Quick start is the committed table's run, not typed freely.
    quoted = re.search(r"test bACC (\d+\.\d\d) on the", _readme())
    self.assertIsNotNone(quoted)
    with open(os.path.join(ROOT, "results", "reuters.csv")) as fh:
      rows = list(csv.DictReader(fh))
    run = [r for r in rows if r["row"] == "m2m" and r["seed"] == "0"]
    self.assertLen(run, 1)
    self.assertEqual(quoted.group(1), f"{float(run[0]['test_bacc']):.2f}")

  def test_quick_start_has_exactly_two_commands(self):
    quick = _readme().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, re.S)
    self.assertLen(blocks, 2)
    self.assertIn("python -m m2m_tf.main --dataset=reuters --method=m2m", blocks[0])
    with open(os.path.join(ROOT, ".ci", "run")) as fh:
      self.assertIn(blocks[1].strip(), fh.read())


if __name__ == "__main__":
  absltest.main()
