"""Your own data are recorded by content: `data_prep.digest`, flags.json's `data_digest`, resume.

A run on `npz:`/`csv:`/`folder:`/`tfds:`/`tfrecord:` data records the sha256 of the splits it
loaded. Resuming it on changed content is refused in one line (restore the file, or
--overwrite); the same content under another name or folder resumes. Runs recorded before the
digest existed keep comparing the path.
"""

import os
import shutil
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from data_prep import digest
from data_prep.registry import load_dataset
from m2m_tf.config import ExperimentConfig
from m2m_tf.errors import OutputDirError
from data_prep.atomic import atomic_write_json, read_json
from m2m_tf.run_records import record_path
from m2m_tf.training import output_dir as out_lib
from m2m_tf.training import run
from m2m_tf.training.comparison import differences


def _write_npz(path, change=False):
  """300 examples of 6 features, 3 classes; `change` alters one value of one example."""
  rng = np.random.default_rng(0)
  y = np.arange(300) % 3
  x = (rng.normal(0, 1, (300, 6)) + y[:, None]).astype(np.float32)
  if change:
    x[17, 2] += 0.5
  np.savez(path, x_train=x, y_train=y)


def _config(path, out, **kw):
  return ExperimentConfig.from_leaves(dataset=f"npz:{path}", method="erm", epochs=2,
                                      batch_size=32, output_dir=out, verbose=0,
                                      jit_compile="false", export=False, **kw)


class DigestTest(tf.test.TestCase):
  """The digest and the comparison of records (no training)."""

  def setUp(self):
    super().setUp()
    self.tmp = self.get_temp_dir()

  def test_digest_is_the_content_not_the_path(self):
    a, b, c = (os.path.join(self.tmp, n) for n in ("a.npz", "b.npz", "c.npz"))
    _write_npz(a)
    _write_npz(b)
    _write_npz(c, change=True)
    da, db, dc = (digest.data_digest(load_dataset(f"npz:{p}")) for p in (a, b, c))
    self.assertEqual(da, db)
    self.assertNotEqual(da, dc)
    self.assertLen(da, 64)
    # The same file read with other options (another hold-out) is other data.
    self.assertNotEqual(da, digest.data_digest(load_dataset(f"npz:{a}", test_fraction=0.3)))

  def test_records_compare_the_digest_instead_of_the_path(self):
    one = _config("/data/a.npz", "x").replace(data_digest="1" * 64).to_json()
    moved = _config("/elsewhere/b.npz", "x").replace(data_digest="1" * 64).to_json()
    changed = _config("/data/a.npz", "x").replace(data_digest="2" * 64).to_json()
    older = _config("/data/a.npz", "x").to_json()  # made before digests: none recorded
    self.assertEqual(differences(one, moved), [])
    self.assertEqual(differences(one, changed), ["data_digest"])
    self.assertEqual(differences(older, one), [])
    self.assertEqual(differences(older, moved), ["dataset"])

  def test_changed_content_is_refused_in_one_line(self):
    out = os.path.join(self.tmp, "run")
    os.makedirs(os.path.join(out, "ckpt"))
    previous = _config("/data/a.npz", out).replace(data_digest="1" * 64).to_json()
    atomic_write_json(os.path.join(out, out_lib.FLAGS_FILE), previous)
    open(os.path.join(out, "ckpt", "state-0001.json"), "w").close()  # one committed epoch
    current = _config("/data/a.npz", out).replace(data_digest="2" * 64).to_json()
    with self.assertRaises(OutputDirError) as e:
      out_lib.plan_output_dir(out, current, False, lambda p: differences(p, current))
    message = str(e.exception)
    self.assertNotIn("\n", message)
    self.assertIn("npz:/data/a.npz changed since (data_digest differs); restore the file(s)",
                  message)
    self.assertIn("--overwrite", message)
    self.assertEqual(out_lib.plan_output_dir(out, current, True, None).action, "replace")


@pytest.mark.slow
class DigestResumeTest(tf.test.TestCase):
  """A real run: stopped after 1 of 2 epochs, refused on changed data, resumed when moved."""

  def test_changed_data_refused_moved_data_resumes(self):
    tmp = tempfile.mkdtemp(prefix="m2m_test_digest_")
    self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
    path, out = os.path.join(tmp, "data.npz"), os.path.join(tmp, "run")
    _write_npz(path)
    first = run.run_experiment(_config(path, out, stop_after=1))
    self.assertEqual(first["stopped_after"], 1)
    recorded = read_json(os.path.join(out, "flags.json"))["data"]["data_digest"]
    epoch_1 = read_json(record_path(out, 1))["epoch_seconds"]
    self.assertEqual(recorded, digest.data_digest(load_dataset(f"npz:{path}")))
    _write_npz(path, change=True)  # the same path, other content
    with self.assertRaisesRegex(OutputDirError, r"^[^\n]*changed since \(data_digest differs\); "
                                r"restore the file\(s\) it was made from to resume it, or pass "
                                r"--overwrite to start again\.$"):
      run.run_experiment(_config(path, out))
    moved = os.path.join(tmp, "moved", "renamed.npz")
    os.makedirs(os.path.dirname(moved))
    _write_npz(moved)  # the original content, under another name and folder
    os.remove(path)
    res = run.run_experiment(_config(moved, out))
    self.assertEqual(res["epoch_seconds"][:1], epoch_1)  # resumed after epoch 1, not restarted
    self.assertLen(res["epoch_seconds"], 2)
    self.assertEqual(read_json(os.path.join(out, "flags.json"))["data"]["data_digest"], recorded)


if __name__ == "__main__":
  tf.test.main()
