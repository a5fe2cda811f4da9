"""Tests for data_prep.lazy: PEP 562 exports imported on first use."""

import subprocess
import sys

from absl.testing import absltest

from data_prep import lazy


class LazyExportsTest(absltest.TestCase):

  def test_a_name_is_imported_from_its_module(self):
    getattr_, _ = lazy.exports("pkg", {"sqrt": "math"}, {})
    self.assertEqual(getattr_("sqrt")(9.0), 3.0)

  def test_an_unknown_name_is_an_attribute_error(self):
    getattr_, _ = lazy.exports("pkg", {"sqrt": "math"}, {})
    with self.assertRaisesRegex(AttributeError, "module 'pkg' has no attribute 'cos'"):
      getattr_("cos")

  def test_dir_lists_globals_and_exports(self):
    _, dir_ = lazy.exports("pkg", {"sqrt": "math"}, {"__doc__": None})
    self.assertEqual(dir_(), ["__doc__", "sqrt"])

  def test_packages_import_nothing_heavy_until_asked(self):
    code = ("import sys, data_prep, m2m_tf.m2m.params; "
            "print(int('tensorflow' in sys.modules), int('data_prep.registry' in sys.modules)); "
            "data_prep.DATASETS; print(int('data_prep.registry' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    self.assertEqual(out.stdout.split(), ["0", "0", "1"])


if __name__ == "__main__":
  absltest.main()
