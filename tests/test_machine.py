"""Tests for m2m_tf.machine: how records and benchmarks name the machine."""

from absl.testing import absltest

from m2m_tf import machine


class CpuModelTest(absltest.TestCase):

  def test_family_and_model_tell_apart_same_named_cpus(self):
    # Two virtual AMD EPYCs, about 4x apart in ResNet-32 speed, with the same vague name.
    zen2 = {"model name": "AMD EPYC", "cpu family": "23", "model": "49"}
    zen4 = {"model name": "AMD EPYC", "cpu family": "25", "model": "17"}
    self.assertEqual(machine.cpu_model(zen4), "AMD EPYC (family 25, model 17)")
    self.assertNotEqual(machine.cpu_model(zen2), machine.cpu_model(zen4))

  def test_name_alone_where_numbers_are_missing(self):
    self.assertEqual(machine.cpu_model({"model name": "Apple M2"}), "Apple M2")
    self.assertTrue(machine.cpu_model({}))  # never empty: platform's name, else "unknown"

  def test_machine_name_is_this_cpu_and_its_cores(self):
    name = machine.machine_name()
    self.assertTrue(name.startswith(machine.cpu_model(machine.cpuinfo())))
    self.assertRegex(name, r", \d+ cores$")


if __name__ == "__main__":
  absltest.main()
