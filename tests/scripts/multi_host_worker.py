"""One process of a multi-host run: argv = PORT PROCESS_ID WORKDIR (an empty PORT: a 1-process run).
Trains the tiny model and prints the process and device counts, the step and the parameters."""

import sys

import jax

from hyperlt.training import loop
from tests import helpers

port, process_id, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
launch = [f"parallel.coordinator_address=127.0.0.1:{port}", "parallel.num_processes=2",
          f"parallel.process_id={process_id}"] if port else []
run = loop.train(helpers.tiny_config(*launch), workdir, data=helpers.tiny_data(), log=print)
helpers.print_result({"processes": jax.process_count(), "devices": jax.device_count(), "step": run.step,
                      "params": helpers.param_lists(run)})
