"""The notebooks in notebooks/ execute from top to bottom (they assert their own results)."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_are_present_and_stripped():
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "cluster.ipynb", "real_holograms.ipynb"} <= names
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not stripped"


#: notebooks on the real data of ../shared/data (skipped where it is absent)
REAL_DATA_NOTEBOOKS = {"real_holograms"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, request, monkeypatch):
    from nbclient import NotebookClient

    if path.stem in REAL_DATA_NOTEBOOKS:
        request.getfixturevalue("fe_needle")  # skips without the real holograms
        from conftest import SHARED_DATA

        monkeypatch.setenv("HOLODASK_SHARED_DATA", str(SHARED_DATA))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    if path.stem in REAL_DATA_NOTEBOOKS:  # the pictures are shown inline
        images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
        assert len(images) >= 4
