"""notebooks/quickstart.ipynb runs top to bottom (nbclient, a real kernel) and ends with labelled results.

The settings cell (tagged "parameters") is swapped for a 4-epoch run so the notebook takes well under a
minute; every other cell runs as committed. hyperlt is importable here, so the install cell installs
nothing (and touches no network); the kernel runs in a temporary folder, so its runs/ go there.
"""

from __future__ import annotations

import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

NOTEBOOK = REPO_ROOT / "notebooks" / "quickstart.ipynb"
QUICK_SETTINGS = 'CONFIG = "digits:local"\nWORKDIR = "runs/notebook"\nSTEP = 0.1\nFEW_AT_LEAST = 0.0'


def _text(cell) -> str:
  return "".join(out.get("text", "") for out in cell.get("outputs", ()) if out.get("output_type") == "stream")


@pytest.mark.slow
def test_quickstart_notebook_runs_and_ends_with_labelled_results(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  settings = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", ())]
  assert len(settings) == 1 and "CONFIG = " in settings[0].source
  settings[0].source = QUICK_SETTINGS
  NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

  install = nb.cells[1]
  assert "find_spec(\"hyperlt\") is None" in install.source and "hyperlt from" in _text(install)
  last = _text(nb.cells[-1])
  for label in ("predicted classes at preference 0,0,1:", "true classes:", "chosen preference",
                "em-adapted preference for backward50:"):
    assert label in last
  assert (tmp_path / "runs" / "notebook" / "sweep" / "simplex.png").is_file()
  # The committed notebook carries no outputs (they would go stale with every change).
  assert all(not c.get("outputs") for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")


def test_readme_opens_the_notebook_in_colab():
  links = re.findall(r"https://colab\.research\.google\.com/github/[\w.-]+/hyperlt/blob/main/(notebooks/[\w.]+)",
                     (REPO_ROOT / "README.md").read_text())
  assert links and all((REPO_ROOT / link).is_file() for link in links)
  # The notebook's own badge points at itself, and its install cell at the same repository.
  nb = nbformat.read(NOTEBOOK, as_version=4)
  assert "notebooks/quickstart.ipynb" in nb.cells[0].source
