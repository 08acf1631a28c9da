"""The synthetic MURA-format generator (mura_lib.synthetic): layout, CSV format, determinism,
ground truth, errors, and the committed sample regenerating bit for bit."""

from __future__ import annotations

import csv
import math
import re
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mura_lib.config import BODY_PARTS, DATA_SAMPLE_DIR, SAMPLE_ROOT
from mura_lib.data import read_mura
from mura_lib.data.origin import SYNTHETIC_MARKER, is_synthetic
from mura_lib.errors import ConfigError, MuraError
from mura_lib.synthetic import (
    PROFILES,
    TRUTH_COLUMNS,
    TRUTH_NAME,
    scaled_profile,
    write_benchmark_images,
    write_mura_tree,
)
from mura_lib.synthetic.__main__ import main
from mura_lib.synthetic.profiles import (
    TABLE1,
    TABLE1_PATIENTS,
    plan_studies,
    subset_of_studies,
    table1_profile,
)
from mura_lib.synthetic.study import Look

IMAGE_RE = re.compile(
    r"^MURA-v1\.1/(train|valid)/XR_([A-Z]+)/patient(\d{5})/study(\d+)_(positive|negative)/"
    r"image(\d+)\.png$"
)
STUDY_RE = re.compile(
    r"^(MURA-v1\.1/(train|valid)/XR_[A-Z]+/patient\d{5}/study\d+_(positive|negative)/),([01])$"
)
KINDS = {"fracture", "hardware", "lesion", "swelling"}
TABLE1_FULL = table1_profile(full_size=True)

# Two or three studies per part and split, small films, many RGB files: a whole tree in
# well under a second.
TINY = scaled_profile(
    "tiny", 3, 2, long_side=(48, 64), views_scale=1.0, max_views=3, rgb_fraction=0.3
)


def _pixels(root: Path) -> dict[str, np.ndarray]:
    """Decoded pixels of every PNG under `root`, by path relative to `root`."""
    return {str(p.relative_to(root)): np.asarray(Image.open(p)) for p in root.rglob("*.png")}


def _lines(path: Path) -> list[str]:
    data = path.read_bytes()
    assert b"\r" not in data, f"{path.name} must use LF line ends"
    return data.decode().splitlines()


def _listed(root: Path) -> list[str]:
    return [line for s in ("train", "valid") for line in _lines(root / f"{s}_image_paths.csv")]


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mura_tree(tmp_path_factory.mktemp("tiny"), TINY, seed=0, n_jobs=1)


def test_layout_and_headerless_csvs(tiny_tree: Path) -> None:
    assert tiny_tree.name == "MURA-v1.1"
    for split in ("train", "valid"):
        folders: dict[str, list[int]] = {}
        for line in _lines(tiny_tree / f"{split}_labeled_studies.csv"):  # no header row
            match = STUDY_RE.match(line)
            assert match, line
            folder, _, status, label = match.groups()
            assert label == ("1" if status == "positive" else "0")
            folders[folder] = []
        for line in _lines(tiny_tree / f"{split}_image_paths.csv"):
            match = IMAGE_RE.match(line)
            assert match and match.group(1) == split, line
            folders[line.rsplit("/", 1)[0] + "/"].append(int(match.group(6)))
        for views in folders.values():  # every study has images 1..n
            assert sorted(views) == list(range(1, len(views) + 1))
    on_disk = {str(p.relative_to(tiny_tree.parent)) for p in tiny_tree.rglob("*.png")}
    assert on_disk == set(_listed(tiny_tree))


def test_the_tree_says_it_is_synthetic_even_when_copied_alone(
    tiny_tree: Path, tmp_path: Path
) -> None:
    marker = (tiny_tree / SYNTHETIC_MARKER).read_text()
    assert "profile tiny, seed 0" in marker and "not radiographs" in marker
    copy = tmp_path / "MURA-v1.1"  # the folder alone, without synthetic_truth.csv beside it
    copy.mkdir()
    (copy / SYNTHETIC_MARKER).write_text(marker)
    assert is_synthetic(tiny_tree) and is_synthetic(copy)


def test_the_project_reader_accepts_the_tree(tiny_tree: Path) -> None:
    frame = read_mura(tiny_tree)
    assert set(frame["body_part"]) == set(BODY_PARTS)
    assert set(frame["split"]) == {"train", "valid"} and set(frame["label"]) == {0, 1}
    train_ids = set(frame.loc[frame["split"] == "train", "patient_id"])
    valid_ids = set(frame.loc[frame["split"] == "valid", "patient_id"])
    assert train_ids == set(range(1, max(train_ids) + 1))  # from patient00001, no gaps
    assert min(valid_ids) == max(train_ids) + 1  # valid continues after train


