"""Regenerates every number, table and figure of the default run that README.md, docs/sweeps.md and
docs/adaptation.md quote, from one fresh work dir on the embedded default.

    python scripts/regenerate_docs.py                 # train, run the commands, write results, rewrite the docs
    python scripts/regenerate_docs.py --render-only   # rewrite the docs from the committed results file

A run trains the embedded default (`hyperlt train` with no config) into a fresh work dir, then runs the
hyperlt commands the docs quote (COMMANDS, each through the real CLI in a subprocess), and writes

* docs/results/default_run.json: the command, the machine (core count, jax version, backend), each
  command line and its output (JSON where the command has --json, else its text);
* docs/images/sweep_simplex_digits.png: the sweep's simplex figure.

It then rewrites the generated regions of the docs, each between ``<!-- generated:NAME -->`` and
``<!-- /generated:NAME -->``, from the results file (RENDERERS). tests/test_docs_numbers.py checks, without
training, that every region equals its rendering and that the numbers in the README's tables are the ones
in the results file. About two minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "default_run.json"
SIMPLEX_FIGURE = REPO / "docs" / "images" / "sweep_simplex_digits.png"
DOCS = ("README.md", "docs/sweeps.md", "docs/adaptation.md")
# How the work dir is written in the docs; the script itself trains into a fresh temporary directory.
SHOWN_WORKDIR = "runs/digits"
VERTICES = ("1,0,0", "0,1,0", "0,0,1")
ANCHOR_SETS = ("forward50", "uniform", "backward50")

# (key, hyperlt arguments) in the order they run; "W" is the work dir. Keys are the results file's.
COMMANDS = (
    ("train", ["train", "--workdir", "W", "--no-progress"]),
    *((f"evaluate {p}", ["evaluate", "--workdir", "W", "--preference", p, "--json"]) for p in VERTICES),
    ("sweep", ["sweep", "--workdir", "W", "--step", "0.05", "--no-progress"]),
    ("adapt em", ["adapt", "--workdir", "W", "--test-set", "all", "--method", "em", "--json", "--no-progress"]),
    ("adapt stability", ["adapt", "--workdir", "W", "--test-set", "all", "--method", "stability", "--json",
                         "--no-progress"]),
)


def machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  return {"cpu_count": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
          "platform": platform.platform(), "python": platform.python_version()}


def _hyperlt(args: list[str]) -> str:
  proc = subprocess.run([sys.executable, "-m", "hyperlt.cli", *args], capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise SystemExit(f"hyperlt {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
  return proc.stdout


def run_all(workdir: pathlib.Path) -> dict:
  """Runs COMMANDS on a fresh ``workdir``; returns the results file's content."""
  results = {"command": "python scripts/regenerate_docs.py", "machine": machine(), "workdir_shown_as": SHOWN_WORKDIR,
             "commands": {}, "outputs": {}, "seconds": {}}
  for key, args in COMMANDS:
    real = [str(workdir) if a == "W" else a for a in args]
    start = time.perf_counter()
    out = _hyperlt(real)
    results["seconds"][key] = round(time.perf_counter() - start, 1)
    results["commands"][key] = "hyperlt " + " ".join(SHOWN_WORKDIR if a == "W" else a for a in args)
    text = out.replace(str(workdir), SHOWN_WORKDIR)
    results["outputs"][key] = json.loads(text) if "--json" in args else text
    print(f"{results['commands'][key]}: {results['seconds'][key]} s", file=sys.stderr)
  return results


# ----------------------------------------------------------------------------------------------------
# Rendering: the text of each generated region, from the results file only.

def _wrap(paragraph: str) -> str:
  """Prose wrapped like the hand-written text around it (inline code may break across lines)."""
  return textwrap.fill(paragraph, width=105, break_long_words=False, break_on_hyphens=False)


def _pct(fraction: float) -> str:
  return f"{100 * fraction:.2f}"


def train_tables(results: dict) -> str:
  """The evaluation tables `hyperlt train` printed (from its first table to the "Next:" hint)."""
  text = results["outputs"]["train"]
  start = text.index("Accuracy (%) of each expert")
  return text[start:text.index("\nNext:")].strip("\n")


