"""The ``hyperlt`` command line: argument parsing and error reporting only.

Every subcommand is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args) -> exit code`` registered
in ``_COMMANDS``. Bad input (UserInputError, argparse errors) prints one line and exits with code 2.
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
  from hyperlt import config as config_lib, evaluate, train  # pylint: disable=g-import-not-at-top
  config = config_lib.load(args.config)
  config_lib.override(config, args.overrides)
  if args.no_progress:
    config.train.progress = False
  config_lib.validate(config)
  workdir = args.workdir or f"runs/{args.config.split(':')[0].split('/')[-1].removesuffix('.py')}"
  run = train.train(config, workdir)
  t = run.model.num_experts
  alphas = np.eye(t, dtype=np.float32)
  results = evaluate.evaluate_alphas(run, np.concatenate([alphas, evaluate.default_preference(run)[None]]))
  print(f"\nTrained {int(run.state.step)} steps; checkpoints in {workdir}")
  print("\nAccuracy (%) of each expert vertex preference on the 11 test sets:")
  print(evaluate.format_comparison(results[:t], [f"{a}" for a in run.config.loss.anchors]))
  print()
  pref = ",".join(f"{v:g}" for v in results[-1]["preference"])
  print(evaluate.format_table(results[-1]["results"], f"Accuracy (%) by shot group at preference {pref}:"))
  print(f"\nNext: hyperlt evaluate --workdir {workdir} --preference 1,0,0")
  return 0


def _add_evaluate(sub):
  p = sub.add_parser("evaluate", help="accuracy on the 11 test-agnostic test sets for one preference")
  p.add_argument("--workdir", required=True)
  p.add_argument("--preference", default=None,
                 help="raw preference, one non-negative number per expert, e.g. 1,0,0 (default: the "
                      "uniform anchor's vertex)")
  p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def _run_evaluate(args) -> int:
  from hyperlt import evaluate, preference, train  # pylint: disable=g-import-not-at-top
  run = train.load(args.workdir)
  alpha = (preference.parse(args.preference, run.model.num_experts, "--preference")
           if args.preference is not None else evaluate.default_preference(run))
  result = evaluate.evaluate_alphas(run, alpha[None])[0]
  if args.json:
    print(json.dumps(result))
  else:
    pref = ",".join(f"{v:g}" for v in result["preference"])
    print(evaluate.format_table(result["results"], f"Accuracy (%) at preference {pref} ({args.workdir}):"))
  return 0


_COMMANDS = {
    "train": (_add_train, _run_train),
    "evaluate": (_add_evaluate, _run_evaluate),
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
