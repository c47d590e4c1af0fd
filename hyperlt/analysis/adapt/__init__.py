"""Test-time adaptation: choose the preference from unlabeled test images (docs/adaptation.md).

Modules:

* :mod:`hyperlt.analysis.adapt.core`: ``adapt(run, images, method)`` and ``AdaptResult``.
* :mod:`hyperlt.analysis.adapt.stability`: SADE's self-supervised aggregation generalised to the preference
  simplex, with the collapse guard.
* :mod:`hyperlt.analysis.adapt.label_shift`: Saerens et al.'s EM estimate of the test prior and the preference
  whose target prior is closest to it.
* :mod:`hyperlt.analysis.adapt.report`: adaptation on the 11 test sets, with accuracies, for the CLI.

``hyperlt adapt --workdir W --test-set backward50 --out pref.json`` followed by
``hyperlt evaluate --workdir W --preference pref.json`` is the command-line round trip; see
docs/adaptation.md.
"""

from hyperlt.analysis.adapt.core import DEFAULT_GRID_STEP, METHODS, AdaptResult, adapt, check_images, predict_classes
from hyperlt.analysis.adapt.stability import StabilityOptions

__all__ = ["AdaptResult", "DEFAULT_GRID_STEP", "METHODS", "StabilityOptions", "adapt", "check_images",
           "predict_classes"]
