"""Runs every notebook in colabs/ and stores it with its outputs (text and pictures), so it
can be read without running it: `make notebooks` (offline, on the CPU; a few minutes).

The tests execute the same notebooks (tests/cli/colabs_test.py) without writing them back.
"""

import os
import sys

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOKS = ("end_to_end", "load_and_inference", "finetuning", "augmentations", "ablations")


def refresh(name: str):
    path = os.path.join(HERE, f"{name}.ipynb")
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": HERE}}).execute()
    nbformat.write(book, path)
    print(f"stored {path} with its outputs", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernels inherit it
    for notebook in sys.argv[1:] or NOTEBOOKS:
        refresh(notebook)
