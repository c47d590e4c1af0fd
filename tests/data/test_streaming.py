"""List files and the host pipeline: reading lists (hyperlt.data.lists), decoding and prefetching
(hyperlt.data.streaming), list-file data (hyperlt.data.streamed), and training from it with the CLI."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import chex
import numpy as np
import pytest
from PIL import Image

from hyperlt import configs as config_lib
from hyperlt.data import lists, streamed, streaming
from hyperlt.errors import UserInputError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_read_list_parses_paths_and_labels(list_tree):
  images = lists.read_list(list_tree.train_list, list_tree.root, "data.train_list")
  assert len(images) == sum(list_tree.train_counts)
  chex.assert_trees_all_equal(np.bincount(images.labels), np.asarray(list_tree.train_counts))
  assert all(images.path(i).is_file() for i in range(len(images)))
  assert images.where(0) == f"{list_tree.train_list} line 1"


@pytest.mark.parametrize("line, message", [
    ("train/a.jpg", "expected 'relative/path label'"),
    ("train/a.jpg x", "expected 'relative/path label'"),
    ("train/a.jpg -1", "labels must be >= 0"),
    ("/abs/a.jpg 0", "relative to data.root"),
    ("train/missing.jpg 0", "does not exist"),
])
def test_read_list_reports_the_bad_line(tmp_path, line, message):
  listing = tmp_path / "list.txt"
  listing.write_text(f"\n{line}\n")
  with pytest.raises(UserInputError, match=message) as info:
    lists.read_list(listing, tmp_path, "data.train_list")
  assert "data.train_list" in str(info.value)
  assert "line 2" in str(info.value) or "missing" in line


def test_read_list_accepts_spaces_in_paths(tmp_path):
  (tmp_path / "my dir").mkdir()
  Image.new("RGB", (8, 8)).save(tmp_path / "my dir" / "a b.png")
  (tmp_path / "list.txt").write_text("my dir/a b.png 3\n")
  images = lists.read_list(tmp_path / "list.txt", tmp_path, "data.train_list")
  assert images.paths == ("my dir/a b.png",) and int(images.labels[0]) == 3


def test_prepare_numbers_classes_by_training_frequency(list_tree, tmp_path):
  root, train_list, test_list = list_tree.root, list_tree.train_list, list_tree.test_list
  # Permute the list labels so the most frequent class is not label 0 in the file.
  relabel = {0: 2, 1: 0, 2: 3, 3: 1}
  shuffled = {}
  for name, path in (("train", train_list), ("test", test_list)):
    lines = [l.rsplit(maxsplit=1) for l in path.read_text().splitlines()]
    shuffled[name] = tmp_path / f"{name}.txt"
    shuffled[name].write_text("".join(f"{p} {relabel[int(c)]}\n" for p, c in lines))
  config = config_lib.load("digits")
  config_lib.override(config, list_tree.overrides(f"data.train_list={shuffled['train']}",
                                                  f"data.test_list={shuffled['test']}"))
  data = streamed.prepare(config_lib.validate(config).data)
  chex.assert_trees_all_equal(data.class_counts, np.asarray(list_tree.train_counts))
  assert data.class_names == tuple(str(relabel[c]) for c in range(4))
  # Every image keeps its class: the folder name is the class before relabelling.
  for images in (data.train, data.test):
    folders = np.asarray([int(pathlib.Path(p).parent.name.removeprefix("class")) for p in images.paths])
    chex.assert_trees_all_equal(images.labels, folders.astype(np.int32))
  assert set(data.test_sets) == {"uniform", "forward50", "backward50", "forward25", "backward25", "forward10",
                                 "backward10", "forward5", "backward5", "forward2", "backward2"}
  assert len(data.test_sets["uniform"]) == len(data.test) and data.image_shape == (16, 16, 3)
  assert all(0 < m < 1.5 for m in data.mean) and json.dumps(data.describe())


def test_prepare_holds_out_validation_and_rejects_unknown_test_labels(list_tree, tmp_path):
  data = streamed.prepare(list_tree.config("data.val_fraction=0.3", "data.mean=(0.5,0.5,0.5)",
                                           "data.std=(0.25,0.25,0.25)").data)
  assert len(data.val) + len(data.train) == sum(list_tree.train_counts)
  assert set(data.val.paths).isdisjoint(data.train.paths) and np.all(data.class_counts >= 1)
  assert data.mean == (0.5, 0.5, 0.5)
  bad = tmp_path / "test.txt"
  bad.write_text(list_tree.test_list.read_text().splitlines()[0].rsplit(maxsplit=1)[0] + " 9\n")
  with pytest.raises(UserInputError, match="data.test_list: label 9 .* has no training image"):
    lists.read_lists(list_tree.config(f"data.test_list={bad}").data)


def test_validate_names_missing_list_fields():
  config = config_lib.load("digits")
  config_lib.override(config, ["data.source=lists", "data.root=/tmp"])
  with pytest.raises(UserInputError, match="data.train_list: required"):
    config_lib.validate(config)
  config_lib.override(config, ["data.train_list=a.txt", "data.test_list=b.txt", "data.resize=100"])
  with pytest.raises(UserInputError, match="data.resize: expected >= data.image_size"):
    config_lib.validate(config)


def test_eval_transform_keeps_the_centre(tmp_path):
  # 64x32: left half black, right half white. Shorter side 32 -> 16, centre 16x16 crop = x in [16, 48).
  pixels = np.zeros((32, 64, 3), np.uint8)
  pixels[:, 32:] = 255
  Image.fromarray(pixels).save(tmp_path / "a.png")
  (tmp_path / "l.txt").write_text("a.png 0\n")
  images = lists.read_list(tmp_path / "l.txt", tmp_path, "f")
  out = streaming.decode_eval(images, 0, 16, 16)
  chex.assert_shape(out, (16, 16, 3))
  assert out.dtype == np.uint8
  assert out[:, :7].max() == 0 and out[:, 9:].min() == 255


def test_jpeg_draft_matches_full_decode(tmp_path):
  rng = np.random.default_rng(0)
  smooth = np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((64, 64, 1))).astype(np.uint8)  # 768 x 1024
  Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
  (tmp_path / "l.txt").write_text("big.jpg 0\n")
  images = lists.read_list(tmp_path / "l.txt", tmp_path, "f")
  drafted = streaming.decode_eval(images, 0, 32, 36).astype(np.float32)
  with Image.open(tmp_path / "big.jpg") as img:  # No draft: decode in full, then the same box.
    full = np.asarray(img.convert("RGB").resize(
        (32, 32), Image.BILINEAR, box=streaming.centre_box(*img.size, 32, 36))).astype(np.float32)
  assert np.mean(np.abs(drafted - full)) < 4.0


def test_random_resized_box_stays_inside_with_admissible_shape():
  rng = np.random.default_rng(0)
  for width, height in ((100, 60), (30, 200), (64, 64)):
    for _ in range(200):
      x0, y0, x1, y1 = streaming.random_resized_box(rng, width, height, 0.08)
      assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
      assert (x1 - x0) * (y1 - y0) >= 0.08 * width * height * 0.9
      assert 3 / 4 * 0.9 <= (x1 - x0) / (y1 - y0) <= 4 / 3 * 1.1


def test_train_transform_is_a_function_of_its_rng(list_tree):
  images = lists.read_list(list_tree.train_list, list_tree.root, "f")
  draw = lambda seed: streaming.decode_train(images, 0, 16, np.random.default_rng(seed), color_jitter=0.4)
  chex.assert_trees_all_equal(draw(1), draw(1))
  assert draw(1).shape == (16, 16, 3) and not np.array_equal(draw(1), draw(2))


def test_decoded_images_index_like_an_array(list_tree, new_threads):
  images = lists.read_list(list_tree.test_list, list_tree.root, "f")
  with streaming.DecodedImages(images, 16, 20, workers=2) as view:
    assert view.shape == (len(images), 16, 16, 3) and len(view) == len(images)
    one_by_one = np.stack([view[i] for i in range(len(view))])
    chunks = np.concatenate([view[s:s + 5] for s in range(0, len(view), 5)])  # read-ahead path
    chex.assert_trees_all_equal(chunks, one_by_one)
    chex.assert_trees_all_equal(view[np.asarray([3, 0, 3])], one_by_one[[3, 0, 3]])
    mask = np.arange(len(view)) % 2 == 0
    chex.assert_trees_all_equal(view[mask], one_by_one[mask])
    chex.assert_trees_all_equal(np.asarray(view), one_by_one)
    assert new_threads()  # the view's own decoding threads
  assert not new_threads()


def test_a_closed_view_ends_its_threads_and_can_be_read_again(list_tree, new_threads):
  images = lists.read_list(list_tree.test_list, list_tree.root, "f")
  view = streaming.DecodedImages(images, 16, 20, workers=2)
  assert not new_threads()  # no thread before the first batch
  first = view[0:4]  # also starts decoding 4..8 ahead
  assert all(name.startswith("hyperlt-decode") for name in new_threads()) and new_threads()
  view.close()
  assert not new_threads()
  chex.assert_trees_all_equal(view[0:4], first)
  view.close()
  assert not new_threads()


def test_loader_epochs_are_deterministic_permutations(list_tree, new_threads):
  images = lists.read_list(list_tree.train_list, list_tree.root, "f")
  with streaming.Loader(images, 8, 16, seed=3, workers=2, prefetch=2) as loader:
    assert loader.steps_per_epoch == len(images) // 8
    epoch0 = list(loader.epoch(0))
    again = list(loader.epoch(0))
    epoch1 = list(loader.epoch(1))
    assert new_threads()
  assert not new_threads()  # closing the loader ends its decoding threads
  assert len(epoch0) == loader.steps_per_epoch
  chex.assert_trees_all_equal(epoch0, again)
  order = loader.order(0)
  for step, (x, y) in enumerate(epoch0):
    chex.assert_shape(x, (8, 16, 16, 3))
    chex.assert_trees_all_equal(y, images.labels[order[step * 8:(step + 1) * 8]])
  assert not np.array_equal(loader.order(0), loader.order(1))
  assert not all(np.array_equal(a[0], b[0]) for a, b in zip(epoch0, epoch1))
  assert len(set(order[:loader.steps_per_epoch * 8])) == loader.steps_per_epoch * 8


def test_loader_rows_split_the_global_batch_and_resume_mid_epoch(list_tree):
  images = lists.read_list(list_tree.train_list, list_tree.root, "f")
  make = lambda rows: streaming.Loader(images, 8, 16, seed=0, workers=2, rows=rows,
                                       put=lambda x, y: (x.copy(), y.copy()))
  with make(None) as whole, make(slice(0, 4)) as first, make(slice(4, 8)) as second:
    full = list(whole.epoch(2))
    halves = zip(first.epoch(2), second.epoch(2))
    for (x, y), ((x0, y0), (x1, y1)) in zip(full, halves):
      chex.assert_trees_all_equal((x, y), (np.concatenate([x0, x1]), np.concatenate([y0, y1])))
    chex.assert_trees_all_equal(list(whole.epoch(2, start=1)), full[1:])


def test_loader_reports_unreadable_images_and_stops_cleanly(list_tree, tmp_path, new_threads):
  root = list_tree.root
  lines = list_tree.train_list.read_text().splitlines()
  broken = root / "train" / "broken.jpg"
  broken.write_bytes(b"not an image")
  listing = tmp_path / "list.txt"
  listing.write_text("\n".join(lines[:8] + ["train/broken.jpg 0"] + lines[8:]) + "\n")
  images = lists.read_list(listing, root, "f")
  with streaming.Loader(images, 4, 16, seed=0, workers=2) as loader:
    with pytest.raises(UserInputError, match=r"list.txt line 9: cannot read image .*broken.jpg"):
      for _ in loader.epoch(0):
        pass
    batches = loader.epoch(1)
    next(batches)
    batches.close()  # leaving an epoch early must not leave the producer blocked
    assert "hyperlt-producer" not in new_threads()
  assert not new_threads()


# Training from list files end to end with the command line, in fresh processes with XLA's backend
# optimisation off: the test checks what is computed, and an unoptimised CPU compile is several times faster.
_TINY_MODEL = ("data.color_jitter=0.4", "optim.batch_size=8", "optim.epochs=2", "optim.warmup_epochs=0",
               "model.stage_sizes=(1,1)", "model.widths=(4,8)", "model.branch_stages=1", "model.hyper_hidden=(16,)",
               "train.log_every_steps=1")


def _hyperlt(*args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu",
         "JAX_LOG_COMPILES": "1"}
  proc = subprocess.run([sys.executable, "-m", "hyperlt.cli", *args], capture_output=True, text=True, timeout=150,
                        env=env, cwd=REPO_ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.mark.slow
def test_training_streams_list_files_end_to_end(list_tree, tmp_path):
  workdir = tmp_path / "run"
  trained = _hyperlt("train", "--workdir", str(workdir), "--no-progress", *list_tree.overrides(*_TINY_MODEL))
  steps_per_epoch = sum(list_tree.train_counts) // 8
  assert f"Trained {2 * steps_per_epoch} steps" in trained.stdout
  # One compilation of the training step for all its 2 x 3 calls: every batch keeps shape and sharding.
  assert len(re.findall(r"Compiling jit\(step\)", trained.stderr)) == 1
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == list(range(1, 2 * steps_per_epoch + 1))
  assert all(0.0 <= r["input_wait_fraction"] <= 1.0 and np.isfinite(r["loss"]) for r in records)
  facts = json.loads((workdir / "data.json").read_text())
  assert facts["num_test"] == list_tree.test_per_class * len(list_tree.train_counts)
  assert facts["lists"]["train"] == str(list_tree.train_list) and facts["image_shape"] == [16, 16, 3]

  # A new process restores the run with its list-file data and evaluates it on the decoded test images.
  evaluated = json.loads(_hyperlt("evaluate", "--workdir", str(workdir), "--preference", "0,1,0", "--json").stdout)
  assert set(evaluated["results"]) == set(facts["test_set_sizes"])
  assert 0.0 <= evaluated["results"]["uniform"]["all"] <= 1.0
