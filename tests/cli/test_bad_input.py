"""Bad input on every subcommand: exit code 2, exactly one stderr line "hyperlt: error: ..." naming the
field, no traceback, and the work dir's files byte for byte unchanged.

One tiny work dir is trained once for the module (a 1-epoch digits run with narrow layers); every case runs
``hyperlt.cli.main(argv)`` in-process. Config errors are caught by validate() before training starts, and
served commands check their arguments before restoring the run, so no case trains or restores.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import zipfile

import numpy as np
import pytest

from hyperlt import cli, configs as config_lib, outputs
from hyperlt.errors import UserInputError
from hyperlt.training import loop

TINY = ("optim.epochs=1", "optim.warmup_epochs=0", "model.widths=(4,8,8)", "model.hyper_hidden=(16,)",
        "train.progress=False")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp("bad_input") / "run"
  config = config_lib.load("digits")
  config_lib.override(config, TINY)
  loop.train(config_lib.validate(config), path, log=lambda _: None)
  return path


def _good_npz_arrays(num_classes: int = 3) -> dict:
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(num_classes), 20)
  return {"x_train": rng.integers(0, 256, (len(y), 8, 8, 1), dtype=np.uint8), "y_train": y,
          "x_test": rng.integers(0, 256, (len(y), 8, 8, 1), dtype=np.uint8), "y_test": y}


def _npz(path: pathlib.Path, **changes) -> None:
  arrays = {**_good_npz_arrays(), **changes}
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


CONFIG_FILES = {
    "returns_dict.py": "def get_config():\n  return {'optim': {'lr': 0.1}}\n",
    "returns_none.py": "def get_config():\n  pass\n",
    "raises.py": "def get_config():\n  raise RuntimeError('no GPU here')\n",
    "raises_key.py": "def get_config():\n  return {}['missing']\n",
    "syntax.py": "def get_config(:\n",
    "import_fails.py": "import no_such_module_hyperlt\n",
    "no_get_config.py": "CONFIG = 1\n",
    "unknown_field.py": ("from hyperlt.configs import base\n"
                         "def get_config():\n  c = base.get_config()\n  c.optim.learning_rate = 0.1\n  return c\n"),
    "missing_fields.py": ("import ml_collections\n"
                          "def get_config():\n  c = ml_collections.ConfigDict()\n  c.seed = 0\n  return c\n"),
    "string_lr.py": ("from hyperlt.configs import digits\n"
                     "def get_config():\n  c = digits.get_config()\n  c.optim.lr = '0.1'\n  return c\n"),
    "zero_widths.py": ("from hyperlt.configs import digits\n"
                       "def get_config():\n  c = digits.get_config()\n  c.model.widths = [0, 8, 8]\n  return c\n"),
    "not_python.txt": "seed = 0\n",
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> pathlib.Path:
  """Every bad file the cases name, in one folder."""
  d = tmp_path_factory.mktemp("bad_files")
  for name, text in CONFIG_FILES.items():
    (d / name).write_text(text)
  y = _good_npz_arrays()["y_train"]
  _npz(d / "one_class.npz", y_train=np.zeros_like(y), y_test=np.zeros_like(y))
  _npz(d / "one_test_class.npz", y_test=np.ones_like(y))
  x = _good_npz_arrays()["x_train"]
  _npz(d / "float16_range.npz", x_train=(x / 255 * 16).astype(np.float32), x_test=(x / 255 * 16).astype(np.float32))
  _npz(d / "float255.npz", x_train=x.astype(np.float32), x_test=x.astype(np.float32))
  _npz(d / "float_nan.npz", x_train=np.full(x.shape, np.nan, np.float32))
  _npz(d / "negative_ints.npz", x_train=x.astype(np.int64) - 1)
  _npz(d / "int_over_255.npz", x_test=x.astype(np.int64) + 200)
  _npz(d / "bool_images.npz", x_train=x > 128)
  _npz(d / "flat_images.npz", x_train=x.reshape(len(x), -1))
  _npz(d / "missing_x_test.npz", x_test=None)
  _npz(d / "float_labels.npz", y_train=y.astype(np.float32))
  _npz(d / "negative_labels.npz", y_train=y - 1)
  _npz(d / "label_count.npz", y_train=y[:-3])
  _npz(d / "label_2d.npz", y_test=y[:, None])
  _npz(d / "names_mismatch.npz", class_names=np.array(["a", "b"]))
  _npz(d / "names_numbers.npz", class_names=np.arange(3))
  _npz(d / "shape_mismatch.npz", x_test=np.zeros((len(y), 9, 9, 1), np.uint8))
  np.save(d / "single_array.npy", x)
  good = d / "good.npz"
  _npz(good)
  (d / "truncated.npz").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
  (d / "text.npz").write_text("x_train,y_train\n1,2\n")
  with zipfile.ZipFile(d / "bad_member.npz", "w") as z:
    z.writestr("x_train.npy", b"not an array")
  # Images for predict / adapt (the tiny run takes 8x8x1 uint8).
  rng = np.random.default_rng(1)
  np.save(d / "float_images.npy", rng.random((4, 8, 8, 1), np.float32))
  np.save(d / "wrong_shape.npy", rng.integers(0, 256, (4, 9, 9, 1), dtype=np.uint8))
  np.save(d / "rgb_images.npy", rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
  np.save(d / "empty_images.npy", np.zeros((0, 8, 8, 1), np.uint8))
  np.save(d / "int64_images.npy", rng.integers(0, 256, (4, 8, 8, 1)))
  np.save(d / "scalar.npy", np.uint8(3))
  np.savez(d / "two_arrays.npz", a=np.zeros((2, 8, 8, 1), np.uint8), b=np.zeros((2, 8, 8, 1), np.uint8))
  np.savez(d / "no_arrays.npz")
  (d / "truncated_images.npz").write_bytes(good.read_bytes()[:100])
  # Preference files.
  (d / "pref_bad.json").write_text("{not json")
  (d / "pref_nokey.json").write_text(json.dumps({"alpha": [1, 0, 0]}))
  (d / "pref_short.json").write_text(json.dumps({"preference": [1, 0]}))
  (d / "pref_negative.json").write_text(json.dumps({"preference": [-1, 1, 1]}))
  (d / "pref_strings.json").write_text(json.dumps({"preference": ["a", "b", "c"]}))
  (d / "pref_list.json").write_text(json.dumps([1, 0, 0]))
  (d / "a_file").write_text("not a folder\n")
  (d / "empty_workdir").mkdir()
  (d / "out_folder").mkdir()
  # List-file data (data.source=lists).
  (d / "lists").mkdir()
  (d / "lists" / "bad_line.txt").write_text("image_without_label\n")
  return d


def _train(*overrides: str) -> list[str]:
  return ["train", "--workdir", "{new}", "--no-progress", *TINY, *overrides]


def _npz_train(name: str) -> list[str]:
  return _train("data.source=npz", f"data.path={{in}}/{name}")


ADAPT = ["adapt", "--workdir", "{wd}", "--test-set", "uniform"]
PREDICT = ["predict", "--workdir", "{wd}", "--images", "{in}/single_array.npy"]
CHOOSE = ["choose", "--workdir", "{wd}", "--maximize", "all"]
EVALUATE = ["evaluate", "--workdir", "{wd}", "--preference"]
SWEEP = ["sweep", "--workdir", "{wd}"]

# (argv, a piece of text the error line must contain: the field it names). Placeholders: {wd} the trained
# work dir, {in} the folder of bad files, {new} a fresh path for a training work dir.
CASES = [
    # --- train: every config section, range and type -----------------------------------------------------
    (_train("train.log_every_steps=0"), "train.log_every_steps"),
    (_train("train.log_every_steps=-5"), "train.log_every_steps"),
    (_train("train.eval_batch_size=0"), "train.eval_batch_size"),
    (_train("train.keep_checkpoints=0"), "train.keep_checkpoints"),
    (_train("train.checkpoint_every_epochs=0"), "train.checkpoint_every_epochs"),
    (_train("train.progress=1"), "train.progress"),
    (_train("model.widths=0,32,64"), "model.widths"),
    (_train("model.widths=(16,32)"), "model.widths"),
    (_train("model.widths=abc"), "model.widths"),
    (_train("model.widths=()"), "model.widths"),
    (_train("model.widths=(4.5,8,8)"), "model.widths"),
    (_train("model.stage_sizes=(0,1,1)"), "model.stage_sizes"),
    (_train("model.hyper_hidden=(0,)"), "model.hyper_hidden"),
    (_train("model.hyper_hidden=(-4,16)"), "model.hyper_hidden"),
    (_train("model.num_experts=0"), "model.num_experts"),
    (_train("model.branch_stages=3"), "model.branch_stages"),
    (_train("model.branch_stages=-1"), "model.branch_stages"),
    (_train("model.scale=0"), "model.scale"),
    (_train("model.scale=-1.5"), "model.scale"),
    (_train("model.scale=1e400"), "model.scale"),
    (_train("model.head=other"), "model.head"),
    (_train("model.combine=max"), "model.combine"),
    (_train("model.experts=parallel"), "model.experts"),
    (_train("model.dtype=float16"), "model.dtype"),
    (_train("model.backbone=vgg"), "model.backbone"),
    (_train("model.width_multiplier=0"), "model.width_multiplier"),
    (_train("model.branch_width=-1"), "model.branch_width"),
    (_train("model.posthoc_tau=-0.5"), "model.posthoc_tau"),
    (_train("optim.lr=0"), "optim.lr"),
    (_train("optim.lr=-0.1"), "optim.lr"),
    (_train("optim.lr=1e400"), "optim.lr"),
    (_train("optim.lr=abc"), "optim.lr"),
    (_train("optim.momentum=1"), "optim.momentum"),
    (_train("optim.momentum=-0.1"), "optim.momentum"),
    (_train("optim.momentum=1.5"), "optim.momentum"),
    (_train("optim.weight_decay=-1e-4"), "optim.weight_decay"),
    (_train("optim.batch_size=0"), "optim.batch_size"),
    (_train("optim.batch_size=-64"), "optim.batch_size"),
    (_train("optim.batch_size=100000"), "optim.batch_size"),
    (_train("optim.epochs=0"), "optim.epochs"),
    (_train("optim.epochs=2.5"), "optim.epochs"),
    (_train("optim.warmup_epochs=-1"), "optim.warmup_epochs"),
    (_train("optim.warmup_epochs=5"), "optim.warmup_epochs"),
    (_train("optim.schedule=linear"), "optim.schedule"),
    (_train("optim.milestones=abc"), "optim.milestones"),
    (_train("optim.schedule=step", "optim.milestones=abc"), "optim.milestones"),
    (_train("optim.schedule=step", "optim.milestones=0,1"), "optim.milestones"),
    (_train("optim.schedule=step", "optim.milestones=1,100"), "optim.milestones"),
    (_train("optim.epochs=4", "optim.schedule=step", "optim.milestones=3,2"), "optim.milestones"),
    (_train("optim.milestones=1.5,2"), "optim.milestones"),
    (_train("optim.decay=0"), "optim.decay"),
    (_train("optim.decay=1.5"), "optim.decay"),
    (_train("optim.decay=-0.1"), "optim.decay"),
    (_train("optim.nesterov=yes"), "optim.nesterov"),
    (_train("loss.mu=0"), "loss.mu"),
    (_train("loss.tau=-1"), "loss.tau"),
    (_train("loss.mode=other"), "loss.mode"),
    (_train("loss.objective=max"), "loss.objective"),
    (_train("loss.anchors=forward,uniform"), "loss.anchors"),
    (_train("loss.anchors=forward,uniform,bogus"), "loss.anchors"),
    (_train("loss.anchors=(1,2,3)"), "loss.anchors"),
    (_train("loss.mixup_alpha=-0.4"), "loss.mixup_alpha"),
    (_train("loss.diversity=-0.2"), "loss.diversity"),
    (_train("loss.diversity_temperature=0"), "loss.diversity_temperature"),
    (_train("loss.reweight_start=1.5"), "loss.reweight_start"),
    (_train("loss.reweight_beta=1"), "loss.reweight_beta"),
    (_train("preference.sampling=other"), "preference.sampling"),
    (_train("preference.beta0=0"), "preference.beta0"),
    (_train("preference.kappa=-1"), "preference.kappa"),
    (_train("preference.default=1,0"), "preference.default"),
    (_train("preference.default=-1,1,1"), "preference.default"),
    (_train("preference.default=0,0,0"), "preference.default"),
    (_train("preference.default=a,b,c"), "preference.default"),
    (_train("preference.learn_scale=2"), "preference.learn_scale"),
    (_train("data.imbalance_ratio=0.5"), "data.imbalance_ratio"),
    (_train("data.n_max=-1"), "data.n_max"),
    (_train("data.val_fraction=1"), "data.val_fraction"),
    (_train("data.val_fraction=-0.1"), "data.val_fraction"),
    (_train("data.mean=(0.5,)"), "data.mean"),
    (_train("data.mean=(0.5,)", "data.std=(0,)"), "data.std"),
    (_train("data.mean=(a,)", "data.std=(0.2,)"), "data.mean"),
    (_train("data.crop_padding=-1"), "data.crop_padding"),
    (_train("data.rotation=200"), "data.rotation"),
    (_train("data.few_below=200"), "data.few_below"),
    (_train("data.many_above=-1"), "data.many_above"),
    (_train("data.subset_seed=-1"), "data.subset_seed"),
    (_train("data.test_seed=-3"), "data.test_seed"),
    (_train("data.source=mnist"), "data.source"),
    (_train("data.source=tfds:"), "data.source"),
    (_train("data.image_size=4"), "data.image_size"),
    (_train("data.resize=100"), "data.resize"),
    (_train("data.min_scale=0"), "data.min_scale"),
    (_train("data.color_jitter=1"), "data.color_jitter"),
    (_train("data.workers=-1"), "data.workers"),
    (_train("data.prefetch=0"), "data.prefetch"),
    (_train("data.source=lists"), "data.root"),
    (_train("data.flip=maybe"), "data.flip"),
    (_train("seed=-1"), "seed"),
    (_train("seed=1099511627776"), "seed"),
    (_train("parallel.num_devices=-1"), "parallel.num_devices"),
    (_train("parallel.num_processes=0"), "parallel.num_processes"),
    (_train("parallel.process_id=5"), "parallel.process_id"),
    (_train("parallel.num_processes=2"), "parallel.coordinator_address"),
    (_train("method=nonexistent"), "method"),
    (_train("nosuchkey=1"), "nosuchkey"),
    (_train("optim.nosuch=1"), "optim.nosuch"),
    (_train("optim=1"), "optim"),
    (_train("optim.lr"), "optim.lr"),
    (_train("=5"), "=5"),
    # --- train: config files -----------------------------------------------------------------------------
    (["train", "--workdir", "{new}", "--config", "{in}/returns_dict.py"], "returns_dict.py"),
    (["train", "--workdir", "{new}", "--config", "{in}/returns_none.py"], "returns_none.py"),
    (["train", "--workdir", "{new}", "--config", "{in}/raises.py"], "raises.py"),
    (["train", "--workdir", "{new}", "--config", "{in}/raises_key.py"], "raises_key.py"),
    (["train", "--workdir", "{new}", "--config", "{in}/syntax.py"], "syntax.py"),
    (["train", "--workdir", "{new}", "--config", "{in}/import_fails.py"], "import_fails.py"),
    (["train", "--workdir", "{new}", "--config", "{in}/no_get_config.py"], "no_get_config.py"),
    (["train", "--workdir", "{new}", "--config", "{in}/unknown_field.py"], "optim.learning_rate"),
    (["train", "--workdir", "{new}", "--config", "{in}/missing_fields.py"], "missing_fields.py"),
    (["train", "--workdir", "{new}", "--config", "{in}/string_lr.py"], "string_lr.py"),
    (["train", "--workdir", "{new}", "--config", "{in}/zero_widths.py"], "model.widths"),
    (["train", "--workdir", "{new}", "--config", "{in}/not_python.txt"], "--config"),
    (["train", "--workdir", "{new}", "--config", "nosuch"], "--config"),
    (["train", "--workdir", "{new}", "--config", "digits:badvariant"], "badvariant"),
    (["train", "--workdir", "{new}", "--config", "cifar_lt:c7"], "c7"),
    # --- train: work dirs and flags ------------------------------------------------------------------------
    (["train", "--workdir", "{in}/a_file", *TINY], "--workdir"),
    (["train", "--workdir", "{in}/a_file/run", *TINY], "--workdir"),
    (["train", "--workdir", "{wd}", "--no-progress", *TINY, "optim.lr=0.2"], "--workdir"),
    (["train", "--workdir", "{wd}", "--no-progress", *TINY, "model.widths=(8,8,8)"], "model.widths"),
    (_train() + ["--restart-from", "-1"], "--restart-from"),
    (_train() + ["--restart-from", "abc"], "--restart-from"),
    (_train() + ["--restart-from", "1.5"], "--restart-from"),
    (_train() + ["--bogus"], "--bogus"),
    (_train() + ["-1"], "-1"),
    # --- train: data files ---------------------------------------------------------------------------------
    (_npz_train("one_class.npz"), "y_train"),
    (_npz_train("one_test_class.npz"), "y_test"),
    (_npz_train("float16_range.npz"), "x_train"),
    (_npz_train("float255.npz"), "x_train"),
    (_npz_train("float_nan.npz"), "x_train"),
    (_npz_train("negative_ints.npz"), "x_train"),
    (_npz_train("int_over_255.npz"), "x_test"),
    (_npz_train("bool_images.npz"), "x_train"),
    (_npz_train("flat_images.npz"), "x_train"),
    (_npz_train("missing_x_test.npz"), "x_test"),
    (_npz_train("float_labels.npz"), "y_train"),
    (_npz_train("negative_labels.npz"), "y_train"),
    (_npz_train("label_count.npz"), "y_train"),
    (_npz_train("label_2d.npz"), "y_test"),
    (_npz_train("names_mismatch.npz"), "y_train"),
    (_npz_train("names_numbers.npz"), "class_names"),
    (_npz_train("shape_mismatch.npz"), "x_test"),
    (_npz_train("single_array.npy"), "single_array.npy"),
    (_npz_train("truncated.npz"), "truncated.npz"),
    (_npz_train("text.npz"), "text.npz"),
    (_npz_train("bad_member.npz"), "bad_member.npz"),
    (_npz_train("missing.npz"), "missing.npz"),
    (_train("data.source=npz"), "data.path"),
    (_train("data.source=lists", "data.root={in}/lists", "data.train_list={in}/lists/none.txt",
            "data.test_list={in}/lists/none.txt"), "none.txt"),
    (_train("data.source=lists", "data.root={in}/lists", "data.train_list={in}/lists/bad_line.txt",
            "data.test_list={in}/lists/bad_line.txt"), "bad_line.txt"),
    # --- work dirs of the served commands ------------------------------------------------------------------
    (["evaluate", "--workdir", "{in}/missing"], "--workdir"),
    (["evaluate", "--workdir", "{in}/a_file"], "--workdir"),
    (["evaluate", "--workdir", "{in}/empty_workdir"], "--workdir"),
    (["sweep", "--workdir", "{in}/a_file"], "--workdir"),
    (["choose", "--workdir", "{in}/empty_workdir", "--maximize", "all"], "--workdir"),
    (["predict", "--workdir", "{in}/missing", "--images", "{in}/wrong_shape.npy"], "--workdir"),
    (["adapt", "--workdir", "{in}/a_file", "--test-set", "uniform"], "--workdir"),
    (["export", "--workdir", "{in}/missing", "--out", "{in}/model.jax"], "--workdir"),
    (["plot", "--workdir", "{in}/a_file"], "--workdir"),
    # --- preferences ---------------------------------------------------------------------------------------
    ([*EVALUATE, "-1,1,1"], "--preference"),
    (["evaluate", "--workdir", "{wd}", "--preference=-0.5,1,1"], "--preference"),
    ([*EVALUATE, "-1"], "--preference"),
    ([*EVALUATE, "1,0"], "--preference"),
    ([*EVALUATE, "1,0,0,0"], "--preference"),
    ([*EVALUATE, "abc"], "--preference"),
    ([*EVALUATE, "0,0,0"], "--preference"),
    ([*EVALUATE, "nan,1,1"], "--preference"),
    ([*EVALUATE, "inf,1,1"], "--preference"),
    ([*EVALUATE, "1,,1"], "--preference"),
    ([*EVALUATE, ""], "--preference"),
    ([*EVALUATE, "{in}/missing.json"], "--preference"),
    ([*EVALUATE, "{in}/pref_bad.json"], "--preference"),
    ([*EVALUATE, "{in}/pref_nokey.json"], "--preference"),
    ([*EVALUATE, "{in}/pref_short.json"], "--preference"),
    ([*EVALUATE, "{in}/pref_negative.json"], "--preference"),
    ([*EVALUATE, "{in}/pref_strings.json"], "--preference"),
    ([*EVALUATE, "{in}/pref_list.json"], "--preference"),
    (["evaluate", "--workdir", "{wd}", "--json", "-1"], "--json"),
    (["evaluate", "--workdir", "{wd}", "--bogus"], "--bogus"),
    (["evaluate"], "--workdir"),
    # --- sweep ---------------------------------------------------------------------------------------------
    ([*SWEEP, "--step", "0.0001"], "--step"),
    ([*SWEEP, "--step", "0.001"], "--step"),
    ([*SWEEP, "--step", "0.3"], "--step"),
    ([*SWEEP, "--step", "0"], "--step"),
    ([*SWEEP, "--step", "-0.1"], "--step"),
    ([*SWEEP, "--step", "2"], "--step"),
    ([*SWEEP, "--step", "nan"], "--step"),
    ([*SWEEP, "--step", "inf"], "--step"),
    ([*SWEEP, "--step", "abc"], "--step"),
    ([*SWEEP, "--out", "{in}/a_file"], "--out"),
    ([*SWEEP, "--out", "{in}/a_file/sub"], "--out"),
    ([*SWEEP, "--out", "{wd}/checkpoints"], "--out"),
    ([*SWEEP, "--out", "{wd}/checkpoints/new"], "--out"),
    ([*SWEEP, "--out", "{wd}/config.json"], "--out"),
    ([*SWEEP, "--suites", "bogus"], "--suites"),
    # --- choose --------------------------------------------------------------------------------------------
    (["choose", "--workdir", "{wd}", "--maximize", "bogus"], "--maximize"),
    (["choose", "--workdir", "{wd}", "--minimize", "x:ece"], "--minimize"),
    ([*CHOOSE, "--subject-to", "few>=50"], "--subject-to"),
    ([*CHOOSE, "--subject-to", "few>0.5"], "--subject-to"),
    ([*CHOOSE, "--subject-to", "few>=abc"], "--subject-to"),
    ([*CHOOSE, "--subject-to", "few>=-0.5"], "--subject-to"),
    ([*CHOOSE, "--subject-to", "few>=nan"], "--subject-to"),
    ([*CHOOSE, "--target", "nowhere"], "--target"),
    ([*CHOOSE, "--step", "0.0001"], "--step"),
    ([*CHOOSE, "--step", "0.07"], "--step"),
    ([*CHOOSE, "--step", "-0.05"], "--step"),
    (["choose", "--workdir", "{wd}"], "--maximize"),
    ([*CHOOSE, "--minimize", "ece"], "--minimize"),
    # --- predict -------------------------------------------------------------------------------------------
    (["predict", "--workdir", "{wd}", "--images", "{in}/missing.npy"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/not_python.txt"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/float_images.npy"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/wrong_shape.npy"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/rgb_images.npy"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/empty_images.npy"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/int64_images.npy"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/scalar.npy"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/two_arrays.npz"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/no_arrays.npz"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/truncated_images.npz"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/bad_member.npz"], "--images"),
    (["predict", "--workdir", "{wd}", "--images", "{in}/out_folder"], "--images"),
    ([*PREDICT, "--out", "{in}/missing/p.npy"], "--out"),
    ([*PREDICT, "--out", "{in}/out_folder"], "--out"),
    ([*PREDICT, "--out", "{in}/a_file/p.npy"], "--out"),
    ([*PREDICT, "--out", "{wd}/checkpoints/p.npy"],
     "--out"),
    ([*PREDICT, "--preference", "-1,1,1"],
     "--preference"),
    ([*PREDICT, "--preference", "1,1"], "--preference"),
    (["predict", "--workdir", "{wd}"], "--images"),
    # --- adapt ---------------------------------------------------------------------------------------------
    ([*ADAPT, "--out", "{wd}/config.json"], "--out"),
    ([*ADAPT, "--out", "{wd}/data.json"], "--out"),
    ([*ADAPT, "--out", "{wd}/metrics.jsonl"], "--out"),
    ([*ADAPT, "--out", "{wd}/.lock"], "--out"),
    ([*ADAPT, "--out", "{wd}/checkpoints/x.json"], "--out"),
    ([*ADAPT, "--out", "{wd}/superseded/x.json"], "--out"),
    ([*ADAPT, "--out", "{wd}"], "--out"),
    ([*ADAPT, "--out", "{in}/missing/a.json"], "--out"),
    ([*ADAPT, "--out", "{in}/a_file/a.json"], "--out"),
    (["adapt", "--workdir", "{wd}", "--test-set", "nowhere"], "nowhere"),
    ([*ADAPT, "--method", "em", "--grid-step", "0.0001"],
     "--grid-step"),
    ([*ADAPT, "--method", "em", "--grid-step", "0.3"],
     "--grid-step"),
    ([*ADAPT, "--method", "em", "--grid-step", "-1"],
     "--grid-step"),
    ([*ADAPT, "--method", "em", "--reference", "-1,1,1"],
     "--reference"),
    ([*ADAPT, "--method", "em", "--reference", "1,0"], "--reference"),
    ([*ADAPT, "--adjust-logits"], "--adjust-logits"),
    ([*ADAPT, "--epochs", "-1"], "--epochs"),
    ([*ADAPT, "--epochs", "0"], "--epochs"),
    ([*ADAPT, "--min-steps", "-5"], "--min-steps"),
    ([*ADAPT, "--view-padding", "-2"], "--view-padding"),
    ([*ADAPT, "--method", "other"], "--method"),
    (["adapt", "--workdir", "{wd}", "--images", "{in}/wrong_shape.npy"], "--images"),
    (["adapt", "--workdir", "{wd}", "--images", "{in}/float_images.npy"], "--images"),
    (["adapt", "--workdir", "{wd}", "--images", "{in}/missing.npy"], "--images"),
    (["adapt", "--workdir", "{wd}"], "--test-set"),
    ([*ADAPT, "--images", "{in}/single_array.npy"], "--images"),
    # --- the command line itself ---------------------------------------------------------------------------
    (["bogus"], "bogus"),
    ([], "COMMAND"),
]


def _fill(argv: list[str], workdir: pathlib.Path, inputs: pathlib.Path, new: pathlib.Path) -> list[str]:
  return [a.replace("{wd}", str(workdir)).replace("{in}", str(inputs)).replace("{new}", str(new)) for a in argv]


def _digest(folder: pathlib.Path) -> str:
  h = hashlib.sha256()
  for path in sorted(folder.rglob("*")):
    h.update(str(path.relative_to(folder)).encode())
    if path.is_file():
      h.update(path.read_bytes())
  return h.hexdigest()


def _case_id(case) -> str:
  argv, _ = case
  return " ".join(a.split("/")[-1] for a in argv if a not in TINY and a not in ("--workdir", "{new}", "{wd}",
                                                                                     "--no-progress"))[:80]


@pytest.mark.parametrize("argv, field", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_exits_2_with_one_line(argv, field, workdir, inputs, tmp_path, capsys):
  before = _digest(workdir)
  try:
    code = cli.main(_fill(argv, workdir, inputs, tmp_path / "new_run"))
  except SystemExit as e:  # argparse's own errors
    code = e.code
  out, err = capsys.readouterr()
  lines = err.strip("\n").split("\n")
  assert code == 2, (code, err[-2000:])
  assert len(lines) == 1 and lines[0].startswith("hyperlt: error: "), err
  assert field in lines[0], (field, lines[0])
  assert "Traceback" not in out + err
  assert _digest(workdir) == before


def test_enough_cases_and_the_work_dir_entries_are_the_modules():
  """The closing note of issue 11 counts these cases; the names outputs refuses to overwrite are the ones the
  work-dir modules write."""
  from hyperlt.training import autotune  # pylint: disable=g-import-not-at-top
  from hyperlt.workdir import checkpoint, lock  # pylint: disable=g-import-not-at-top
  assert len(CASES) >= 150
  written = {checkpoint.CONFIG_FILE, checkpoint.DATA_FILE, checkpoint.METRICS_FILE, checkpoint.CHECKPOINT_DIR,
             checkpoint.DAMAGED_DIR, checkpoint.SUPERSEDED_DIR, lock.LOCK_FILE, lock.LOCK_FILE + ".pid",
             autotune.FORMS_FILE}
  assert written == set(outputs.WORKDIR_OWN)


def test_outputs_are_written_exactly_where_reported(workdir, inputs, tmp_path, capsys):
  """predict --out without .npy writes NAME.npy (as np.save does) and reports that path; adapt --out
  reports its file; neither touches the work dir."""
  before = _digest(workdir)
  assert cli.main(["predict", "--workdir", str(workdir), "--images", str(inputs / "single_array.npy"), "--out",
                   str(tmp_path / "probs")]) == 0
  out = capsys.readouterr().out
  assert (tmp_path / "probs.npy").is_file() and not (tmp_path / "probs").exists()
  assert f"to {tmp_path / 'probs.npy'}" in out
  assert cli.main(["adapt", "--workdir", str(workdir), "--test-set", "uniform", "--method", "em", "--json",
                   "--out", str(tmp_path / "pref.json")]) == 0
  captured = capsys.readouterr()
  assert json.loads(captured.out)["preference"] == json.loads((tmp_path / "pref.json").read_text())["preference"]
  assert captured.err.strip() == f"hyperlt: wrote {tmp_path / 'pref.json'}"
  assert _digest(workdir) == before


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch, capsys, tmp_path):
  """A bug (not bad input) gives one line asking for a report and exit 1; HYPERLT_DEBUG=1 re-raises it."""
  def broken(args):
    raise KeyError("boom")
  monkeypatch.setitem(cli._COMMANDS, "evaluate", (cli._COMMANDS["evaluate"][0], broken))  # pylint: disable=protected-access
  assert cli.main(["evaluate", "--workdir", str(tmp_path)]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "KeyError" in err and "please report" in err and "Traceback" not in err
  monkeypatch.setenv("HYPERLT_DEBUG", "1")
  with pytest.raises(KeyError):
    cli.main(["evaluate", "--workdir", str(tmp_path)])


@pytest.mark.parametrize("extra, expected", [([], {}), (["--config", "digits", "--restart-from", "3"], {"restart_from": 3}),
                                             (["--config", "digits", "--restart-from", "0"], {"restart_from": 0})])
def test_restart_from_reaches_the_training_loop(extra, expected, monkeypatch, tmp_path, capsys):
  """--restart-from STEP is passed on as restart_from=STEP, and nothing is passed without it."""
  calls = []
  def fake_train(config, workdir, **kwargs):
    calls.append(kwargs)
    raise UserInputError("stopped before training")
  monkeypatch.setattr(loop, "train", fake_train)
  assert cli.main(["train", "--workdir", str(tmp_path / "run"), *extra, *TINY]) == 2
  assert "stopped before training" in capsys.readouterr().err
  assert calls == [expected]


def test_restart_from_starts_from_the_work_dirs_own_config(workdir, monkeypatch, capsys):
  """Without --config, --restart-from takes the trained run's config.json, then the overrides."""
  seen = []
  def fake_train(config, workdir, **kwargs):
    seen.append((config, kwargs))
    raise UserInputError("stopped before training")
  monkeypatch.setattr(loop, "train", fake_train)
  assert cli.main(["train", "--workdir", str(workdir), "--restart-from", "0", "optim.lr=0.001"]) == 2
  assert "stopped before training" in capsys.readouterr().err
  (config, kwargs), = seen
  assert kwargs == {"restart_from": 0} and config.optim.lr == 0.001
  assert tuple(config.model.widths) == (4, 8, 8)  # the work dir's model, not the digits default