def test_sample_plan_shares_patients_within_and_across_parts() -> None:
    specs = plan_studies(PROFILES["sample"], seed=0)
    per_patient_part = Counter((s.split, s.patient, s.part) for s in specs)
    parts_per_patient = defaultdict(set)
    for s in specs:
        parts_per_patient[(s.split, s.patient)].add(s.part)
    assert max(per_patient_part.values()) >= 2  # follow-up studies of one part
    assert any(len(parts) >= 2 for parts in parts_per_patient.values())  # several parts
    for (split, part), counts in PROFILES["sample"].counts.items():
        mine = [s for s in specs if s.split == split and s.part == part]
        assert sum(s.label for s in mine) == counts.abnormal
        assert sum(s.n_views for s in mine) == counts.images
    assert all(1 <= s.n_views <= PROFILES["sample"].max_views for s in specs)
    assert 0.35 <= sum(s.label for s in specs) / len(specs) <= 0.45  # MURA: 39 %
    assert sum(s.split == "valid" for s in specs) >= 130  # enough for a valid AUROC


def test_table1_plan_matches_mura_counts_exactly() -> None:
    specs = plan_studies(table1_profile(), seed=0)
    for part, (tn, ta, ti, vn, va, vi) in TABLE1.items():
        for split, want in (("train", (tn, ta, ti)), ("valid", (vn, va, vi))):
            mine = [s for s in specs if s.split == split and s.part == part]
            got = (
                sum(1 - s.label for s in mine),
                sum(s.label for s in mine),
                sum(s.n_views for s in mine),
            )
            assert got == want, (split, part)
    for split, n in TABLE1_PATIENTS.items():
        assert len({s.patient for s in specs if s.split == split}) == n
    assert sum(s.n_views for s in specs) == 40005
    assert max(s.n_views for s in specs) <= 11


def test_same_seed_same_pixels_other_seed_differs(tiny_tree: Path, tmp_path: Path) -> None:
    again = write_mura_tree(tmp_path / "again", TINY, seed=0, n_jobs=2)  # other processes
    first, second = _pixels(tiny_tree), _pixels(again)
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert (again.parent / TRUTH_NAME).read_bytes() == (tiny_tree.parent / TRUTH_NAME).read_bytes()
    other = _pixels(write_mura_tree(tmp_path / "other", TINY, seed=1, n_jobs=1))
    digest = {k: v.tobytes() for k, v in first.items()}
    assert digest != {k: v.tobytes() for k, v in other.items()}


def test_both_png_modes_and_rgb_is_grey(tiny_tree: Path) -> None:
    images = [Image.open(p) for p in tiny_tree.rglob("*.png")]
    assert {im.mode for im in images} == {"L", "RGB"}
    for im in images:
        assert 48 <= max(im.size) <= 64
        if im.mode == "RGB":
            rgb = np.asarray(im)
            assert np.array_equal(rgb[..., 0], rgb[..., 1])
            assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_truth_sidecar_matches_the_tree(tiny_tree: Path) -> None:
    with open(tiny_tree.parent / TRUTH_NAME, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == TRUTH_COLUMNS
    assert [r["rel_path"] for r in rows] == _listed(tiny_tree)
    by_study = defaultdict(list)
    for r in rows:
        label = int("positive" in r["rel_path"])
        assert int(r["label"]) == label
        box = [r[k] for k in ("x0", "y0", "x1", "y1")]
        if label == 0:
            assert (r["kind"], r["visible"], r["subtlety"], r["cast"]) == ("none", "0", "", "0")
            assert box == ["", "", "", ""]
            continue
        assert r["kind"] in KINDS
        assert 0.0 <= float(r["subtlety"]) <= 1.0
        by_study[r["rel_path"].rsplit("/", 1)[0]].append(r)
        if r["visible"] == "1":
            x0, y0, x1, y1 = map(int, box)
            width, height = Image.open(tiny_tree.parent / r["rel_path"]).size
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        else:
            assert box == ["", "", "", ""]
    assert by_study
    for views in by_study.values():  # one finding per study, seen in most of its views
        assert len({(v["kind"], v["subtlety"]) for v in views}) == 1
        assert sum(v["visible"] == "1" for v in views) >= math.ceil(0.5 * len(views))


def test_refuses_to_overwrite_without_permission(tmp_path: Path) -> None:
    root = write_mura_tree(tmp_path, TINY, seed=0, n_jobs=1)
    with pytest.raises(
        MuraError, match=r"MURA-v1.1 already exists and is not empty: pass overwrite"
    ):
        write_mura_tree(tmp_path, TINY, seed=0, n_jobs=1)
    stale = root / "stale.txt"
    stale.write_text("from the old tree")
    assert write_mura_tree(tmp_path, TINY, seed=2, n_jobs=1, overwrite=True) == root
    assert not stale.exists()  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MURA-v1.1", TRUTH_NAME]  # no temp


def test_destination_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "MURA-v1.1").write_text("not a folder")
    with pytest.raises(MuraError, match=r"MURA-v1.1 exists and is not a folder: remove it"):
        write_mura_tree(tmp_path, TINY, overwrite=True)


