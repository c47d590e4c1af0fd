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
import sys

from hyperlt.errors import UserInputError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # argparse's own errors: one line, exit 2
    self.exit(EXIT_BAD_INPUT, f"hyperlt: error: {message}\n")


def _served_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
  """The parser of a command that serves a trained work dir: every such command needs ``--workdir``."""
  p = sub.add_parser(name, help=help_text)
  p.add_argument("--workdir", required=True, help="a trained work dir (from hyperlt train --workdir DIR)")
  return p


def _add_train(sub):
  p = sub.add_parser("train", help="train a model (default: the embedded digits recipe)")
  p.add_argument("--config", default="digits",
                 help="bundled config name or path to a .py config, with an optional :variant "
                      "(e.g. digits, digits:local, cifar_lt:c10,ir100)")
  p.add_argument("--workdir", default=None, help="where checkpoints and metrics go (default: runs/<config>)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.05")


def _run_train(args) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from hyperlt import configs as config_lib  # pylint: disable=g-import-not-at-top
  from hyperlt.analysis import evaluate, format as fmt  # pylint: disable=g-import-not-at-top
  # The one import of the training layer outside it (tests/test_layers.py allows exactly this one).
  from hyperlt.training.loop import train  # pylint: disable=g-import-not-at-top
  config = config_lib.load(args.config)
  config_lib.override(config, args.overrides)
  if args.no_progress:
    config.train.progress = False
  config_lib.validate(config)
  workdir = args.workdir or f"runs/{args.config.split(':')[0].split('/')[-1].removesuffix('.py')}"
  run = train(config, workdir)
  t = run.model.num_experts
  alphas = np.eye(t, dtype=np.float32)
  results = evaluate.evaluate_alphas(run, np.concatenate([alphas, evaluate.default_preference(run)[None]]))
  print(f"\nTrained {run.step} steps; checkpoints in {workdir}")
  print("\nAccuracy (%) of each expert vertex preference on the 11 test sets:")
  print(evaluate.format_comparison(results[:t], [f"{a}" for a in run.config.loss.anchors]))
  print()
  pref = fmt.preference(results[-1]["preference"], digits=6)
  print(evaluate.format_table(results[-1]["results"], f"Accuracy (%) by shot group at preference {pref}:"))
  print(f"\nNext: hyperlt evaluate --workdir {workdir} --preference 1,0,0")
  return 0


def _add_preference(p: argparse.ArgumentParser) -> None:
  p.add_argument("--preference", default=None,
                 help="raw preference, one non-negative number per expert, e.g. 1,0,0, or a JSON file with a "
                      '"preference" list such as adapt --out writes (default: the uniform anchor\'s vertex)')


