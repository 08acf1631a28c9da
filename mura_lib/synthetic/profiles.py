"""What to generate: study and image counts per split and part, film sizes, patient sharing.

A :class:`Profile` fixes the counts; :func:`plan_studies` turns it into the list of studies
(patient id, study number, label, number of views) that the tree writer renders. Planning is
cheap and serial; rendering is per study and parallel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mura_lib.config import BODY_PARTS, SPLITS
from mura_lib.data.describe import PAPER_TABLE1
from mura_lib.errors import ConfigError
from mura_lib.synthetic.study import Look, StudySpec

# The paper's Table 1 (mura_lib.data.describe.PAPER_TABLE1) as part -> (train normal, train
# abnormal, train images, valid normal, valid abnormal, valid images).
TABLE1 = {part: tuple(int(n) for n in PAPER_TABLE1.loc[part]) for part in BODY_PARTS}
TABLE1_PATIENTS = {"train": 11184, "valid": 783}
# The order in which the official CSVs list the parts; patient ids follow it.
FILE_ORDER = ("SHOULDER", "HUMERUS", "FINGER", "ELBOW", "WRIST", "FOREARM", "HAND")


@dataclass(frozen=True)
class PartCounts:
    """Studies and images of one part in one split."""

    normal: int
    abnormal: int
    images: int  # total views of these studies (each study has at least one)

    @property
    def studies(self) -> int:
        """Number of studies."""
        return self.normal + self.abnormal


@dataclass(frozen=True)
class Profile:
    """A complete description of a synthetic tree, seed aside."""

    name: str
    counts: Mapping[tuple[str, str], PartCounts]  # (split, part) -> counts
    look: Look
    patients: Mapping[str, int] = field(default_factory=dict)  # split -> patient count
    max_views: int = 11
    patients_per_study: float | None = None  # when `patients` is not set; None: MURA's

    def n_patients(self, split: str, n_studies: int) -> int:
        """Patients of a split: as set, or a ratio of patients to studies (MURA's by default)."""
        if split in self.patients:
            return self.patients[split]
        ratio = self.patients_per_study or TABLE1_PATIENTS[split] / sum(
            c[0] + c[1] if split == "train" else c[3] + c[4] for c in TABLE1.values()
        )
        return max(1, min(n_studies, int(round(n_studies * ratio))))


def scaled_profile(
    name: str,
    train_per_part: int,
    valid_per_part: int,
    long_side: tuple[int, int],
    views_scale: float = 1.0,
    max_views: int = 11,
    rgb_fraction: float = 0.12,
    patients_per_study: float | None = None,
) -> Profile:
    """A small tree with MURA's per-part abnormal rates and views per study.

    Every part gets `train_per_part` / `valid_per_part` studies; the abnormal share and the
    images per study (times `views_scale`) follow Table 1, part by part. Patients per study
    default to MURA's (0.83 train, 0.65 valid); fewer means more follow-up studies.
    """
    counts = {}
    for part, (tn, ta, ti, vn, va, vi) in TABLE1.items():
        for split, n, (normal, abnormal, images) in (
            ("train", train_per_part, (tn, ta, ti)),
            ("valid", valid_per_part, (vn, va, vi)),
        ):
            n_abnormal = int(round(n * abnormal / (normal + abnormal)))
            views = images / (normal + abnormal) * views_scale
            n_images = max(n, int(round(n * views)))
            counts[(split, part)] = PartCounts(n - n_abnormal, n_abnormal, n_images)
    look = Look(long_side, rgb_fraction=rgb_fraction)
    return Profile(name, counts, look, max_views=max_views, patients_per_study=patients_per_study)


def table1_profile(anatomy: bool = False, full_size: bool = False) -> Profile:
    """Exactly MURA's Table 1: 14,656 studies, 40,005 images, 11,967 patients.

    Films are 32-pixel placeholders (the reader never decodes them) unless `anatomy` (small
    films, 160-288 px) or `full_size`: MURA's size (long side 512 px, each part's spread of
    aspect ratios, a fifth RGB), for measuring what decoding and training really cost.
    """
    counts = {}
    for part, (tn, ta, ti, vn, va, vi) in TABLE1.items():
        counts[("train", part)] = PartCounts(tn, ta, ti)
        counts[("valid", part)] = PartCounts(vn, va, vi)
    if full_size:
        look = Look((512, 512), rgb_fraction=0.2, png_optimize=False)
    elif anatomy:
        look = Look((160, 288))
    else:
        look = Look((32, 32), anatomy=False)
    return Profile("table1", counts, look, patients=dict(TABLE1_PATIENTS))


PROFILES = {
    # The committed sample. A from-scratch CNN on a CPU learns these findings from about
    # 80 training studies per part, not from 50 (it memorises lytic lesions instead), so the
    # films are small (128-160 px: models see 128) to fit 560 training and 140 validation
    # studies (the latter enough for a usable AUROC) into about 7 MB of PNG files.
    "sample": scaled_profile(
        "sample", 80, 20, long_side=(128, 160), views_scale=0.85, max_views=5, rgb_fraction=0.06
    ),
}


def get_profile(
    profile: str | Profile, anatomy: bool | None = None, full_size: bool = False
) -> Profile:
    """Resolve a profile name ("sample", "table1") or pass a :class:`Profile` through."""
    if isinstance(profile, Profile):
        return profile
    if profile == "table1":
        return table1_profile(bool(anatomy), full_size)
    if full_size:
        raise ConfigError("full_size (--full-size) applies to the table1 profile only")
    if profile not in PROFILES:
        raise ConfigError(
            f"unknown synthetic profile {profile!r}: choose one of "
            f"{', '.join(sorted([*PROFILES, 'table1']))}"
        )
    return PROFILES[profile]


def _views(rng: np.random.Generator, n: int, total: int, max_views: int) -> np.ndarray:
    """Views per study for `n` studies: mostly 1-4, a few more, summing exactly to `total`."""
    if not n <= total <= n * max_views:
        raise ConfigError(f"cannot spread {total} images over {n} studies (1-{max_views} each)")
    views = np.clip(1 + rng.poisson(max(total / n - 1, 0.0), n), 1, max_views)
    while (diff := int(total - views.sum())) != 0:
        room = np.flatnonzero(views < max_views) if diff > 0 else np.flatnonzero(views > 1)
        pick = rng.choice(room, size=min(abs(diff), room.size), replace=False)
        views[pick] += 1 if diff > 0 else -1
    return views


def plan_studies(profile: Profile, seed: int) -> list[StudySpec]:
    """Every study of the tree: patients, study numbers, labels and view counts.

    Within a split, the first studies (in random order) each get a new patient; the rest join
    an existing patient, of the same part more often than not (a follow-up study) but also of
    another part, as in MURA, where one patient id can appear under several parts.
    """
    rng = np.random.default_rng([seed, 20171211])  # MURA's arXiv date: a fixed planning stream
    specs: list[StudySpec] = []
    next_id = 1
    for split in SPLITS:
        items: list[tuple[str, int, int]] = []
        for part in FILE_ORDER:
            c = profile.counts.get((split, part))
            if c is None or c.studies == 0:
                continue
            labels = rng.permutation([0] * c.normal + [1] * c.abnormal)
            views = _views(rng, c.studies, c.images, profile.max_views)
            items += [(part, int(lab), int(v)) for lab, v in zip(labels, views, strict=True)]
        if not items:
            continue
        n_patients = profile.n_patients(split, len(items))
        owner = np.empty(len(items), dtype=int)
        order = rng.permutation(len(items))
        owner[order[:n_patients]] = np.arange(n_patients)
        by_part: dict[str, list[int]] = {}
        for i in order[:n_patients]:
            by_part.setdefault(items[i][0], []).append(int(owner[i]))
        for i in order[n_patients:]:
            same = by_part.get(items[i][0])
            if same and rng.uniform() < 0.6:
                owner[i] = same[int(rng.integers(len(same)))]
            else:
                owner[i] = int(rng.integers(n_patients))
        # Patient ids in order of first appearance in the CSV (parts in file order).
        ids: dict[int, int] = {}
        study_no: dict[tuple[int, str], int] = {}
        for (part, label, n_views), o in zip(items, owner, strict=True):
            pid = ids.setdefault(int(o), next_id + len(ids))
            k = study_no[(pid, part)] = study_no.get((pid, part), 0) + 1
            specs.append(StudySpec(split, part, pid, k, label, n_views))
        next_id += len(ids)
    order_key = {p: i for i, p in enumerate(FILE_ORDER)}
    specs.sort(key=lambda s: (s.split != "train", order_key[s.part], s.patient, s.study))
    return specs


def subset_of_studies(specs: list[StudySpec], n_images: int, seed: int) -> list[StudySpec]:
    """Whole patients drawn at random until each split holds its share of ``n_images`` views.

    The subset keeps the plan's order and each split's share of the images (a Table-1 subset
    of 5,000 films has 5000 * 3,197 / 40,005 valid ones). Patients are taken whole, so every
    study of the subset renders as in the full tree (a study's pixels depend on its spec and
    the seed only) and a patient-grouped split behaves as on the full tree. A patient whose
    views would overshoot a split's share is passed over, so each split ends within a few
    views of it.
    """
    total = sum(s.n_views for s in specs)
    if not 0 < n_images <= total:
        raise ConfigError(f"n_images={n_images}: the plan holds {total} images; use 1 to {total}")
    rng = np.random.default_rng([seed, 40005])
    chosen: set[tuple[str, int]] = set()
    for split in SPLITS:
        views: dict[int, int] = {}
        for s in specs:
            if s.split == split:
                views[s.patient] = views.get(s.patient, 0) + s.n_views
        share = round(n_images * sum(views.values()) / total)
        taken = 0
        for patient in rng.permutation(sorted(views)):
            if taken + views[patient] <= share:
                chosen.add((split, int(patient)))
                taken += views[patient]
    return [s for s in specs if (s.split, s.patient) in chosen]
