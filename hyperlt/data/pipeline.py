"""From a config's ``data`` section to a run's data (:class:`hyperlt.data.dataset.RunData`).

List files (``data.source = "lists"``) become :class:`~hyperlt.data.streamed.StreamedData`, decoded on
demand; every other source (digits, .npz, TFDS) becomes :class:`~hyperlt.data.resident.ResidentData`,
held in memory.
"""

from __future__ import annotations

import ml_collections

from hyperlt.data import lists, resident, sources, streamed
from hyperlt.data.dataset import RunData
from hyperlt.errors import require

def prepare(data: ml_collections.ConfigDict, dataset: sources.Dataset | None = None) -> RunData:
  """The run's data described by ``data``; ``dataset`` replaces the configured in-memory source."""
  if data.source == lists.SOURCE:
    require(dataset is None, "data.source: list-file data is read from data.root, not passed as a dataset")
    return streamed.prepare(data)
  return resident.prepare(data, dataset)