def sweep_rows(results: dict) -> list[str]:
  """The sweep summary's header and its rows for the three anchor test sets."""
  lines = results["outputs"]["sweep"].splitlines()
  head = next(i for i, line in enumerate(lines) if line.startswith("test set"))
  return [lines[head]] + [line for line in lines[head + 1:] if line.split(" ")[0] in ANCHOR_SETS]


def _machine_phrase(results: dict) -> str:
  m = results["machine"]
  return f"{m['cpu_count']} CPU cores (jax {m['jax']}, backend {m['backend']})"


def _readme_train(results: dict) -> str:
  m = results["machine"]
  return _wrap(f"The numbers below are from one run of `{results['commands']['train'].replace(' --no-progress', '')}` "
          f"on {_machine_phrase(results)}, made with `{results['command']}`, which writes them to "
          "[docs/results/default_run.json](docs/results/default_run.json) (accuracy in %, 500-image balanced "
          f"test set). XLA:CPU results vary slightly with the core count; the quoted run used {m['cpu_count']} "
          f"cores.") + f"\n\n```\n{train_tables(results)}\n```"


def _readme_tradeoff(results: dict) -> str:
  forward = results["outputs"]["evaluate 1,0,0"]["results"]["uniform"]
  backward = results["outputs"]["evaluate 0,0,1"]["results"]["uniform"]
  return _wrap(f"On the uniform test set, `--preference 1,0,0` gives many-shot {_pct(forward['many'])}% and few-shot "
          f"{_pct(forward['few'])}%, while `0,0,1` gives {_pct(backward['many'])}% and {_pct(backward['few'])}% "
          f"(`{results['commands']['evaluate 1,0,0']}`).")


def _readme_adapt(results: dict) -> str:
  em, stab = results["outputs"]["adapt em"]["mean"], results["outputs"]["adapt stability"]["mean"]
  return _wrap(f"On the embedded default, the mean accuracy over the 11 test sets goes from {_pct(em['default'])}% at "
          f"the uniform vertex to {_pct(em['adapted'])}% with `em` and {_pct(stab['adapted'])}% with `stability` "
          f"(`{results['commands']['adapt em'].replace(' --json', '').replace(' --no-progress', '')}`, and the "
          "same with `--method stability`).")


def _sweeps_summary(results: dict) -> str:
  command = results["commands"]["sweep"].replace(" --no-progress", "")
  return _wrap(f"With the embedded default trained by `{results['commands']['train'].replace(' --no-progress', '')}` "
          f"on {_machine_phrase(results)} (`{results['command']}`, "
          f"[results/default_run.json](results/default_run.json)), `{command}` printed:") + "\n\n```\n" + \
      "\n".join(sweep_rows(results)) + "\n```"


def _preference_text(values: list[float]) -> str:
  from hyperlt.analysis import format as fmt  # pylint: disable=g-import-not-at-top
  return fmt.preference(values, digits=3)


def _adapt_table(results: dict) -> str:
  em, stab = results["outputs"]["adapt em"], results["outputs"]["adapt stability"]
  lines = ["| test set | em preference | em | stability preference (seed 0) | stability | uniform vertex | "
           "equal weights |", "|---|---|---|---|---|---|---|"]
  for name, e in em["test_sets"].items():
    s = stab["test_sets"][name]
    lines.append(f"| {name} | {_preference_text(e['preference'])} | {_pct(e['adapted']['all'])} | "
                 f"{_preference_text(s['preference'])} | {_pct(s['adapted']['all'])} | {_pct(e['default']['all'])} | "
                 f"{_pct(e['equal_weights']['all'])} |")
  lines.append(f"| **mean** | | **{_pct(em['mean']['adapted'])}** | | **{_pct(stab['mean']['adapted'])}** | "
               f"{_pct(em['mean']['default'])} | {_pct(em['mean']['equal_weights'])} |")
  rises = [row["max_mismatch_rise"] for row in stab["test_sets"].values()]
  stops = sorted({row["stop_reason"] for row in stab["test_sets"].values()})
  commands = (f"`{results['commands']['adapt em'].replace(' --json', '').replace(' --no-progress', '')}` and the "
              "same with `--method stability`")
  return (_wrap(f"Commands: {commands} (seed 0; `{results['command']}`, "
                f"[results/default_run.json](results/default_run.json), {_machine_phrase(results)}). Overall "
                "accuracy (%), each test set adapted separately from its own unlabeled images:")
          + "\n\n" + "\n".join(lines) + "\n\n"
          + _wrap(f"Along the 11 stability trajectories the guard's mismatch rose by at most {max(rises):.4f} "
                  f"(`max_mismatch_rise`); stop reasons: {', '.join(stops)}."))


