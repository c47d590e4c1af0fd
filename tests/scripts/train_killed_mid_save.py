"""Trains the tiny model in WORKDIR (argv[1]) for 3 epochs with a checkpoint every epoch and kills itself
(SIGKILL, no clean-up) inside the second checkpoint save: after its files are written to orbax's
temporary directory and before the rename that commits them."""

import os
import signal
import sys

from orbax.checkpoint._src.path import atomicity

from hyperlt.training import loop
from hyperlt.workdir import checkpoint
from tests import helpers

saves = []
real_save, real_finalize = checkpoint.save, atomicity.AtomicRenameTemporaryPath.finalize


def save(*args, **kwargs):
  saves.append(1)
  return real_save(*args, **kwargs)


async def finalize(self, *args, **kwargs):
  if len(saves) == 2:
    os.kill(os.getpid(), signal.SIGKILL)
  return await real_finalize(self, *args, **kwargs)


checkpoint.save, atomicity.AtomicRenameTemporaryPath.finalize = save, finalize
loop.train(helpers.tiny_config("optim.epochs=3", "train.checkpoint_every_epochs=1"), sys.argv[1],
           data=helpers.tiny_data(), log=print)
print("NOT KILLED")
