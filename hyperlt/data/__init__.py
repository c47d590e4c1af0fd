"""The data layer: sources, long-tailed subsets and test sets, augmentation, and a run's data.

A run's data follows one protocol, :class:`hyperlt.data.dataset.RunData` (facts, evaluation images, and
the training input the loop consumes), with two implementations:

* :mod:`hyperlt.data.resident` -- arrays in memory: :mod:`hyperlt.data.sources` loads a balanced
  :class:`~hyperlt.data.sources.Dataset` (digits, .npz, TFDS), and batches are sampled and augmented on
  the device (:mod:`hyperlt.data.augment`, JAX transforms traced inside the jitted step);
* :mod:`hyperlt.data.streamed` -- SADE-style list files (:mod:`hyperlt.data.lists` reads them), images
  decoded and augmented on the host by the threads of :mod:`hyperlt.data.streaming`.

:func:`hyperlt.data.pipeline.prepare` picks one from a config's ``data`` section. Both carve their test
sets, shot groups and validation split with :mod:`hyperlt.data.longtail` (pure NumPy);
:mod:`hyperlt.data.suites` adds extra test suites and :mod:`hyperlt.data.images` checks users' images.
"""
