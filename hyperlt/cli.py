"""The ``hyperlt`` command line: argument parsing and error reporting only.

Every subcommand is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args) -> exit code`` registered
in ``_COMMANDS``. Bad input (UserInputError, argparse errors) prints one line and exits with code 2.

Modules are imported inside the handlers, so ``hyperlt --help`` and a typo fail fast without loading JAX.
Only ``_run_train`` reaches the training layer (``hyperlt.training.loop.train``); every other command
serves a trained work dir through hyperlt.workdir.run and the inference and analysis layers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from hyperlt import outputs
from hyperlt import version
from hyperlt.errors import UserInputError, require

EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 1


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # argparse's own errors: one line, exit 2
    self.exit(EXIT_BAD_INPUT, f"hyperlt: error: {message}\n")


def _served_parser(sub, name: str, help_text: str, *,
                   workdir_help: str = "a trained work dir (from hyperlt train --workdir DIR)",
                   progress: bool = True) -> argparse.ArgumentParser:
  """The parser of a command that reads a work dir: every such command needs ``--workdir``; the long ones
  (``progress``) also take ``--no-progress``."""
  p = sub.add_parser(name, help=help_text)
  p.add_argument("--workdir", required=True, help=workdir_help)
  if progress:
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars on stderr (they are also off when stderr is not a terminal)")
  return p


def _add_train(sub):
  p = sub.add_parser("train", help="train a model (default: the embedded digits recipe)")
  p.add_argument("--config", default=None,
                 help="bundled config name or path to a .py config, with an optional :variant "
                      "(e.g. digits, digits:local, cifar_lt:c10,ir100; default: digits, or with --restart-from "
                      "the work dir's own config.json)")
  p.add_argument("--workdir", default=None,
                 help="where checkpoints and metrics go (default: runs/<config>[-<variant>], e.g. runs/digits, "
                      "runs/digits-local)")
  p.add_argument("--no-progress", action="store_true",
                 help="no progress bar on stderr (it is also off when stderr is not a terminal)")
  p.add_argument("--restart-from", type=_non_negative_int, default=None, metavar="STEP",
                 help="restart from checkpoint STEP with changed optim.* overrides (after divergence), starting "
                      "from the work dir's config unless --config is given; newer checkpoints are moved to "
                      "WORKDIR/superseded/")
  p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.05")


def _non_negative_int(text: str) -> int:
  # argparse reports a raised ArgumentTypeError as "argument --x: <message>", one line, exit 2.
  try:
    value = int(text)
  except ValueError:
    value = -1
  if value < 0:
    raise argparse.ArgumentTypeError(f"expected a checkpoint step (an integer >= 0), got {text!r}")
  return value


def default_workdir(config_spec: str) -> str:
  """``train``'s work dir without ``--workdir``: runs/<config>, plus -<variant> for a variant, so that
  ``digits`` and ``digits:local`` (or ``cifar_lt:c10,ir100`` and ``cifar_lt:c100,ir100``) never share one."""
  name, _, variant = config_spec.partition(":")
  name = name.rstrip("/").split("/")[-1].removesuffix(".py")
  parts = [name] + [v for v in variant.replace(",", ":").split(":") if v]
  return "runs/" + "-".join(parts)


def _run_train(args) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from hyperlt import configs as config_lib  # pylint: disable=g-import-not-at-top
  from hyperlt.analysis import evaluate, format as fmt  # pylint: disable=g-import-not-at-top
  from hyperlt.workdir import run as run_lib  # pylint: disable=g-import-not-at-top
  # The one import of the training layer outside it (tests/test_layers.py allows exactly this one).
  from hyperlt.training.loop import train  # pylint: disable=g-import-not-at-top
  if args.restart_from is not None and args.config is None:
    # A restart changes a trained run: its own config is the starting point, the overrides change optim.*.
    require(args.workdir is not None, "--restart-from: needs --workdir (the run to restart)")
    config = run_lib.require_run(args.workdir)[0]
  else:
    config = config_lib.load(args.config or "digits")
  config_lib.override(config, args.overrides)
  if args.no_progress:
    config.train.progress = False
  config_lib.validate(config)
  workdir = args.workdir or default_workdir(args.config or "digits")
  outputs.check_workdir_for_training(workdir)
  # restart_from is passed only when given, so a plain train call stays the same whatever the loop accepts.
  run = train(config, workdir, **({} if args.restart_from is None else {"restart_from": args.restart_from}))
  t = run.model.num_experts
  alphas = np.eye(t, dtype=np.float32)
  results = evaluate.evaluate_alphas(run, np.concatenate([alphas, evaluate.default_preference(run)[None]]))
  print(f"\nTrained {run.step} steps; checkpoints in {workdir}")
  print("\nAccuracy (%) of each expert vertex preference on the 11 test sets:")
  counts = evaluate.image_counts(run)
  print(evaluate.format_comparison(results[:t], [f"{a}" for a in run.config.loss.anchors], counts))
  print()
  pref = fmt.preference(results[-1]["preference"], digits=6)
  print(evaluate.format_table(results[-1]["results"], f"Accuracy (%) by shot group at preference {pref}:", counts))
  print(f"\nNext: hyperlt evaluate --workdir {workdir} --preference 1,0,0")
  return 0


def _add_preference(p: argparse.ArgumentParser) -> None:
  p.add_argument("--preference", default=None,
                 help="raw preference, one non-negative number per expert, e.g. 1,0,0, or a JSON file with a "
                      '"preference" list such as adapt --out writes (default: the uniform anchor\'s vertex)')


def _early_preference(args):
  """``--preference`` checked against the work dir's recorded config (cheap: no restore); None if not given."""
  from hyperlt import preference  # pylint: disable=g-import-not-at-top
  from hyperlt.workdir import run as run_lib  # pylint: disable=g-import-not-at-top
  config, _ = run_lib.require_run(args.workdir)
  if args.preference is None:
    return None
  return preference.parse(args.preference, config.model.num_experts, "--preference")


