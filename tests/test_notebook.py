"""The walk-through notebook runs top to bottom (on the tiny demo world, in a scratch directory)."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("FBNET_DEMO_SCALE", "tiny")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for o in cell.get("outputs", []))
    assert "reloaded equal: True" in outputs
    assert "max |grad| of L_expr wrt expression kernel: 0.0" in outputs
    assert (tmp_path / "runs" / "notebook" / "model.keras").is_file()
