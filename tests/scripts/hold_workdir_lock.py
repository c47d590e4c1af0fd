"""Holds the work-dir lock of argv[1] (hyperlt.workdir.lock) for a minute: a second writer to refuse."""

import sys
import time

from hyperlt.workdir import lock

with lock.exclusive(sys.argv[1]):
  print("held", flush=True)
  time.sleep(60)
