"""Shared fixtures: small MURA-v1.1 trees built in tmp_path, and index frames built in memory.

`write_tree(parent, studies, ...)` writes `parent/MURA-v1.1/...` with tiny PNGs and, unless
told otherwise, the four official CSVs (headerless, LF), or their header / CRLF variants.
`frame_of(studies, root)` is the index frame read_mura must return for such a tree, built
without touching the disk, so that tests of splits and weights can use thousands of patients.
"""

from __future__ import annotations

import io
import os
import random
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from mura_lib.config import BODY_PARTS, SPLITS

# A test run started in the background by a script (`make test &`) ignores Ctrl-C, and the
# processes the tests start would inherit that: the tests that press Ctrl-C (SIGINT) need its
# default action back, which a handler here gives every process started after exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Under pytest-xdist (`make test`: a worker per core) each worker computes with one thread: with
# a thread pool per worker the pools spin against each other on a small machine, and a training
# step takes several times longer. Results do not depend on the number of threads. The
# processes the tests start (torchrun's workers, the notebooks' kernels) inherit the variable.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def _tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 6), color=128).save(buf, format="PNG")
    return buf.getvalue()


TINY_PNG = _tiny_png()


@dataclass(frozen=True)
class Study:
    """One study of a test tree: `views` images image1.png .. image<views>.png."""

    split: str
    part: str
    patient: int
    study: int
    label: int
    views: int = 1

    @property
    def rel(self) -> str:
        suffix = "positive" if self.label else "negative"
        return (
            f"MURA-v1.1/{self.split}/XR_{self.part}/patient{self.patient:05d}/"
            f"study{self.study}_{suffix}"
        )


def default_studies() -> list[Study]:
    """Both splits, all 7 parts, both labels; some patients have several parts or studies."""
    studies = []
    for split, first_patient in (("train", 1), ("valid", 11185)):
        for i, part in enumerate(BODY_PARTS):
            for k in range(4):
                patient = first_patient + (i + k) % 9  # shared across parts
                studies.append(Study(split, part, patient, 1, k % 2, 1 + (i + k) % 3))
            # a second study of the first patient of the part, with the other label
            studies.append(Study(split, part, first_patient + i % 9, 2, 1, 2))
    return studies


def table1_studies(seed: int = 0) -> list[Study]:
    """Studies with exactly the counts of the paper's Table 1 (40,005 images, 14,656 studies).

    Train has 11,184 patients and valid 783, as in MURA; the extra studies go to random
    patients of the split, so some patients have several studies or parts.
    """
    from mura_lib.data.describe import PAPER_TABLE1

    rng = random.Random(seed)
    studies = []
    for split, first, n_patients in (("train", 1, 11184), ("valid", 11185, 783)):
        patients = list(range(first, first + n_patients))
        next_study: dict[tuple[str, int], int] = {}
        j = 0
        for part in BODY_PARTS:
            row = PAPER_TABLE1.loc[part]
            n_normal, n_abnormal = int(row[f"{split}_normal"]), int(row[f"{split}_abnormal"])
            labels = [0] * n_normal + [1] * n_abnormal
            rng.shuffle(labels)
            views = [1] * len(labels)
            for _ in range(int(row[f"{split}_images"]) - len(labels)):
                views[rng.randrange(len(views))] += 1
            for label, n_views in zip(labels, views, strict=True):
                patient = patients[j] if j < n_patients else rng.choice(patients)
                j += 1
                k = next_study[(part, patient)] = next_study.get((part, patient), 0) + 1
                studies.append(Study(split, part, patient, k, label, n_views))
    return studies


def write_tree(
    parent: Path,
    studies: Iterable[Study],
    csv: bool = True,
    header: bool = False,
    crlf: bool = False,
    dirname: str = "MURA-v1.1",
) -> Path:
    """Write a MURA tree under `parent`; returns the MURA-v1.1 folder (named `dirname`)."""
    studies = list(studies)
    root = parent / dirname
    root.mkdir(parents=True, exist_ok=True)
    for s in studies:
        folder = root / s.rel.split("/", 1)[1]
        folder.mkdir(parents=True, exist_ok=True)
        for v in range(1, s.views + 1):
            (folder / f"image{v}.png").write_bytes(TINY_PNG)
    if csv:
        eol = "\r\n" if crlf else "\n"
        for split in SPLITS:
            mine = [s for s in studies if s.split == split]
            if not mine:
                continue
            images = [f"{s.rel}/image{v}.png" for s in mine for v in range(1, s.views + 1)]
            labeled = [f"{s.rel}/,{s.label}" for s in mine]
            if header:
                images.insert(0, "Img_Path")
                labeled.insert(0, "Img_Path,Label")
            write_lines(root / f"{split}_image_paths.csv", images, eol)
            write_lines(root / f"{split}_labeled_studies.csv", labeled, eol)
    return root


def write_lines(path: Path, lines: list[str], eol: str = "\n") -> None:
    with open(path, "w", newline="") as f:
        f.write("".join(line + eol for line in lines))


def frame_of(studies: Iterable[Study], root: Path | str = "/data/MURA-v1.1") -> pd.DataFrame:
    """The index frame read_mura should return for a tree of these studies under `root`."""
    rows = []
    for s in studies:
        for v in range(1, s.views + 1):
            rel = f"{s.rel}/image{v}.png"
            rows.append({
                "path": os.path.join(str(root), *rel.split("/")[1:]),
                "rel_path": rel, "split": s.split, "body_part": s.part,
                "patient_id": s.patient, "study": s.study,
                "study_id": f"{s.split}/{s.part}/patient{s.patient:05d}/study{s.study}",
                "view": v, "label": s.label,
            })  # fmt: skip
    frame = pd.DataFrame(rows)
    return frame.sort_values(
        ["split", "body_part", "patient_id", "study", "view"], ignore_index=True
    )


@pytest.fixture
def studies() -> list[Study]:
    return default_studies()


@pytest.fixture
def mura_tree(tmp_path: Path, studies: list[Study]) -> Path:
    """A small tree with the official CSVs; returns the MURA-v1.1 folder."""
    return write_tree(tmp_path, studies)


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[..., Path]:
    """`make_tree(studies=None, **write_tree_options)` -> MURA-v1.1 folder in tmp_path."""

    def make(studies: Iterable[Study] | None = None, **options) -> Path:
        return write_tree(tmp_path, default_studies() if studies is None else studies, **options)

    return make


@pytest.fixture
def stand_in_notebooks(tmp_path: Path) -> Callable[..., Path]:
    """`stand_in_notebooks(**cells)` -> a folder of the three notebooks, each with the real
    one's parameters cell (so every profile's parameters are accepted) and one cell that
    prints its name, or runs ``cells[key]`` (keys ``eda``, ``train``, ``error_analysis``).
    For tests of what `make reproduce` does around the notebooks, at a kernel start each."""
    import nbformat

    from mura_lib.config import NOTEBOOKS_DIR
    from mura_lib.reproduce import NOTEBOOKS

    def make(**cells: str) -> Path:
        folder = tmp_path / "stand-in-notebooks"
        folder.mkdir(exist_ok=True)
        for name in NOTEBOOKS:
            real = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
            [parameters] = [c for c in real.cells if "parameters" in c.metadata.get("tags", [])]
            key = name.split("_", 1)[1].removesuffix(".ipynb")
            code = cells.get(key, f"print('{name} stands in')")
            notebook = nbformat.v4.new_notebook(metadata=real.metadata)
            notebook.cells = [parameters, nbformat.v4.new_code_cell(code)]
            nbformat.write(notebook, folder / name)
        return folder

    return make
