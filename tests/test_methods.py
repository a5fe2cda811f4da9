"""Tests of the method registry's derived properties (m2m_tf.training.methods)."""

from absl.testing import absltest

from m2m_tf.training.methods import METHODS, get_method


class MethodTest(absltest.TestCase):

  def test_deferred_methods(self):
    # Exactly the methods with a second phase at the deferred epoch.
    self.assertEqual(sorted(k for k, m in METHODS.items() if m.deferred), ["drs", "drw", "m2m"])

  def test_phase1_is_erm_for_the_deferred_methods_only(self):
    erm = get_method("erm").phase1
    same = sorted(k for k, m in METHODS.items() if m.phase1 == erm)
    self.assertEqual(same, ["drs", "drw", "erm", "m2m"])
    # RS, RW, CB-RW and SMOTE each train phase 1 their own way.
    others = {METHODS[k].phase1 for k in ("rs", "rw", "cb_rw", "smote")}
    self.assertLen(others, 4)
    self.assertNotIn(erm, others)


if __name__ == "__main__":
  absltest.main()
