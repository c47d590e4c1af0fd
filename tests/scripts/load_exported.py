"""Loads two ``hyperlt export`` artifacts with jax alone, as a server would, and saves their probabilities.

Usage: load_exported.py FIXED.jax INPUT.jax IMAGES.npy OUT.npz. FIXED.jax was exported with
--preference 0.2,0.3,0.5, INPUT.jax without (the preference is its second input). Fails if anything
imported hyperlt: the artifact must not need it.
"""

import sys

import jax
import numpy as np

fixed_file, input_file, images_file, out_file = sys.argv[1:5]
images = np.load(images_file)
with open(fixed_file, "rb") as f:
  fixed = jax.export.deserialize(f.read())
with open(input_file, "rb") as f:
  with_input = jax.export.deserialize(f.read())
np.savez(out_file, fixed=np.asarray(fixed.call(images)),
         with_input=np.asarray(with_input.call(images, np.array([0.2, 0.3, 0.5], np.float32))),
         vertex=np.asarray(with_input.call(images, np.array([1, 0, 0], np.float32))),
         input_shapes=np.array([str(a.shape) for a in with_input.in_avals]))
assert "hyperlt" not in sys.modules, sorted(m for m in sys.modules if m.startswith("hyperlt"))
print("loaded without hyperlt")