def _add_evaluate(sub):
  p = _served_parser(sub, "evaluate", "accuracy on the 11 test-agnostic test sets for one preference")
  _add_preference(p)
  p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def _run_evaluate(args) -> int:
  from hyperlt.analysis import evaluate, format as fmt  # pylint: disable=g-import-not-at-top
  from hyperlt.workdir import run as run_lib  # pylint: disable=g-import-not-at-top
  alpha = _early_preference(args)
  run = run_lib.load(args.workdir)
  alpha = alpha if alpha is not None else evaluate.default_preference(run)
  result = evaluate.evaluate_alphas(run, alpha[None])[0]
  counts = evaluate.image_counts(run)
  if args.json:
    print(json.dumps({**result, "counts": counts}))
  else:
    pref = fmt.preference(result["preference"], digits=6)
    print(evaluate.format_table(result["results"], f"Accuracy (%) at preference {pref} ({args.workdir}):",
                                counts))
  return 0


def _add_sweep(sub):
  p = _served_parser(sub, "sweep", "every preference of a simplex grid on the 11 test sets, with figures")
  p.add_argument("--step", type=float, default=0.1,
                 help="grid spacing; 0.1 gives 66 preferences for 3 experts, 0.05 gives 231 (default 0.1)")
  p.add_argument("--out", default=None, help="folder for sweep.json, sweep.csv, per_class_recall.csv and the "
                 "figures (default: WORKDIR/sweep)")
  p.add_argument("--suites", default="", help="extra test suites, comma-separated: partial, dirichlet")
  p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
  p.add_argument("--json", action="store_true",
                 help='print exactly one JSON list, [{"preference": [...], "results": {...}}, ...]')


