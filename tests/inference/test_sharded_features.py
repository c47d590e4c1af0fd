"""Feature extraction split over a "data" mesh of 8 host devices gives the features of one device."""

from __future__ import annotations

import numpy as np
import pytest

from tests import helpers


@pytest.mark.slow
def test_feature_extraction_splits_over_eight_devices():
  proc = helpers.run_script("sharded_features.py", xla_flags="--xla_force_host_platform_device_count=8",
                            timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = helpers.read_result(proc.stdout)
  assert out["devices"] == 8
  one, eight = out["1"], out["8"]
  assert one["mesh"] is None and eight["mesh"] == 8
  # Gathered back onto this process's first device: every caller gets all features in one place.
  assert one["on_devices"] == eight["on_devices"] == 1
  features_one, features_eight = np.asarray(one["features"]), np.asarray(eight["features"])
  assert features_one.shape == features_eight.shape and features_one.shape[1] == 30
  np.testing.assert_allclose(features_eight, features_one, rtol=1e-5, atol=1e-5)
  assert eight["classes"] == one["classes"]