def _add_evaluate(sub):
  p = _served_parser(sub, "evaluate", "accuracy on the 11 test-agnostic test sets for one preference")
  _add_preference(p)
  p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def _run_evaluate(args) -> int:
  from hyperlt import preference  # pylint: disable=g-import-not-at-top
  from hyperlt.analysis import evaluate, format as fmt  # pylint: disable=g-import-not-at-top
  from hyperlt.workdir import run as run_lib  # pylint: disable=g-import-not-at-top
  run = run_lib.load(args.workdir)
  alpha = (preference.parse(args.preference, run.model.num_experts, "--preference")
           if args.preference is not None else evaluate.default_preference(run))
  result = evaluate.evaluate_alphas(run, alpha[None])[0]
  if args.json:
    print(json.dumps(result))
  else:
    pref = fmt.preference(result["preference"], digits=6)
    print(evaluate.format_table(result["results"], f"Accuracy (%) at preference {pref} ({args.workdir}):"))
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
  run = run_lib.load(args.workdir)
  start = time.perf_counter()
  result = sweep.sweep(run, args.step, suites=suites)
  seconds = time.perf_counter() - start
  out = pathlib.Path(args.out) if args.out else pathlib.Path(args.workdir) / "sweep"
  files = sweep.write(result, out)
  if not args.no_figures:
    from hyperlt.analysis import plots  # pylint: disable=g-import-not-at-top
    files += plots.plot_all(result, out)
  if args.json:
    print(json.dumps(result.items()))
    return 0
  print(f"Swept {result.num_preferences} preferences (step {args.step:g}) on {len(result.set_names)} test sets "
        f"in {seconds:.1f} s ({args.workdir}).\n")
  print("Accuracy (%): best grid preference per test set, and each expert alone:")
  print(sweep.format_summary(result))
  print(f"\nWrote {', '.join(str(f) for f in files)}")
  return 0


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
  images = _load_images(args.images)
  model = api.load(args.workdir)
  alpha = (model.default_preference if args.preference is None
           else preference.parse(args.preference, model.num_experts, "--preference"))
  probs = model.predict(images, alpha)
  if args.out:
    np.save(args.out, probs)
  classes = probs.argmax(-1) if len(probs) else np.zeros(0, np.int64)
  if args.json:
    print(json.dumps({"preference": [float(v) for v in alpha], "class_names": list(model.class_names),
                      "classes": [int(c) for c in classes], "probabilities": probs.tolist()}))
    return 0
  pref = fmt.preference(alpha, digits=6)
  print(f"{len(probs)} images at preference {pref} ({', '.join(model.anchors)}):")
  shown = 20
  for i, c in enumerate(classes[:shown]):
    print(f"  image {i}: class {model.class_names[c]} (probability {probs[i, c]:.3f})")
  if len(classes) > shown:
    print(f"  ... {len(classes) - shown} more; use --out FILE.npy or --json for all")
  if args.out:
    print(f"Wrote probabilities [{len(probs)}, {model.num_classes}] to {args.out}")
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
                 help="also write the JSON result to this file; pass it to evaluate, sweep or predict as "
                      "--preference FILE")
  p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def _run_adapt(args) -> int:
  import pathlib  # pylint: disable=g-import-not-at-top
  from hyperlt.analysis import adapt, format as fmt  # pylint: disable=g-import-not-at-top
  from hyperlt.analysis.adapt import report  # pylint: disable=g-import-not-at-top
  from hyperlt.workdir import run as run_lib  # pylint: disable=g-import-not-at-top
  if args.test_set is not None:
    report.check_test_set(args.test_set, allow_all=True)
  if args.adjust_logits and args.method != "em":
    raise UserInputError("--adjust-logits: only the em method adjusts logits; add --method em")
  options = adapt.StabilityOptions(epochs=args.epochs, min_steps=args.min_steps, view_padding=args.view_padding,
                                   guard_tolerance=None if args.no_guard else adapt.StabilityOptions.guard_tolerance,
                                   seed=args.seed).validate()
  kwargs = {"options": options, "reference": args.reference, "grid_step": args.grid_step,
            "adjust_logits": args.adjust_logits}
  if args.images is not None:
    images = _load_images(args.images)
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
  if args.out:
    out = pathlib.Path(args.out)
    try:
      out.write_text(json.dumps(output, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
      raise UserInputError(f"--out: cannot write {out} ({e.strerror or e})") from None
    text += f"\nWrote {out}" + ("" if args.test_set == report.ALL else
                                f"; use it as: hyperlt evaluate --workdir {args.workdir} --preference {out}")
  print(json.dumps(output) if args.json else text)
  return 0


_COMMANDS = {
    "train": (_add_train, _run_train),
    "evaluate": (_add_evaluate, _run_evaluate),
    "sweep": (_add_sweep, _run_sweep),
    "choose": (_add_choose, _run_choose),
    "predict": (_add_predict, _run_predict),
    "adapt": (_add_adapt, _run_adapt),
}


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="hyperlt", description="Controllable long-tailed recognition with "
                   "hypernetwork-generated experts.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
  sub.required = True
  for add, _ in _COMMANDS.values():
    add(sub)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return _COMMANDS[args.command][1](args)
  except UserInputError as e:
    print(f"hyperlt: error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  except KeyboardInterrupt:
    print("hyperlt: interrupted; checkpoints already written are intact", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