def _run_sweep(args) -> int:
  import pathlib  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from hyperlt.analysis import sweep  # pylint: disable=g-import-not-at-top
  from hyperlt.data import suites as suites_lib  # pylint: disable=g-import-not-at-top
  from hyperlt.workdir import run as run_lib  # pylint: disable=g-import-not-at-top
  suites = tuple(s.strip() for s in args.suites.split(",") if s.strip())
  unknown = [s for s in suites if s not in suites_lib.SUITES]
  if unknown:
    raise UserInputError(f"--suites: unknown {unknown}; expected names from {', '.join(suites_lib.SUITES)}")
  out = pathlib.Path(args.out) if args.out else pathlib.Path(args.workdir) / "sweep"
  outputs.check_output_folder(out, "--out", args.workdir, files=sweep.OUTPUT_FILES)
  config, facts = run_lib.require_run(args.workdir)
  sweep.check_grid(_model_of(config, facts), facts.num_classes, facts.num_test, args.step, "--step")
  run = run_lib.load(args.workdir)
  start = time.perf_counter()
  result = sweep.sweep(run, args.step, suites=suites)
  seconds = time.perf_counter() - start
  try:
    files = sweep.write(result, out)
  except OSError as e:
    raise outputs.write_error(out, "--out", e) from None
  if not args.no_figures:
    from hyperlt.analysis import plots  # pylint: disable=g-import-not-at-top
    files += plots.plot_all(result, out)
  if args.json:
    print(json.dumps(result.items()))
    _report_written(files)
    return 0
  print(f"Swept {result.num_preferences} preferences (step {args.step:g}) on {len(result.set_names)} test sets "
        f"in {seconds:.1f} s ({args.workdir}).\n")
  print("Accuracy (%): best grid preference per test set, and each expert alone:")
  print(sweep.format_summary(result))
  print(f"\nWrote {', '.join(str(f) for f in files)}")
  return 0


def _model_of(config, facts):
  """The expert model of a recorded run (structure only, nothing restored): what grid estimates need."""
  from hyperlt.models.expert_model import build  # pylint: disable=g-import-not-at-top
  return build(config.model, facts.num_classes)


