"""Resumes the killed run in argv[1], trains the same config without interruption in argv[2], and prints
both parameter sets and what ``run.load`` restores from argv[1]."""

import sys

from hyperlt.training import loop
from hyperlt.workdir import run as run_lib
from tests import helpers

config = lambda: helpers.tiny_config("optim.epochs=3", "train.checkpoint_every_epochs=1")
resumed = loop.train(config(), sys.argv[1], data=helpers.tiny_data(), log=print)
straight = loop.train(config(), sys.argv[2], data=helpers.tiny_data(), log=print)
loaded = run_lib.load(sys.argv[1], with_data=False)
helpers.print_result({"resumed": helpers.param_lists(resumed), "straight": helpers.param_lists(straight),
                      "loaded": helpers.param_lists(loaded), "loaded_step": loaded.step})
