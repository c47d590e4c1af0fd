"""Data parallelism over one "data" mesh axis, on one host or many.

Every device holds a full copy of the parameters, the batch statistics and the optimiser state
(replicated), and a 1/N slice of each batch (sharded over the "data" axis). The training step is the
same ``jax.jit`` function for 1..N devices: its inputs carry these shardings, XLA partitions the
computation, and every reduction over the batch axis -- the loss mean, the gradient, and the BatchNorm
statistics -- becomes an all-reduce over the global batch. So N devices compute what one device would
compute on the whole batch, up to the order of floating-point summation.

Several hosts (processes) join through ``jax.distributed.initialize``; the mesh then spans every
process's devices, and each process supplies only its own rows of the global batch
(:func:`process_rows`, :func:`global_batch`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hyperlt.errors import UserInputError, require

DATA_AXIS = "data"

# Environment fallbacks for launchers that set variables rather than config overrides.
ENV_COORDINATOR = "HYPERLT_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "HYPERLT_NUM_PROCESSES"
ENV_PROCESS_ID = "HYPERLT_PROCESS_ID"

_initialized_with: tuple | None = None


def _env_int(name: str) -> int | None:
  text = os.environ.get(name, "").strip()
  if not text:
    return None
  try:
    return int(text)
  except ValueError:
    raise UserInputError(f"${name}: expected an integer, got {text!r}") from None


def initialize(coordinator_address: str = "", num_processes: int = 1, process_id: int = 0) -> None:
  """Joins a multi-process JAX run; a no-op for a single process.

  Empty settings fall back to ``$HYPERLT_COORDINATOR_ADDRESS``, ``$HYPERLT_NUM_PROCESSES`` and
  ``$HYPERLT_PROCESS_ID``. ``coordinator_address="auto"`` lets JAX detect the cluster (SLURM, Open MPI,
  Cloud TPU). It must run before the first JAX computation of the process; calling it again with the
  same settings does nothing.

  Args:
    coordinator_address: ``host:port`` of process 0, reachable from every process.
    num_processes: how many processes take part.
    process_id: this process's rank in ``0..num_processes-1``.
  """
  global _initialized_with
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR, "").strip()
  if num_processes <= 1:
    num_processes = _env_int(ENV_NUM_PROCESSES) or num_processes
  if process_id == 0:
    process_id = _env_int(ENV_PROCESS_ID) or 0
  if not coordinator_address:
    require(num_processes <= 1, f"parallel.num_processes: {num_processes} processes need "
            "parallel.coordinator_address (host:port of process 0)")
    return
  settings = (coordinator_address, num_processes, process_id)
  if _initialized_with is not None:
    require(_initialized_with == settings, f"parallel: this process already joined {_initialized_with}; "
            f"cannot join {settings}")
    return
  if coordinator_address == "auto":
    jax.distributed.initialize()
  else:
    require(":" in coordinator_address, f"parallel.coordinator_address: expected host:port, got "
            f"{coordinator_address!r}")
    require(num_processes >= 1, f"parallel.num_processes: expected >= 1, got {num_processes}")
    require(0 <= process_id < num_processes, f"parallel.process_id: expected 0..{num_processes - 1}, "
            f"got {process_id}")
    try:
      jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except RuntimeError as e:  # JAX was used before, or the coordinator is unreachable.
      raise UserInputError(f"parallel: jax.distributed.initialize({coordinator_address!r}, {num_processes}, "
                           f"{process_id}) failed: {e}") from None
  _initialized_with = settings


def initialize_from_config(parallel: ml_collections.ConfigDict) -> None:
  initialize(parallel.coordinator_address, parallel.num_processes, parallel.process_id)


def data_mesh(num_devices: int = 0) -> Mesh:
  """A one-axis mesh named "data" over the first ``num_devices`` devices (0 = every device).

  With several processes the mesh must span every device of every process.
  """
  devices = jax.devices()
  require(0 <= num_devices <= len(devices),
          f"parallel.num_devices: expected 0..{len(devices)} (0 = all), got {num_devices}")
  if num_devices and num_devices < len(devices):
    require(jax.process_count() == 1, "parallel.num_devices: a multi-process run uses every device; "
            "set it to 0")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over "data"; the other axes whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """A copy of ``tree`` on every device of ``mesh``.

  Every process must pass the same values. Built from per-device callbacks, so it works whether or not
  the mesh's devices all belong to this process.
  """
  sharding = replicated(mesh)

  def put(leaf):
    host = np.asarray(jax.device_get(to_local(leaf)))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)


def process_rows(global_batch_size: int) -> slice:
  """The rows of a global batch that this process supplies.

  The "data" mesh lists devices process by process, so process p owns the p-th contiguous block.
  """
  count = jax.process_count()
  require(global_batch_size % count == 0, f"optim.batch_size: {global_batch_size} is not divisible by "
          f"the {count} processes")
  local = global_batch_size // count
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def global_batch(local_rows: np.ndarray, mesh: Mesh, global_batch_size: int) -> jax.Array:
  """One global array, sharded over "data", from this process's rows (see :func:`process_rows`)."""
  shape = (global_batch_size,) + tuple(local_rows.shape[1:])
  return jax.make_array_from_process_local_data(batch_sharding(mesh), local_rows, shape)


def check_batch_divides(batch_size: int, mesh: Mesh) -> None:
  require(batch_size % mesh.size == 0, f"optim.batch_size: {batch_size} is not divisible by the "
          f"{mesh.size} devices of the data axis; choose a multiple of {mesh.size} or set "
          "parallel.num_devices")


def to_local(tree: Any) -> Any:
  """A replicated tree as ordinary arrays on this process's first device (for evaluation, saving)."""
  def local(leaf):
    if isinstance(leaf, jax.Array) and len(leaf.sharding.device_set) > 1:
      return leaf.addressable_shards[0].data
    return leaf

  return jax.tree.map(local, tree)


def is_primary() -> bool:
  """Whether this process writes files shared by the run (config, metrics)."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits until every process reaches this point (a no-op for one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