def _report_written(paths) -> None:
  """With --json, stdout holds exactly one JSON value, so the files written are reported on stderr."""
  if paths:
    print(f"hyperlt: wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)


def _add_choose(sub):
  p = _served_parser(sub, "choose", "pick the preference that best meets a goal, on the validation split")
  goal = p.add_argument_group("goal", "one objective, and any number of --subject-to bounds")
  goal = goal.add_mutually_exclusive_group(required=True)
  goal.add_argument("--maximize", metavar="METRIC",
                    help="[test set:]metric, metric one of all, many, medium, few, balanced_accuracy, ece")
  goal.add_argument("--minimize", metavar="METRIC", help="as --maximize, e.g. ece")
  p.add_argument("--subject-to", action="append", default=[], metavar="BOUND",
                 help="a bound such as few>=0.5 or backward50:all>=0.8 (fractions); repeat for several")
  p.add_argument("--target", default="uniform",
                 help="test set whose class prior un-prefixed metrics refer to (default uniform)")
  p.add_argument("--step", type=float, default=0.05, help="grid spacing of the candidates (default 0.05)")
  p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def _run_choose(args) -> int:
  from hyperlt.analysis import choose  # pylint: disable=g-import-not-at-top
  from hyperlt.workdir import run as run_lib  # pylint: disable=g-import-not-at-top
  # Check the goal before the (slower) load, so a typo fails at once.
  goal = args.maximize if args.maximize is not None else args.minimize
  choose.parse_metric(goal, args.target, "--maximize" if args.maximize is not None else "--minimize")
  for bound in args.subject_to:
    choose.parse_bound(bound, args.target)
  config, facts = run_lib.require_run(args.workdir)
  choose.check_grid(_model_of(config, facts), facts.num_classes, facts.num_val, args.step, "--step")
  run = run_lib.load(args.workdir)
  choice = choose.choose(run, maximize=args.maximize, minimize=args.minimize, subject_to=args.subject_to,
                         target=args.target, step=args.step)
  print(json.dumps(choice.to_json()) if args.json else choose.format_choice(choice, args.workdir))
  return 0


def _add_predict(sub):
  p = _served_parser(sub, "predict", "class probabilities of images at a preference")
  p.add_argument("--images", required=True,
                 help="a .npy file of uint8 images [N, H, W, C] (or [N, H, W]), or a .npz file holding one "
                      "array or an array named images, x or x_test")
  _add_preference(p)
  p.add_argument("--out", default=None, help="also write the probabilities [N, K] to this .npy file")
  p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def _load_images(path_text: str):
  from hyperlt.data import images  # pylint: disable=g-import-not-at-top
  return images.load_image_file(path_text, "--images")


def _run_predict(args) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from hyperlt import api, preference  # pylint: disable=g-import-not-at-top
  from hyperlt.analysis import format as fmt  # pylint: disable=g-import-not-at-top
  from hyperlt.data.images import check_images  # pylint: disable=g-import-not-at-top
  from hyperlt.workdir import run as run_lib  # pylint: disable=g-import-not-at-top
  # np.save appends .npy to a name without it; the checked path is the file that will be written.
  out = outputs.check_output_file(args.out, "--out", args.workdir, suffix=".npy") if args.out else None
  images = _load_images(args.images)
  _early_preference(args)
  check_images(images, run_lib.require_run(args.workdir)[1].image_shape, "--images")
  model = api.load(args.workdir)
  alpha = (model.default_preference if args.preference is None
           else preference.parse(args.preference, model.num_experts, "--preference"))
  problem = api.value_range_problem(model.check_images(images, "off"), model.run.facts)
  if problem is not None:  # a warning, not a refusal: unusual but valid batches exist (one dark image)
    print(f"hyperlt: warning: {problem}", file=sys.stderr)
  probs = model.predict(images, alpha, check_range="off")
  if out is not None:
    try:
      np.save(out, probs)
    except OSError as e:
      raise outputs.write_error(out, "--out", e) from None
  classes = probs.argmax(-1) if len(probs) else np.zeros(0, np.int64)
  if args.json:
    print(json.dumps({"preference": [float(v) for v in alpha], "class_names": list(model.class_names),
                      "classes": [int(c) for c in classes], "probabilities": probs.tolist()}))
    _report_written([out] if out is not None else [])
    return 0
  pref = fmt.preference(alpha, digits=6)
  print(f"{len(probs)} images at preference {pref} ({', '.join(model.anchors)}):")
  shown = 20
  for i, c in enumerate(classes[:shown]):
    print(f"  image {i}: class {model.class_names[c]} (probability {probs[i, c]:.3f})")
  if len(classes) > shown:
    print(f"  ... {len(classes) - shown} more; use --out FILE.npy or --json for all")
  if out is not None:
    print(f"Wrote probabilities [{len(probs)}, {model.num_classes}] to {out}")
  return 0


def _add_adapt(sub):
  p = _served_parser(sub, "adapt", "choose the preference from unlabeled test images (test-time adaptation)")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--test-set", metavar="NAME",
                      help="adapt to this test set's images (labels only score the result): forward50, ..., "
                           "uniform, ..., backward50, or all (each of the 11 separately, as a table)")
  source.add_argument("--images", metavar="FILE",
                      help="adapt to your own unlabeled images: a .npy file of uint8 [N, H, W, C] (or [N, H, W]), "
                           "or a .npz file holding one array or an array named images, x or x_test")
  p.add_argument("--method", default="stability", choices=("stability", "em"),
                 help="stability: maximise prediction agreement between two views (SADE, with a collapse "
                      "guard); em: estimate the test prior by EM and take the closest preference (default "
                      "stability)")
  p.add_argument("--adjust-logits", action="store_true",
                 help="em only: keep the reference preference and add log(estimated prior / its prior) to the "
                      "logits, instead of moving the preference")
  p.add_argument("--reference", default=None,
                 help="em's reference preference (default: the uniform anchor's vertex)")
  p.add_argument("--grid-step", type=float, default=0.05, help="em: spacing of the candidate grid (default 0.05)")
  p.add_argument("--seed", type=int, default=0, help="stability: seed of the views and batch order (default 0)")
  p.add_argument("--epochs", type=int, default=5, help="stability: epochs (default 5, SADE's)")
  p.add_argument("--min-steps", type=int, default=100,
                 help="stability: at least this many updates, with more epochs on small sets (default 100; 0 "
                      "= SADE's 5 epochs exactly)")
  p.add_argument("--view-padding", type=int, default=None,
                 help="stability: crop padding of the two views (default: twice the run's data.crop_padding)")
  p.add_argument("--no-guard", action="store_true", help="stability: disable the collapse guard")
  p.add_argument("--out", default=None,
                 help="also write the JSON result to this file; pass it to evaluate, predict or export as "
                      "--preference FILE")
  p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def _run_adapt(args) -> int:
  from hyperlt.analysis import adapt, format as fmt  # pylint: disable=g-import-not-at-top
  from hyperlt import preference  # pylint: disable=g-import-not-at-top
  from hyperlt.analysis.adapt import report  # pylint: disable=g-import-not-at-top
  from hyperlt.data.images import check_images  # pylint: disable=g-import-not-at-top
  from hyperlt.workdir import run as run_lib  # pylint: disable=g-import-not-at-top
  if args.test_set is not None:
    report.check_test_set(args.test_set, allow_all=True)
  if args.adjust_logits and args.method != "em":
    raise UserInputError("--adjust-logits: only the em method adjusts logits; add --method em")
  try:
    options = adapt.StabilityOptions(epochs=args.epochs, min_steps=args.min_steps, view_padding=args.view_padding,
                                     guard_tolerance=None if args.no_guard else adapt.StabilityOptions.guard_tolerance,
                                     seed=args.seed).validate()
  except UserInputError as e:  # the options' fields are these flags: name them as typed
    field, _, rest = str(e).partition(":")
    raise UserInputError(f"--{field.replace('_', '-')}:{rest}") from None
  kwargs = {"options": options, "reference": args.reference, "grid_step": args.grid_step,
            "adjust_logits": args.adjust_logits}
  out = outputs.check_output_file(args.out, "--out", args.workdir) if args.out else None
  config, facts = run_lib.require_run(args.workdir)
  if args.reference is not None:
    preference.parse(args.reference, config.model.num_experts, "--reference")
  if args.method == "em" and not args.adjust_logits:
    adapt.core.check_grid_step(config.model.num_experts, facts.num_classes, args.grid_step, "--grid-step")
  if args.images is not None:
    images = check_images(_load_images(args.images), facts.image_shape, "--images")
    run = run_lib.load(args.workdir, with_data=False)
    output = adapt.adapt(run, images, args.method, **kwargs).to_json()
    text = (f"Adapted preference ({args.method}, {output['num_images']} unlabeled images; experts "
            f"{', '.join(run.config.loss.anchors)}): {fmt.preference(output['preference'], digits=6)}\n"
            f"  stopped by: {output['stop_reason']}; estimated test prior (EM): "
            f"{' '.join(f'{v:.3f}' for v in output['estimated_prior'])}")
  else:
    run = run_lib.load(args.workdir)
    if args.test_set == report.ALL:
      output = report.adapt_all_test_sets(run, args.method, **kwargs)
      text = report.format_all(run, output)
    else:
      output = report.adapt_test_set(run, args.test_set, args.method, **kwargs)
      text = report.format_test_set(run, output, args.workdir)
  if out is not None:
    try:
      out.write_text(json.dumps(output, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
      raise outputs.write_error(out, "--out", e) from None
    text += f"\nWrote {out}" + ("" if args.test_set == report.ALL else
                                f"; use it as: hyperlt evaluate --workdir {args.workdir} --preference {out}")
  print(json.dumps(output) if args.json else text)
  if args.json:
    _report_written([out] if out is not None else [])
  return 0


def _add_export(sub):
  p = _served_parser(sub, "export", "write a jax.export artifact of a trained run for serving with jax alone",
                     progress=False)
  p.add_argument("--out", required=True,
                 help="the artifact file to write (e.g. model.jax); a sidecar FILE.json describes it; never one of "
                      "the work dir's own files")
  p.add_argument("--preference", default=None,
                 help="fix this raw preference in the artifact, e.g. 1,0,0 or an adapt --out JSON file (default: "
                      "the artifact takes the preference as its second input)")
  p.add_argument("--platforms", default="cpu",
                 help="comma-separated platforms to lower for, e.g. cpu,cuda for one file that runs on CPU and "
                      "GPU servers (default cpu)")


def _run_export(args) -> int:
  from hyperlt.inference import export  # pylint: disable=g-import-not-at-top
  written = export.write(args.workdir, args.out, args.preference, export.parse_platforms(args.platforms))
  meta = written.metadata
  print(f"Wrote {written.path} ({written.path.stat().st_size / 1e6:.1f} MB; step {meta['step']}; platforms "
        f"{','.join(meta['platforms'])}) and its description {written.sidecar}")
  print(export.describe(meta))
  call = "call(images)" if meta["preference"] != "input" else "call(images, preference)"
  print(f"Load with jax alone: jax.export.deserialize(open({str(written.path)!r}, 'rb').read()).{call}")
  return 0


def _add_plot(sub):
  p = _served_parser(sub, "plot", "a figure of the training curves in a work dir's metrics.jsonl",
                     workdir_help="a work dir that training has logged to (its metrics.jsonl)", progress=False)
  p.add_argument("--out", default=None,
                 help="the PNG file to write (default: WORKDIR/plots/curves.png); never one of the work dir's own "
                      "files")
  p.add_argument("--tensorboard", default=None, metavar="DIR",
                 help="also write the metrics as TensorBoard event files to DIR (needs the tensorboard extra: "
                      "pip install 'hyperlt[tensorboard]')")


def _run_plot(args) -> int:
  from hyperlt.analysis import curves  # pylint: disable=g-import-not-at-top
  if args.tensorboard is not None:
    curves.check_tensorboard(args.workdir, args.tensorboard)
  out = curves.plot_curves(args.workdir, args.out)
  print(f"Wrote {out}")
  if args.tensorboard is not None:
    logdir = curves.write_tensorboard(args.workdir, args.tensorboard)
    print(f"Wrote TensorBoard events to {logdir}; view them with: tensorboard --logdir {logdir}")
  return 0


_COMMANDS = {
    "train": (_add_train, _run_train),
    "evaluate": (_add_evaluate, _run_evaluate),
    "sweep": (_add_sweep, _run_sweep),
    "choose": (_add_choose, _run_choose),
    "predict": (_add_predict, _run_predict),
    "adapt": (_add_adapt, _run_adapt),
    "export": (_add_export, _run_export),
    "plot": (_add_plot, _run_plot),
}


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="hyperlt", description="Controllable long-tailed recognition with "
                   "hypernetwork-generated experts.")
  parser.add_argument("--version", action="version", version=f"hyperlt {version.installed()}",
                      help="print the installed hyperlt version and exit")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
  sub.required = True
  for add, _ in _COMMANDS.values():
    add(sub)
  return parser


_NEGATIVE_NUMBER = re.compile(r"^-\.?[0-9]")


def _attach_negative_values(argv: list[str]) -> list[str]:
  """``--preference -1,1,1`` as ``--preference=-1,1,1``: argparse takes a token that starts with "-" and is
  not a plain number (-1 is, -1,1,1 is not) for an option and answers "expected one argument". Attached,
  the value reaches its own check, which names the field and what is expected. Options without a value
  then fail in argparse as "ignored explicit argument", as a stray number would have failed anyway."""
  out = []
  for token in argv:
    if out and _NEGATIVE_NUMBER.match(token) and out[-1].startswith("--") and "=" not in out[-1]:
      out[-1] = f"{out[-1]}={token}"
    else:
      out.append(token)
  return out


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
  argv = _attach_negative_values(sys.argv[1:] if argv is None else list(argv))
  args = build_parser().parse_args(argv)
  from hyperlt import progress  # pylint: disable=g-import-not-at-top
  # --no-progress turns bars off; otherwise they follow stderr being a terminal (hyperlt.progress).
  progress.set_enabled(False if getattr(args, "no_progress", False) else None)
  try:
    if args.command != "train":  # every other command reads an existing work dir; say so before any work
      outputs.check_served_workdir(args.workdir)
    return _COMMANDS[args.command][1](args)
  except UserInputError as e:
    print(f"hyperlt: error: {_one_line(e)}", file=sys.stderr)
    return EXIT_BAD_INPUT
  except KeyboardInterrupt:
    print("hyperlt: interrupted; checkpoints already written are intact", file=sys.stderr)
    return 130
  except Exception as e:  # pylint: disable=broad-except
    # Not a substitute for validation (bad input is a UserInputError above): this is a bug in hyperlt, so
    # one line and a request to report it, and the traceback only when asked for.
    if os.environ.get("HYPERLT_DEBUG") == "1":
      raise
    print(f"hyperlt: internal error: {type(e).__name__}: {_one_line(e)[:500]} (this is a bug, please report it "
          "with the command you ran; HYPERLT_DEBUG=1 shows the traceback)", file=sys.stderr)
    return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
  sys.exit(main())
