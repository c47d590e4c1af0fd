"""Tests of the digits and .npz data sources, the Dataset checks and the load_source dispatcher."""

from pathlib import Path

import numpy as np
import pytest

from hyperlt.data import longtail, sources
from hyperlt.errors import UserInputError

# The repository is cloned as <dir>/main with the workplace's shared data in <dir>/shared beside it.
CIFAR10_NPZ = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-jpeg75.npz"


def write_npz(path: Path, **arrays) -> Path:
  np.savez(path, **arrays)
  return path


def small_arrays(num_classes: int = 3, shape=(4, 5, 3), dtype=np.uint8, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return dict(
      x_train=rng.integers(0, 256, (6 * num_classes, *shape)).astype(dtype),
      y_train=np.repeat(np.arange(num_classes), 6).astype(np.int64),
      x_test=rng.integers(0, 256, (2 * num_classes, *shape)).astype(dtype),
      y_test=np.repeat(np.arange(num_classes), 2).astype(np.int64),
  )


# --- Dataset ------------------------------------------------------------------------------------

def make_dataset(**overrides) -> sources.Dataset:
  fields = dict(small_arrays(), class_names=("a", "b", "c"), name="toy")
  fields.update(overrides)
  return sources.Dataset(**fields)


def test_dataset_properties_and_label_dtype():
  ds = make_dataset()
  assert ds.num_classes == 3
  assert ds.image_shape == (4, 5, 3)
  assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32


@pytest.mark.parametrize("overrides, match", [
    (dict(x_train=np.zeros((18, 4, 5, 3), np.float32)), "x_train must be a uint8"),
    (dict(x_test=np.zeros((6, 4, 5), np.uint8)), "x_test must be a uint8 array of shape"),
    (dict(y_train=np.zeros((18, 1), np.int64)), "y_train must be a 1-D integer"),
    (dict(y_test=np.zeros(6, np.float32)), "y_test must be a 1-D integer"),
    (dict(y_train=np.zeros(17, np.int64)), "x_train has 18 images but y_train has 17"),
    (dict(y_test=np.array([0, 1, 2, 3, 0, 1])), r"y_test must hold class ids in \[0, 3\)"),
    (dict(y_train=-np.ones(18, np.int64)), "y_train must hold class ids"),
    (dict(x_test=np.zeros((6, 4, 4, 3), np.uint8)), "x_test images have"),
    (dict(class_names=()), "class_names must not be empty"),
    (dict(class_names="abc"), "class_names must be a sequence"),
])
def test_dataset_rejects_bad_arrays(overrides, match):
  with pytest.raises(UserInputError, match=match):
    make_dataset(**overrides)


# --- digits ------------------------------------------------------------------------------------

def test_load_digits():
  ds = sources.load_digits()
  assert ds.name == "digits"
  assert ds.class_names == tuple(str(c) for c in range(10))
  assert ds.x_train.shape == (1297, 8, 8, 1) and ds.x_test.shape == (500, 8, 8, 1)
  assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255 and ds.x_train.min() == 0
  np.testing.assert_array_equal(np.bincount(ds.y_test), np.full(10, 50))
  train_counts = np.bincount(ds.y_train)
  assert train_counts.min() == 124 and train_counts.max() == 133
  # Seeded: a second load gives the same split.
  np.testing.assert_array_equal(sources.load_digits().x_test, ds.x_test)
  # No test image leaks into training (the digits set has no exact duplicate images across the split).
  train_rows = {row.tobytes() for row in ds.x_train}
  assert not any(row.tobytes() in train_rows for row in ds.x_test)


def test_digits_longtail_pipeline():
  ds = sources.load_digits()
  idx = longtail.longtail_indices(ds.y_train, 10)  # n_max = 124, the smallest class
  np.testing.assert_array_equal(np.bincount(ds.y_train[idx]), longtail.longtail_counts(124, 10, 10))
  assert len(longtail.test_set_indices(ds.y_test, "forward10")) == longtail.test_set_counts(
      "forward10", 50, 10).sum()


# --- npz ---------------------------------------------------------------------------------------

def test_load_npz_round_trip(tmp_path):
  arrays = small_arrays()
  path = write_npz(tmp_path / "toy.npz", **arrays, class_names=np.array(["cat", "dog", "eel"]))
  ds = sources.load_npz(path)
  assert ds.name == "toy" and ds.class_names == ("cat", "dog", "eel")
  np.testing.assert_array_equal(ds.x_train, arrays["x_train"])
  np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
  assert ds.y_train.dtype == np.int32


def test_load_npz_grey_images_and_default_names(tmp_path):
  arrays = small_arrays(shape=(4, 5))
  ds = sources.load_npz(write_npz(tmp_path / "grey.npz", **arrays))
  assert ds.image_shape == (4, 5, 1)
  assert ds.class_names == ("0", "1", "2")
  np.testing.assert_array_equal(ds.x_test[..., 0], arrays["x_test"])


def test_load_npz_float_images(tmp_path):
  arrays = small_arrays()
  unit = {**arrays, "x_train": arrays["x_train"] / 255.0, "x_test": arrays["x_test"] / 255.0}
  ds = sources.load_npz(write_npz(tmp_path / "unit.npz", **unit))
  np.testing.assert_array_equal(ds.x_train, arrays["x_train"])
  # Floats outside [0, 1] are refused, never guessed to be 0..255 (or 0..16 read as near-black 0..255).
  for name, scale in (("wide", 1.0), ("sixteen", 16 / 255)):
    other = {**arrays, "x_train": (arrays["x_train"] * scale).astype(np.float32),
             "x_test": (arrays["x_test"] * scale).astype(np.float32)}
    with pytest.raises(UserInputError, match=r"x_train has dtype float32 with values in \[0, .*floats in \[0, 1\]"):
      sources.load_npz(write_npz(tmp_path / f"{name}.npz", **other))


def test_load_npz_missing_file(tmp_path):
  with pytest.raises(UserInputError, match=r"data file .*nope\.npz does not exist"):
    sources.load_npz(tmp_path / "nope.npz")


def test_load_npz_unreadable(tmp_path):
  text = tmp_path / "text.npz"
  text.write_text("x_train,y_train\n1,2\n")
  with pytest.raises(UserInputError, match="is not a readable .npz archive"):
    sources.load_npz(text)
  good = write_npz(tmp_path / "good.npz", **small_arrays())
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
  with pytest.raises(UserInputError, match="is not a readable .npz archive"):
    sources.load_npz(truncated)
  single = tmp_path / "single.npz"
  with open(single, "wb") as f:
    np.save(f, np.zeros(3))
  with pytest.raises(UserInputError, match="is not a readable .npz archive"):
    sources.load_npz(single)


def test_load_npz_missing_key(tmp_path):
  arrays = small_arrays()
  del arrays["y_test"]
  with pytest.raises(UserInputError, match="lacks array.* y_test; expected arrays x_train, y_train, x_test"):
    sources.load_npz(write_npz(tmp_path / "partial.npz", **arrays))


@pytest.mark.parametrize("key, value, match", [
    ("x_train", np.zeros((18, 4), np.uint8), "x_train must be an image array"),
    ("x_test", np.full((6, 4, 5, 3), 300, np.int64), "x_test has dtype int64 with values outside"),
    ("x_test", np.full((6, 4, 5, 3), np.nan), "x_test has dtype float64 with values that are not finite"),
    ("x_train", np.zeros((18, 4, 5, 3), np.complex64), "x_train has dtype complex64"),
    ("y_train", np.zeros(18, np.float64), "y_train must be a 1-D integer label array"),
    ("y_test", -np.ones(6, np.int64), "y_test must hold class ids >= 0"),
    ("class_names", np.array([1, 2, 3]), "class_names must be a 1-D string array"),
    ("class_names", np.array(["a", "b"]), r"y_train must hold class ids in \[0, 2\)"),
    ("class_names", np.array(["a", None, "c"], dtype=object), "object array"),
])
def test_load_npz_bad_arrays(tmp_path, key, value, match):
  arrays = {**small_arrays(), key: value}
  with pytest.raises(UserInputError, match=match):
    sources.load_npz(write_npz(tmp_path / "bad.npz", **arrays))


# --- load_source -------------------------------------------------------------------------------

def test_load_source_dispatch(tmp_path):
  assert sources.load_source("digits").name == "digits"
  path = write_npz(tmp_path / "toy.npz", **small_arrays())
  ds = sources.load_source("npz", path=str(path), data_dir=None, manual_dir=None, download=False)
  assert ds.num_classes == 3


@pytest.mark.parametrize("spec, options, match", [
    ("mnist", {}, "unknown data.source 'mnist'; expected one of: digits, npz .*tfds:<name>"),
    ("digits:x", {}, "unknown data.source"),
    ("tfds", {}, "unknown data.source"),
    ("tfds:", {}, "needs a dataset name"),
    ("npz", {}, "needs data.path"),
    ("digits", {"path": "x.npz"}, "path are not used by data.source 'digits'"),
    ("digits", {"colour": True}, "unknown data option.*colour"),
])
def test_load_source_errors(spec, options, match):
  with pytest.raises(UserInputError, match=match):
    sources.load_source(spec, **options)


# --- the shared CIFAR-10 copy ------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar10():
  if not CIFAR10_NPZ.exists():
    pytest.skip(f"shared CIFAR-10 copy not present at {CIFAR10_NPZ}")
  return sources.load_npz(CIFAR10_NPZ)


def test_cifar10_npz(cifar10):
  assert cifar10.x_train.shape == (50_000, 32, 32, 3) and cifar10.x_test.shape == (10_000, 32, 32, 3)
  assert cifar10.num_classes == 10 and cifar10.class_names[0] == "airplane"
  np.testing.assert_array_equal(np.bincount(cifar10.y_test), np.full(10, 1000))
  assert len(longtail.longtail_indices(cifar10.y_train, 100)) == 12_406
  assert len(longtail.test_set_indices(cifar10.y_test, "backward50")) == 2_795
