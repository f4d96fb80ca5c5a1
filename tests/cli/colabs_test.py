"""The notebooks in colabs/ run end to end, offline, with the public API (so they cannot rot),
and are stored with their outputs (``make notebooks``), so they can be read unrun."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = ("end_to_end", "load_and_inference", "finetuning", "augmentations", "ablations")


def _execute(name, monkeypatch):
    path = os.path.join(ROOT, "colabs", f"{name}.ipynb")
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(book, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": os.path.join(ROOT, "colabs")}})
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernel inherits it
    monkeypatch.setenv("SIMCLR_COLAB_EPOCHS", "1")
    monkeypatch.setenv("SIMCLR_COLAB_QUICK", "1")  # end_to_end: a smoke run's few steps
    client.execute()
    return book


def _outputs(book, kind):
    for cell in book.cells:
        for out in cell.get("outputs", []):
            if kind == "text" and out.get("output_type") == "stream":
                yield out["text"]
            if kind == "png" and "image/png" in out.get("data", {}):
                yield out["data"]["image/png"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_end_to_end(name, monkeypatch):
    book = _execute(name, monkeypatch)
    text = "".join(_outputs(book, "text"))
    assert list(_outputs(book, "png")), "the notebook should draw its figure"
    if name == "end_to_end":
        assert "eval at step 0 |" in text and "knn_top1" in text
        assert "neighbours of the same class:" in text
        assert "linear evaluation of the export: top-1" in text
    if name == "load_and_inference":
        assert "1-NN label agreement" in text and "final_avg_pool" in text
    if name == "ablations":  # the quick study's two cells, its table and its chart
        assert "ablate color_strength 2/2: supervised, strength 1 + blur" in text
        assert "wrote" in text and "ablation.png" in text
    if name == "finetuning":
        assert "reloaded" in text and "trainable variables:" in text
        count = int(text.split("trainable variables:")[1].split()[0])
        assert count > 20  # the encoder's variables train, not just the classifier


def test_notebooks_are_stored_with_their_outputs():
    for name in NOTEBOOKS:
        book = nbformat.read(os.path.join(ROOT, "colabs", f"{name}.ipynb"), as_version=4)
        code = [cell for cell in book.cells if cell.cell_type == "code"]
        assert "google.colab" in code[0].source  # the Colab install cell comes first
        assert all(cell.get("execution_count") for cell in code), f"{name}: not run in full"
        outputs = [out for cell in code for out in cell.get("outputs", [])]
        assert not [out for out in outputs if out.get("output_type") == "error"], name
        assert list(_outputs(book, "png")), f"{name}: stored without its pictures"
