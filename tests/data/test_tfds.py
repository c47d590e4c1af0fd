"""Offline tests of load_tfds on tiny image datasets prepared in the array_record format.

The toy builders write PNG bytes encoded with PIL, so preparing them needs no TensorFlow (TFDS only
needs TensorFlow to encode NumPy images), and reading goes through the same ``tfds.data_source`` path
as a prepared CIFAR directory.
"""

import io
import shutil

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
PIL_Image = pytest.importorskip("PIL.Image")

from hyperlt.data import sources  # noqa: E402
from hyperlt.errors import UserInputError  # noqa: E402

CLASS_NAMES = ("ant", "bee", "cow")
SIZES = {"train": 24, "test": 9}


def toy_split(split: str) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic images and labels of one split of the toy datasets."""
  rng = np.random.default_rng(0 if split == "train" else 1)
  n = SIZES[split]
  return rng.integers(0, 256, (n, 6, 7, 3), dtype=np.uint8), np.arange(n) % len(CLASS_NAMES)


def png(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  PIL_Image.fromarray(image).save(buffer, format="png")
  return buffer.getvalue()


def toy_info(builder):
  return tfds.core.DatasetInfo(
      builder=builder,
      features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(6, 7, 3)),
          "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
      }))


def generate(images: np.ndarray, labels: np.ndarray):
  for i, (image, label) in enumerate(zip(images, labels)):
    yield i, {"image": png(image), "label": int(label)}


class HyperltToyImages(tfds.core.GeneratorBasedBuilder):
  """Registered toy dataset made from fixed arrays; needs no download."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return toy_info(self)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(*toy_split(split)) for split in SIZES}

  def _generate_examples(self, images, labels):
    yield from generate(images, labels)


class HyperltToyManual(tfds.core.GeneratorBasedBuilder):
  """Registered toy dataset prepared from an archive the user put in manual_dir."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put toy.npz in manual_dir."

  def _info(self):
    return toy_info(self)

  def _split_generators(self, dl_manager):
    with np.load(dl_manager.manual_dir / "toy.npz") as archive:
      arrays = {k: archive[k] for k in archive.files}
    return {split: self._generate_examples(arrays[f"x_{split}"], arrays[f"y_{split}"])
            for split in SIZES}

  def _generate_examples(self, images, labels):
    yield from generate(images, labels)


def assert_matches_toy(ds: sources.Dataset, name: str):
  assert ds.name == name
  assert ds.class_names == CLASS_NAMES
  for split in SIZES:
    x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
    want_x, want_y = toy_split(split)
    assert x.dtype == np.uint8 and x.shape == want_x.shape
    assert y.dtype == np.int32
    # TFDS shuffles examples on write, so compare (image, label) pairs as multisets.
    got = sorted((xi.tobytes(), int(yi)) for xi, yi in zip(x, y))
    want = sorted((xi.tobytes(), int(yi)) for xi, yi in zip(want_x, want_y))
    assert got == want


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  HyperltToyImages(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return data_dir


def test_load_prepared(prepared_dir):
  assert_matches_toy(sources.load_tfds("hyperlt_toy_images", data_dir=prepared_dir), "hyperlt_toy_images")


def test_load_source_tfds(prepared_dir):
  ds = sources.load_source("tfds:hyperlt_toy_images", data_dir=str(prepared_dir), manual_dir=None,
                           download=False, path=None)
  assert ds.num_classes == 3 and ds.image_shape == (6, 7, 3)


def test_load_prepared_unregistered_name(prepared_dir, tmp_path):
  # A user's data_dir may hold a dataset whose builder code this TFDS install lacks; TFDS then reads it
  # from its metadata files alone.
  shutil.copytree(prepared_dir / "hyperlt_toy_images", tmp_path / "hyperlt_toy_copy")
  for path in (tmp_path / "hyperlt_toy_copy").rglob("*"):
    if path.is_file() and "hyperlt_toy_images" in path.name:
      path.rename(path.with_name(path.name.replace("hyperlt_toy_images", "hyperlt_toy_copy")))
  info = tmp_path / "hyperlt_toy_copy" / "1.0.0" / "dataset_info.json"
  info.write_text(info.read_text().replace("hyperlt_toy_images", "hyperlt_toy_copy"))
  assert_matches_toy(sources.load_tfds("hyperlt_toy_copy", data_dir=tmp_path), "hyperlt_toy_copy")


def test_not_prepared_without_download_says_what_to_do(tmp_path):
  with pytest.raises(UserInputError) as error:
    sources.load_tfds("cifar10", data_dir=tmp_path / "empty")
  message = str(error.value)
  for needle in ("'cifar10' is not prepared", "data.data_dir", "data.manual_dir", "cifar-10-binary.tar.gz",
                 "data.download=True", 'pip install "hyperlt[tfds]"'):
    assert needle in message
  assert not (tmp_path / "empty").exists()  # nothing written while refusing


def test_download_true_prepares(tmp_path):
  ds = sources.load_tfds("hyperlt_toy_images", data_dir=tmp_path, download=True)
  assert_matches_toy(ds, "hyperlt_toy_images")
  assert list(tmp_path.glob("hyperlt_toy_images/1.0.0/*.array_record*"))


def test_manual_dir_prepares_offline(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  np.savez(manual / "toy.npz", **{f"{k}_{s}": v for s in SIZES for k, v in zip("xy", toy_split(s))})
  ds = sources.load_tfds("hyperlt_toy_manual", data_dir=tmp_path / "data", manual_dir=manual)
  assert_matches_toy(ds, "hyperlt_toy_manual")


def test_manual_dir_problems(tmp_path):
  with pytest.raises(UserInputError, match="data.manual_dir .* is not an existing folder"):
    sources.load_tfds("hyperlt_toy_manual", data_dir=tmp_path, manual_dir=tmp_path / "absent")
  (tmp_path / "manual").mkdir()
  with pytest.raises(UserInputError, match="preparing TFDS dataset 'hyperlt_toy_manual' .* failed"):
    sources.load_tfds("hyperlt_toy_manual", data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")


def test_unknown_dataset(tmp_path):
  with pytest.raises(UserInputError, match="TFDS has no dataset named 'no_such_dataset_xyz'"):
    sources.load_tfds("no_such_dataset_xyz", data_dir=tmp_path)
