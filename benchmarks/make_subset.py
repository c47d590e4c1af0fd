"""Writes a CIFAR-10-LT subset .npz small enough to carry to an accelerator machine (under 50 MB).

Why: the full CIFAR-10 copy (../shared/data/cifar10-jpeg75.npz, 171 MB) is too large to travel with the
working tree to a GPU machine, but the published CIFAR-10-LT IR100 recipe only trains on 12,406 of its
50,000 training images. This script keeps exactly those images, chosen by hyperlt's own long-tailed
selection (``data.imbalance_ratio``, ``data.subset_seed``, head class = the smallest class count, as
``hyperlt train --config cifar_lt:c10,ir100`` picks them from the full set), plus a balanced test subset
(``--test-per-class`` images of each class, seeded). The file has the keys of hyperlt's ".npz" source
(x_train, y_train, x_test, y_test as uint8/int64, and class_names when the source has them).

Training on it reproduces the recipe's training set exactly when the head-class size is given, so that
the long-tailed selection keeps every image: the script prints the overrides, e.g.

    hyperlt train --config cifar_lt:c10,ir100 data.path=benchmarks/.carry/cifar10_lt_ir100.npz data.n_max=5000

Only the test set is smaller than the recipe's (300 per class by default instead of 1,000).

    python benchmarks/make_subset.py                       # -> benchmarks/.carry/cifar10_lt_ir100.npz
    python benchmarks/make_subset.py --test-per-class 200 --out /tmp/c10lt.npz
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg75.npz"
DEFAULT_OUT = HERE / ".carry" / "cifar10_lt_ir100.npz"


def make_subset(source: pathlib.Path, out: pathlib.Path, imbalance_ratio: float = 100.0, test_per_class: int = 300,
                seed: int = 0, max_mb: float = 50.0) -> dict:
  """Writes the subset of ``source`` to ``out``; returns what it holds (counts, size, overrides).

  Raises ValueError when the written file is not smaller than ``max_mb`` megabytes (it is then removed).
  """
  if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
  import hyperlt_adapter as hyperlt  # pylint: disable=g-import-not-at-top,import-outside-toplevel

  with np.load(source, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  y_train = arrays["y_train"].astype(np.int64)
  y_test = arrays["y_test"].astype(np.int64)
  train_idx = hyperlt.longtail_indices(y_train, imbalance_ratio, seed=seed)
  test_idx = hyperlt.longtail_indices(y_test, 1.0, n_max=test_per_class, seed=seed)
  subset = {"x_train": arrays["x_train"][train_idx].astype(np.uint8), "y_train": y_train[train_idx],
            "x_test": arrays["x_test"][test_idx].astype(np.uint8), "y_test": y_test[test_idx]}
  if "class_names" in arrays:
    subset["class_names"] = arrays["class_names"]
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(out.name + ".tmp.npz")
  np.savez_compressed(tmp, **subset)
  size_mb = tmp.stat().st_size / 1e6
  if size_mb >= max_mb:
    tmp.unlink()
    raise ValueError(f"the subset would take {size_mb:.1f} MB (limit {max_mb} MB); lower --test-per-class")
  tmp.replace(out)
  counts = np.bincount(subset["y_train"])
  return {"path": str(out), "megabytes": round(size_mb, 2), "train_images": int(len(train_idx)),
          "test_images": int(len(test_idx)), "train_class_counts": counts.tolist(),
          "overrides": [f"data.path={out}", f"data.n_max={int(counts.max())}"]}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", type=pathlib.Path, default=DEFAULT_SOURCE, help="full CIFAR-10 .npz")
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
  parser.add_argument("--imbalance-ratio", type=float, default=100.0)
  parser.add_argument("--test-per-class", type=int, default=300)
  parser.add_argument("--seed", type=int, default=0, help="data.subset_seed of the recipe (0)")
  parser.add_argument("--max-mb", type=float, default=50.0)
  args = parser.parse_args(argv)
  if not args.source.exists():
    print(f"make_subset: {args.source} not found (see ../shared/data/README.md)", file=sys.stderr)
    return 2
  info = make_subset(args.source, args.out, args.imbalance_ratio, args.test_per_class, args.seed, args.max_mb)
  print(json.dumps(info))
  print(f"train on it: hyperlt train --config cifar_lt:c10,ir{args.imbalance_ratio:g} " + " ".join(info["overrides"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
