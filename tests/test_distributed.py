"""Multi-host data parallelism: two processes on 127.0.0.1 train one model together.

Each process has 2 CPU devices, so the "data" axis spans 4 devices in 2 processes; they join through
jax.distributed (gloo collectives on CPU), share one work dir (process 0 writes metrics, both take part
in the orbax saves), and must end with identical parameters that also match a 1-process run.
"""

from __future__ import annotations

import socket
import subprocess

import numpy as np
import pytest

from hyperlt import distributed
from hyperlt import configs as config_lib
from hyperlt.errors import UserInputError
from tests import helpers

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _result(proc_out: str) -> dict:
  return helpers.read_result(proc_out)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:
  shared = tmp_path_factory.mktemp("two_processes")
  port = str(_free_port())
  env = helpers.script_env(xla_flags="--xla_force_host_platform_device_count=2")
  logs = [(shared / f"process{i}.out", shared / f"process{i}.err") for i in (0, 1)]
  workers = [subprocess.Popen(helpers.script_command("multi_host_worker.py", port, str(i), str(shared)),
                              env=env, cwd=helpers.REPO_ROOT,
                              stdout=open(out, "w"), stderr=open(err, "w")) for i, (out, err) in enumerate(logs)]
  try:
    reference_dir = tmp_path_factory.mktemp("one_process")
    reference = helpers.run_script("multi_host_worker.py", "", "0", str(reference_dir),
                                   cache_dir=helpers.xla_cache(tmp_path_factory), timeout=150)
    for w in workers:
      w.wait(timeout=150)
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
  outputs = [(out.read_text(), err.read_text()) for out, err in logs]
  for w, (_, err) in zip(workers, outputs):
    assert w.returncode == 0, err[-3000:]
  assert reference.returncode == 0, reference.stderr[-3000:]
  return {"workers": [_result(out) for out, _ in outputs], "reference": _result(reference.stdout),
          "shared": shared, "reference_dir": reference_dir}


@pytest.mark.slow
def test_two_processes_form_one_four_device_mesh(two_processes):
  for result in two_processes["workers"]:
    assert result["processes"] == 2 and result["devices"] == 4
  assert two_processes["reference"]["processes"] == 1


@pytest.mark.slow
def test_two_processes_agree_with_each_other_and_with_one_process(two_processes):
  first, second = two_processes["workers"]
  reference = two_processes["reference"]
  assert first["step"] == second["step"] == reference["step"] == 2 * (92 // 16)
  for a, b in zip(first["params"], second["params"]):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(first["params"], reference["params"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  shared_losses = helpers.logged_losses(two_processes["shared"])
  reference_losses = helpers.logged_losses(two_processes["reference_dir"])
  np.testing.assert_allclose(shared_losses, reference_losses, rtol=1e-5)
  assert len(shared_losses) == first["step"]  # process 0 alone wrote the metrics


@pytest.mark.parametrize("args, message", [
    (("127.0.0.1:1234", 2, 2), "parallel.process_id: expected 0..1"),
    (("127.0.0.1", 2, 0), "expected host:port"),
    (("", 2, 0), "need parallel.coordinator_address"),
])
def test_initialize_rejects_bad_launch_settings(args, message):
  with pytest.raises(UserInputError, match=message):
    distributed.initialize(*args)


def test_initialize_is_a_no_op_for_one_process(monkeypatch):
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  distributed.initialize("", 1, 0)
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
  with pytest.raises(UserInputError, match="HYPERLT_NUM_PROCESSES: expected an integer"):
    distributed.initialize("", 1, 0)


def test_validate_checks_the_parallel_section():
  config = config_lib.load("digits")
  config_lib.override(config, ["parallel.num_processes=2"])
  with pytest.raises(UserInputError, match="parallel.coordinator_address: required for 2 processes"):
    config_lib.validate(config)
  config_lib.override(config, ["parallel.coordinator_address=10.0.0.1:5000", "parallel.process_id=3"])
  with pytest.raises(UserInputError, match="parallel.process_id: expected an integer in 0..1"):
    config_lib.validate(config)
