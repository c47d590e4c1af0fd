"""Data parallelism on one host: 8 CPU devices train exactly like 1 device.

The device count is fixed when JAX starts, so the runs happen in a subprocess started with
XLA_FLAGS=--xla_force_host_platform_device_count=8. The trajectory is compared on the device-resident
path (batch gathered on the device, then constrained to the "data" sharding); for both input paths the
compiled 8-device program is checked to give each device 1/8 of the batch. (The host loader's split of
a global batch between processes is tested in tests/data/test_streaming.py; feature extraction over 8
devices in tests/inference/test_sharded_features.py.)
"""

from __future__ import annotations


import numpy as np
import pytest

from hyperlt import distributed
from hyperlt.errors import UserInputError
from tests import helpers

@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory) -> dict:
  proc = helpers.run_script("eight_devices.py", str(tmp_path_factory.mktemp("sharding")),
                            cache_dir=helpers.xla_cache(tmp_path_factory),
                            xla_flags="--xla_force_host_platform_device_count=8", timeout=170)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return helpers.read_result(proc.stdout)


@pytest.mark.slow
def test_eight_devices_follow_the_one_device_trajectory(eight_devices):
  assert eight_devices["devices"] == 8
  one, eight = eight_devices["resident1"], eight_devices["resident8"]
  assert len(one["losses"]) == len(eight["losses"]) >= 5
  # Summation order differs between 1 and 8 devices; everything else (global-batch BatchNorm
  # statistics, gradient mean, augmentation and preference draws) must agree.
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
  for a, b in zip(eight["params"], one["params"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_evaluation_on_eight_devices_equals_one(eight_devices):
  assert len(eight_devices["evaluated"]) == 3
  assert eight_devices["evaluated"] == eight_devices["evaluated_one"]


@pytest.mark.slow
@pytest.mark.parametrize("path", ["resident", "streamed"])
def test_each_device_processes_one_eighth_of_the_batch(eight_devices, path):
  hlo = eight_devices[f"hlo_{path}"]
  assert "f32[2,8,8,1]" in hlo  # the per-device slice of the [16, 8, 8, 1] batch
  assert "f32[16,8,8,1]" not in hlo
  assert "all-reduce" in hlo    # the batch mean is combined across devices


def test_batch_must_divide_over_the_devices():
  mesh = distributed.data_mesh(1)
  distributed.check_batch_divides(3, mesh)
  with pytest.raises(UserInputError, match="parallel.num_devices: expected 0..1"):
    distributed.data_mesh(2)


def test_replicate_and_to_local_round_trip():
  mesh = distributed.data_mesh()
  tree = {"a": np.arange(6.0).reshape(2, 3), "b": np.int32(7)}
  placed = distributed.replicate(tree, mesh)
  assert placed["a"].sharding.is_fully_replicated
  local = distributed.to_local(placed)
  np.testing.assert_array_equal(np.asarray(local["a"]), tree["a"])
  assert int(local["b"]) == 7
