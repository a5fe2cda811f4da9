"""README promises: the Keras snippet runs as printed, and the results section is generated."""

import os
import re
import subprocess
import sys
import tempfile

from absl.testing import absltest

from launch import readme

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
  with open(os.path.join(ROOT, "README.md")) as fh:
    return fh.read()


class ReadmeTest(absltest.TestCase):

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

  def test_quick_start_has_exactly_two_commands(self):
    quick = _readme().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, re.S)
    self.assertLen(blocks, 2)
    self.assertIn("python -m m2m_tf.main --dataset=reuters --method=m2m", blocks[0])
    with open(os.path.join(ROOT, ".ci", "run")) as fh:
      self.assertIn(blocks[1].strip(), fh.read())


if __name__ == "__main__":
  absltest.main()
