"""The README's commands and snippets run as written, in the order written, in a fresh folder.

Every fenced ``bash`` line and every ``python`` block runs in one temporary folder through the real CLI
(a subprocess each), except the lines in SKIPPED, each with its reason. The README's first command,
``hyperlt train``, would retrain the embedded default (most of a minute); the session's one default run
(tests/conftest.py ``trained_workdir``, the same config) is copied to ``runs/digits`` first, so that
command resumes it and only prints its tables. Inline commands in the prose must parse with the real
parser, and the command table's options must exist with the defaults it shows.
"""

from __future__ import annotations

import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from hyperlt import cli
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

README = REPO_ROOT / "README.md"
# Commands the test does not run (matched by prefix), and why.
SKIPPED = {
    'pip install -e ".[dev]"': "installs the package this test already runs in",
    "pytest": "the suite this test is part of",
    "hyperlt train --config cifar_lt:": "CIFAR recipes need their data and a GPU",
    "hyperlt train --config my_config.py": "an example of a user's own config file",
}
HYPERLT = [sys.executable, "-m", "hyperlt.cli"]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
  """(language, body) of every fenced block, in order."""
  return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def shell_commands(body: str) -> list[str]:
  """The commands of a bash block: one a line, trailing comments removed."""
  commands = []
  for line in body.splitlines():
    line = re.sub(r"\s+#.*$", "", line).strip()
    if line and not line.startswith("#"):
      commands.append(line)
  return commands


def _skip_reason(command: str) -> str | None:
  return next((why for prefix, why in SKIPPED.items() if command.startswith(prefix)), None)


def test_readme_lists_only_skips_that_exist():
  commands = [c for lang, body in fenced_blocks(README.read_text()) if lang == "bash" for c in shell_commands(body)]
  for prefix in SKIPPED:
    assert any(c.startswith(prefix) for c in commands), f"SKIPPED has {prefix!r}, which the README no longer has"


@pytest.mark.slow
def test_readme_commands_and_snippets_run_in_order(tmp_path, trained_workdir):
  shutil.copytree(trained_workdir, tmp_path / "runs" / "digits")
  ran = []
  for lang, body in fenced_blocks(README.read_text()):
    if lang == "bash":
      for command in shell_commands(body):
        if _skip_reason(command):
          continue
        argv = shlex.split(command)
        assert argv[0] in ("hyperlt", "python"), f"README command of an unknown program: {command}"
        argv = (HYPERLT if argv[0] == "hyperlt" else [sys.executable]) + argv[1:]
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"{command} failed:\n{proc.stderr[-2000:]}"
        ran.append((command, proc.stdout))
    elif lang == "python":
      script = tmp_path / f"readme_snippet_{len(ran)}.py"
      script.write_text(body)
      proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False)
      assert proc.returncode == 0, f"README Python snippet failed:\n{body}\n{proc.stderr[-2000:]}"
      assert "Warning" not in proc.stderr, proc.stderr  # the snippet scales its images as the model expects
      ran.append((body, proc.stdout))
  outputs = dict(ran)
  assert "Accuracy (%) of each expert vertex preference" in outputs["hyperlt train"]
  # The smoke run gets its own work dir, so it does not trip over the default run in runs/digits.
  assert (tmp_path / "runs" / "digits-local" / "config.json").is_file()
  snippet = next(out for code, out in ran if "api.load" in code)
  predicted, true = re.search(r"predicted: \[(.*?)\] true: \[(.*?)\]", snippet, re.S).groups()
  assert sum(p == t for p, t in zip(predicted.split(), true.split())) >= 8  # a trained model, scaled input


def _inline_commands(text: str) -> list[str]:
  """Inline `hyperlt ...` spans of the prose that are whole commands (they name a work dir or train)."""
  spans = [" ".join(s.split()) for s in re.findall(r"(?<!`)`(hyperlt [^`]+)`", text)]
  return [s for s in spans if "--workdir runs/" in s or s.startswith("hyperlt train")]


def test_readme_inline_commands_parse():
  text = "\n".join(line for line in README.read_text().splitlines() if not line.startswith("|"))
  commands = _inline_commands(text)
  assert len(commands) >= 5
  parser = cli.build_parser()
  for command in commands:
    try:
      parser.parse_args(shlex.split(command)[1:])
    except SystemExit:
      pytest.fail(f"README command does not parse: {command}")


def test_readme_command_table_matches_the_parser():
  rows = [line for line in README.read_text().splitlines() if line.startswith("| `hyperlt ")]
  parser = cli.build_parser()
  subparsers = next(a for a in parser._actions if a.dest == "command").choices  # pylint: disable=protected-access
  assert {row.split("`")[1].split()[1] for row in rows} >= {"train", "evaluate", "sweep", "choose", "adapt",
                                                              "predict"}
  for row in rows:
    usage = row.split("`")[1]
    name = usage.split()[1]
    if name.startswith("-"):  # an option of hyperlt itself, such as --version
      assert name in {o for a in parser._actions for o in a.option_strings}, name  # pylint: disable=protected-access
      continue
    actions = subparsers[name]._actions  # pylint: disable=protected-access
    options = {opt: action for action in actions for opt in action.option_strings}
    for option in re.findall(r"(--[a-z-]+)", usage):
      assert option in options, f"README table: {name} has no option {option}"
    # "[--step 0.1]": a number shown in brackets is the option's default.
    for option, value in re.findall(r"\[(--[a-z-]+) ([0-9.]+)\]", usage):
      assert float(value) == options[option].default, f"README table: {name} {option} default is " \
                                                      f"{options[option].default}, not {value}"