def test_unknown_profile_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown synthetic profile 'huge': choose one of sample, table1"
    ):
        write_mura_tree(tmp_path, "huge")


def test_placeholder_films_are_cheap_and_valid(tmp_path: Path) -> None:
    flat = replace(TINY, look=Look((32, 32), anatomy=False))
    root = write_mura_tree(tmp_path, flat, seed=0, n_jobs=1)
    assert all(max(Image.open(p).size) == 32 for p in root.rglob("*.png"))
    assert len(read_mura(root)) == len(_listed(root))


def test_benchmark_images_are_mura_sized(tmp_path: Path) -> None:
    root = write_benchmark_images(tmp_path, 9, seed=0, n_jobs=1)
    images = _lines(root / "train_image_paths.csv")
    assert len(images) == 9
    assert _lines(root / "valid_image_paths.csv") == []
    assert all(max(Image.open(root.parent / line).size) == 512 for line in images)
    with pytest.raises(MuraError, match=r"n_images must be at least 1, got 0"):
        write_benchmark_images(tmp_path / "none", 0)


def test_cli_prints_the_error_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "MURA-v1.1").mkdir()
    (tmp_path / "MURA-v1.1" / "train_image_paths.csv").write_text("x\n")
    assert main(["--profile", "sample", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err


@pytest.mark.slow
@pytest.mark.skipif(
    not SAMPLE_ROOT.is_dir(), reason="data_sample/MURA-v1.1 is absent: run `make data-sample`"
)
def test_committed_sample_is_valid_small_and_regenerates_bit_for_bit(tmp_path: Path) -> None:
    size = sum(p.stat().st_size for p in DATA_SAMPLE_DIR.rglob("*") if p.is_file())
    assert size <= 10 * 1024 * 1024
    frame = read_mura(SAMPLE_ROOT)
    assert set(frame["body_part"]) == set(BODY_PARTS)
    assert {Image.open(p).mode for p in frame["path"]} == {"L", "RGB"}
    assert 0.3 <= frame.drop_duplicates("study_id")["label"].mean() <= 0.5
    fresh = write_mura_tree(tmp_path, "sample", seed=0, n_jobs=2)
    for name in (
        "train_image_paths.csv",
        "train_labeled_studies.csv",
        "valid_image_paths.csv",
        "valid_labeled_studies.csv",
        SYNTHETIC_MARKER,
    ):
        assert (fresh / name).read_bytes() == (SAMPLE_ROOT / name).read_bytes(), name
    assert (tmp_path / TRUTH_NAME).read_bytes() == (DATA_SAMPLE_DIR / TRUTH_NAME).read_bytes()
    committed, regenerated = _pixels(SAMPLE_ROOT), _pixels(fresh)
    assert committed.keys() == regenerated.keys()
    differ = [k for k in committed if not np.array_equal(committed[k], regenerated[k])]
    assert not differ, f"{len(differ)} committed images differ, e.g. {differ[:3]}"


def test_a_subset_is_whole_patients_with_each_split_its_share_and_the_same_films(
    tiny_tree: Path, tmp_path: Path
) -> None:
    specs = plan_studies(TABLE1_FULL, 0)
    for n in (5000, 10000, 20000):
        subset = subset_of_studies(specs, n, 0)
        views = Counter()
        for s in subset:
            views[s.split] += s.n_views
        assert sum(views.values()) == n  # Table 1 has enough 1-view patients to hit N
        assert abs(views["valid"] - n * 3197 / 40005) <= 1
        chosen = {(s.split, s.patient) for s in subset}
        assert [s for s in specs if (s.split, s.patient) in chosen] == subset  # whole patients
    with pytest.raises(ConfigError, match="use 1 to 40005"):
        subset_of_studies(specs, 40006, 0)

    # the subset's films are the full tree's films of the same studies, pixel for pixel
    n = sum(s.n_views for s in plan_studies(TINY, 0)) // 2
    part = write_mura_tree(tmp_path, TINY, seed=0, n_jobs=1, n_images=n)
    mine, full = _pixels(part), _pixels(tiny_tree)
    assert 0 < len(mine) <= n and len(mine) < len(full)
    assert all(np.array_equal(pixels, full[rel]) for rel, pixels in mine.items())
    assert sorted(mine) == sorted(line.split("/", 1)[1] for line in _listed(part))
