"""Render one study: its patient, its views and, for an abnormal study, its finding.

Everything random about a study comes from one generator seeded by (seed, split, part,
patient, study), so a study's pixels do not depend on which other studies are generated, in
what order, or in which process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mura_lib.synthetic.abnormalities import Finding, draw_finding
from mura_lib.synthetic.anatomy import Pose, Projector, core_extent, frame
from mura_lib.synthetic.parts import BUILDERS, Body
from mura_lib.synthetic.render import changed_box, develop, rasterise

# Views taken of each part, in the usual order; studies with more views repeat some.
PROJECTIONS = {
    "ELBOW": ("AP", "LAT", "OBL"),
    "FINGER": ("PA", "LAT", "OBL"),
    "FOREARM": ("AP", "LAT"),
    "HAND": ("PA", "OBL", "LAT"),
    "HUMERUS": ("AP", "LAT"),
    "SHOULDER": ("AP", "AP", "OBL"),
    "WRIST": ("PA", "LAT", "OBL"),
}
# Short side / long side of the film, per part: long bones and fingers get narrow films.
ASPECT = {
    "ELBOW": (0.65, 1.0),
    "FINGER": (0.35, 0.75),
    "FOREARM": (0.35, 0.8),
    "HAND": (0.6, 0.9),
    "HUMERUS": (0.4, 0.8),
    "SHOULDER": (0.7, 1.0),
    "WRIST": (0.55, 0.95),
}
LANDSCAPE = {"SHOULDER": 0.45}  # share of landscape films; others use DEFAULT_LANDSCAPE
DEFAULT_LANDSCAPE = 0.12


@dataclass(frozen=True)
class StudySpec:
    """Where a study goes in the tree and what it must show."""

    split: str
    part: str
    patient: int
    study: int
    label: int
    n_views: int


@dataclass(frozen=True)
class Look:
    """How films are made: size range, share of RGB files, and whether to draw anatomy."""

    long_side: tuple[int, int]  # inclusive range of the film's long side, pixels
    aspect: tuple[float, float] | None = None  # override of the part's short/long range
    rgb_fraction: float = 0.12
    anatomy: bool = True  # False: flat placeholder films (cheap trees for reader timings)
    # Pillow's optimize=True makes files about 5 % smaller but costs ~70 ms per 512-px film,
    # more than drawing it (~55 ms): worth it for the committed sample, not for 40,005 films.
    png_optimize: bool = True


@dataclass
class View:
    """One rendered image and its ground truth."""

    pixels: np.ndarray  # uint8 (h, w)
    mode: str  # "L" or "RGB"
    kind: str
    subtlety: float | None
    visible: bool
    box: tuple[int, int, int, int] | None
    projection: str
    child: bool
    cast: bool


def study_rng(seed: int, spec: StudySpec) -> np.random.Generator:
    """The generator that owns everything random about one study."""
    split_i = 0 if spec.split == "train" else 1
    part_i = sorted(BUILDERS).index(spec.part)
    return np.random.default_rng([seed, split_i, part_i, spec.patient, spec.study])


def _pose(part: str, projection: str, rng: np.random.Generator) -> Pose:
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    if projection == "LAT":
        beam, flex = sign * rng.uniform(1.4, 1.7), rng.uniform(0.15, 0.5)
    elif projection == "OBL":
        beam, flex = sign * rng.uniform(0.55, 0.9), rng.uniform(0.05, 0.3)
    else:
        beam, flex = rng.uniform(-0.12, 0.12), rng.uniform(0.0, 0.1)
    if part == "ELBOW" and projection == "LAT":
        flex = rng.uniform(1.3, 1.75)  # a lateral elbow is taken flexed to about 90 degrees
    return Pose(projection, float(beam), float(flex), float(rng.uniform(-0.1, 0.25)))


def _film_size(part: str, look: Look, rng: np.random.Generator) -> tuple[int, int, bool]:
    long_side = int(rng.integers(look.long_side[0], look.long_side[1] + 1))
    lo, hi = look.aspect or ASPECT[part]
    short = max(8, int(round(long_side * rng.uniform(lo, hi))))
    landscape = rng.uniform() < LANDSCAPE.get(part, DEFAULT_LANDSCAPE)
    return (long_side, short, True) if landscape else (short, long_side, False)


def _visibility(n_views: int, subtlety: float, rng: np.random.Generator) -> list[bool]:
    """Which views show the finding: most of them, not always all (overlap hides it).

    A subtle finding is hidden more often (up to a third of views) than an obvious one.
    """
    hide = 0.05 + 0.3 * subtlety
    shown = [rng.uniform() >= hide for _ in range(n_views)]
    may_hide = n_views - math.ceil(0.6 * n_views)
    while shown.count(False) > may_hide:
        shown[shown.index(False)] = True
    return shown


def render_study(spec: StudySpec, seed: int, look: Look) -> list[View]:
    """All views of one study, with their ground truth."""
    rng = study_rng(seed, spec)
    child = bool(rng.uniform() < 0.12)
    body = Body(
        float(rng.uniform(0.6, 0.85) if child else rng.uniform(0.88, 1.12)),
        child,
        int(rng.integers(2**31)),
    )
    side = "L" if rng.uniform() < 0.5 else "R"
    menu = PROJECTIONS[spec.part]
    projections = [
        menu[i] if i < len(menu) else menu[int(rng.integers(len(menu)))]
        for i in range(spec.n_views)
    ]
    build = BUILDERS[spec.part]
    finding = None
    if spec.label:
        reference = build(body, _pose(spec.part, menu[0], rng))
        x0, x1, y0, y1 = core_extent(reference, Projector(0.0, 0.0, False))
        finding = draw_finding(rng, reference, float(max(x1 - x0, y1 - y0)))
    shown = _visibility(spec.n_views, finding.subtlety if finding else 0.0, rng)
    if finding is not None and (finding.kind == "hardware" or finding.cast):
        shown = [True] * spec.n_views  # metal and plaster show on every film
    views = []
    for projection, show in zip(projections, shown, strict=True):
        pose = _pose(spec.part, projection, rng)
        w, h, landscape = _film_size(spec.part, look, rng)
        if not look.anatomy:
            views.append(_placeholder(spec, finding, projection, child, (h, w), rng, look))
            continue
        angle = rng.normal(0.0, 0.12) + (
            np.pi / 2 * (1 if rng.uniform() < 0.5 else -1) if landscape else 0.0
        )
        if rng.uniform() < 0.08:
            angle += np.pi  # hung upside down
        anatomy = build(body, pose)
        proj = frame(
            anatomy,
            Projector(pose.beam, float(angle), side == "L"),
            (w, h),
            float(rng.uniform(0.72, 0.92)),
            (float(rng.uniform(-0.8, 0.8)), float(rng.uniform(-0.8, 0.8))),
        )
        drawn = finding if show else None
        layers = rasterise(anatomy, proj, (h, w), drawn)
        box = None
        if drawn is not None:
            box = changed_box(rasterise(anatomy, proj, (h, w)), layers, _roi(drawn, anatomy, proj))
        pixels = develop(layers, rng, side)
        mode = "RGB" if rng.uniform() < look.rgb_fraction else "L"
        views.append(
            View(
                pixels,
                mode,
                finding.kind if finding else "none",
                finding.subtlety if finding else None,
                box is not None,
                box,
                projection,
                child,
                bool(finding and finding.cast and show),
            )
        )
    return views


def _roi(f: Finding, anatomy, proj: Projector) -> tuple[float, float, float, float] | None:
    """Search box for the truth box of a fracture: around the break, not the whole fragment."""
    if f.kind != "fracture":
        return None
    b = anatomy.bone(f.bone)
    c = proj(np.asarray(b.p0) + f.t * np.subtract(b.p1, b.p0))
    half = (2.2 * max(b.r_ends) + f.shift + f.size) * proj.scale
    return c[0] - half, c[0] + half, c[1] - half, c[1] + half


def _placeholder(
    spec: StudySpec,
    finding: Finding | None,
    projection: str,
    child: bool,
    shape: tuple[int, int],
    rng: np.random.Generator,
    look: Look,
) -> View:
    """A flat grey film with one bright bar: enough to be a valid image, costs nothing."""
    pixels = np.full(shape, int(rng.integers(10, 60)), dtype=np.uint8)
    h, w = shape
    pixels[h // 6 : h - h // 6, w // 3 : w - w // 3] = int(rng.integers(150, 230))
    mode = "RGB" if rng.uniform() < look.rgb_fraction else "L"
    return View(
        pixels,
        mode,
        finding.kind if finding else "none",
        finding.subtlety if finding else None,
        False,
        None,
        projection,
        child,
        False,
    )
