"""The data layer: sources (digits, .npz, TFDS), long-tailed subsets and test sets, augmentation.

Modules: :mod:`hyperlt.data.sources` loads a balanced :class:`~hyperlt.data.sources.Dataset`,
:mod:`hyperlt.data.longtail` carves the long-tailed training set, the test-agnostic test sets, shot
groups and validation split out of it (pure NumPy), and :mod:`hyperlt.data.augment` holds the JAX image
transforms used inside jitted steps.
"""