def _adapt_claims(results: dict) -> str:
  em, stab = results["outputs"]["adapt em"], results["outputs"]["adapt stability"]

  def margin(report, name, base):
    row = report["test_sets"][name]
    return 100 * (row["adapted"]["all"] - row[base]["all"])

  def lean(report, name, vertex):
    w = report["test_sets"][name]["preference"]
    return f"{_preference_text(w)} ({'yes' if max(range(3), key=lambda j: w[j]) == vertex else 'no'})"

  def beats(report, base):
    a, b = report["mean"]["adapted"], report["mean"][base]
    return f"{'yes' if a > b else 'no'}: {_pct(a)} vs {_pct(b)}"

  def margins(report, base):
    return ", ".join(f"{name} {margin(report, name, base):+.2f}" for name in ("backward50", "forward50"))

  def losses(report):
    worst = min(report["test_sets"], key=lambda n: margin(report, n, "default"))
    return f"{worst} {margin(report, worst, 'default'):+.2f}"

  rows = [("backward50 leans to the backward vertex (largest weight)", lean(em, "backward50", 2),
           lean(stab, "backward50", 2)),
          ("forward50 leans to the forward vertex (largest weight)", lean(em, "forward50", 0),
           lean(stab, "forward50", 0)),
          ("margin over the uniform vertex (points)", margins(em, "default"), margins(stab, "default")),
          ("margin over equal weights (points)", margins(em, "equal_weights"), margins(stab, "equal_weights")),
          ("mean of 11 beats the uniform vertex", beats(em, "default"), beats(stab, "default")),
          ("mean of 11 beats equal weights", beats(em, "equal_weights"), beats(stab, "equal_weights")),
          ("smallest margin over the uniform vertex on one set (points)", losses(em), losses(stab))]
  return "| claim | em | stability |\n|---|---|---|\n" + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)


RENDERERS = {
    "README.md": {"train_tables": _readme_train, "vertex_tradeoff": _readme_tradeoff, "adapt_means": _readme_adapt},
    "docs/sweeps.md": {"sweep_summary": _sweeps_summary},
    "docs/adaptation.md": {"adapt_table": _adapt_table, "adapt_claims": _adapt_claims},
}


def region_pattern(name: str) -> re.Pattern:
  return re.compile(rf"(<!-- generated:{name} -->\n)(.*?)(\n<!-- /generated:{name} -->)", re.S)


def regions(text: str) -> dict[str, str]:
  """{name: content} of every generated region of a document."""
  return {m.group(1): m.group(2) for m in re.finditer(
      r"<!-- generated:(\w+) -->\n(.*?)\n<!-- /generated:\1 -->", text, re.S)}


def render(results: dict) -> None:
  """Rewrites every generated region of DOCS from ``results``."""
  for doc, renderers in RENDERERS.items():
    path = REPO / doc
    text = path.read_text(encoding="utf-8")
    for name, fn in renderers.items():
      pattern = region_pattern(name)
      if not pattern.search(text):
        raise SystemExit(f"{doc}: no region <!-- generated:{name} --> ... <!-- /generated:{name} -->")
      content = fn(results)
      text = pattern.sub(lambda m, c=content: m.group(1) + c + m.group(3), text)
    path.write_text(text, encoding="utf-8")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--render-only", action="store_true", help="rewrite the docs from the committed results file")
  args = parser.parse_args()
  if not args.render_only:
    with tempfile.TemporaryDirectory(prefix="hyperlt_docs_") as tmp:
      workdir = pathlib.Path(tmp) / "digits"
      results = run_all(workdir)
      shutil.copyfile(workdir / "sweep" / "simplex.png", SIMPLEX_FIGURE)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(REPO)} and {SIMPLEX_FIGURE.relative_to(REPO)}", file=sys.stderr)
  render(json.loads(RESULTS.read_text(encoding="utf-8")))
  print(f"rewrote the generated regions of {', '.join(DOCS)}", file=sys.stderr)


if __name__ == "__main__":
  main()
