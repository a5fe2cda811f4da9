"""m2m_tf.quiet: TensorFlow's start-up lines are dropped, every other stderr line is kept."""

import os
import subprocess
import sys

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stderr_of(code: str) -> str:
  """The stderr (file descriptor 2) of `code` run in a fresh interpreter."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        cwd=ROOT, timeout=300, check=True)
  return done.stderr


class QuietTest(absltest.TestCase):

  def test_held_stderr_drops_only_start_up_lines(self):
    err = _stderr_of(
        "import os, sys\n"
        "from m2m_tf import quiet\n"
        "with quiet.held_stderr():\n"
        "  os.write(2, b'before\\n')\n"
        "  os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on. x\\n')\n"
        "  print('python line', file=sys.stderr)\n"
        "  os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called\\n')\n"
        "os.write(2, b'after\\n')\n")
    self.assertEqual(err.splitlines(), ["before", "python line", "after"])

  def test_importing_tensorflow_prints_no_start_up_line(self):
    err = _stderr_of("from m2m_tf import quiet\nquiet.import_tensorflow()\n")
    self.assertFalse([line for line in err.splitlines() if line.strip()], err)

  def test_an_exception_in_the_block_still_restores_stderr(self):
    err = _stderr_of(
        "import os\n"
        "from m2m_tf import quiet\n"
        "try:\n"
        "  with quiet.held_stderr():\n"
        "    os.write(2, b'inside\\n')\n"
        "    raise ValueError\n"
        "except ValueError:\n"
        "  pass\n"
        "os.write(2, b'restored\\n')\n")
    self.assertEqual(err.splitlines(), ["inside", "restored"])


if __name__ == "__main__":
  absltest.main()
