"""From a projected skeleton to film: attenuation layers, exposure, noise, collimation, marker.

:func:`rasterise` sums the path lengths of soft tissue, bone and metal along every ray (with
the study's abnormality drawn in), :func:`develop` turns them into 8-bit grey levels the way an
auto-windowed digital radiograph looks: dark air, grey soft tissue, bright bone, white metal,
with a little noise, uneven exposure, sometimes a bright collimator border, and an L/R marker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mura_lib.synthetic.abnormalities import (
    Finding,
    cast_path,
    fractured,
    hardware_metal,
    lesion_factor,
    lesion_shell,
    swelling_centre,
)
from mura_lib.synthetic.anatomy import Anatomy, Projector
from mura_lib.synthetic.primitives import (
    arc_density,
    blob_density,
    capsule_thickness,
    chord,
    smooth_noise,
    tube_box,
    tube_density,
    window,
)

MU_SOFT = 0.22  # soft tissue attenuates about a fifth as much as cortical bone
PHYSIS_CM = 0.15  # width of an open growth plate

# 5x7 bitmaps of the two side markers, drawn by hand so no font (and no font renderer whose
# output could change between versions) is involved.
GLYPHS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}


@dataclass
class Layers:
    """Attenuation along each ray, in units of cm of cortical bone."""

    soft: np.ndarray
    bone: np.ndarray
    metal: np.ndarray
    cast: np.ndarray

    def total(self) -> np.ndarray:
        """Everything the ray crossed."""
        return self.soft * MU_SOFT + self.bone + self.metal + self.cast


def rasterise(
    anatomy: Anatomy, proj: Projector, shape: tuple[int, int], finding: Finding | None = None
) -> Layers:
    """Draw every limb, bone and blob of `anatomy` (with `finding`, if any) on a (h, w) grid."""
    s = proj.scale
    soft, bone, metal, cast = (np.zeros(shape) for _ in range(4))
    for limb in anatomy.limbs:
        q0, q1 = proj(limb.p0), proj(limb.p1)
        win = window(shape, *tube_box(q0, q1, max(limb.r0, limb.r1) * s))
        if win is not None:
            thick = capsule_thickness(win.x, win.y, q0, q1, limb.r0 * s, limb.r1 * s)
            soft[win.rows, win.cols] = np.maximum(soft[win.rows, win.cols], thick * limb.mu / s)
    if finding is not None and finding.kind == "swelling":
        centre, radius = swelling_centre(finding, anatomy)
        c = proj(centre)
        win = window(shape, *tube_box(c, c, radius * s))
        if win is not None:
            dist = np.hypot(win.x - c[0], win.y - c[1])
            soft[win.rows, win.cols] += chord(radius * s, dist) / s * finding.contrast
    groups: dict[str, np.ndarray] = {}
    for b in anatomy.bones:
        q0, q1 = proj(b.p0), proj(b.p1)
        r_ends = (b.r_ends[0] * s, b.r_ends[1] * s)

        def density(x, y, q0=q0, q1=q1, b=b, r_ends=r_ends):
            return tube_density(
                x, y, q0, q1, b.r_mid * s, r_ends, b.cortex, b.physes, PHYSIS_CM * s
            )

        reach = max(r_ends) + 1.0
        hit = finding is not None and finding.bone == b.name
        if hit and finding.kind == "fracture":
            density = fractured(finding, b, proj, density)
            # The distal fragment moves by the shift and swings about the break.
            swing = abs(np.sin(finding.angulation)) * float(np.linalg.norm(q1 - q0))
            reach += (finding.shift + finding.size) * s + swing
        if hit and finding.kind == "lesion":
            # Satellite holes spread along the bone, within its own reach.
            reach = max(reach, (1.5 * finding.size + 0.5 * b.r_mid) * s)
        win = window(shape, *tube_box(q0, q1, reach))
        if win is None:
            continue
        dens = density(win.x, win.y) / s
        if hit and finding.kind == "lesion":
            dens = dens * lesion_factor(finding, b, proj, win) + lesion_shell(finding, b, proj, win)
        if b.group:
            merged = groups.setdefault(b.group, np.zeros(shape))
            merged[win.rows, win.cols] = np.maximum(merged[win.rows, win.cols], dens)
        else:
            bone[win.rows, win.cols] += dens
        full = window(shape, 0, shape[1], 0, shape[0])
        if hit and finding.kind == "hardware":
            metal += hardware_metal(finding, b, proj, full)
        if hit and finding.cast:
            cast += cast_path(finding, anatomy, b, proj, full)
    for blob in anatomy.blobs:
        c = proj(blob.c)
        rx, ry, rz = proj.blob_axes(blob)
        win = window(shape, *tube_box(c, c, max(rx, ry) * s))
        if win is not None:
            dens = blob_density(
                win.x, win.y, c, rx * s, ry * s, proj.blob_angle(blob), blob.cortex, rz * s
            )
            bone[win.rows, win.cols] += dens / s
    for merged in groups.values():
        bone += merged
    for arc in anatomy.arcs:
        c = proj(arc.c)
        win = window(shape, *tube_box(c, c, (arc.radius + arc.r_bone) * s))
        if win is not None:
            dens = arc_density(
                win.x, win.y, c, arc.radius * s, arc.r_bone * s, proj.arc_angles(arc), 0.45
            )
            bone[win.rows, win.cols] += dens / s
    return Layers(soft, bone, metal, cast)


def changed_box(
    normal: Layers, abnormal: Layers, roi: tuple[float, float, float, float] | None = None
) -> tuple[int, int, int, int] | None:
    """Pixel box (x0, y0, x1, y1; x1, y1 exclusive) where the finding changed the film.

    `roi` (x0, x1, y0, y1) limits the search: a displaced fracture moves its whole distal
    fragment, but the finding is the fracture site.
    """
    diff = np.abs(abnormal.total() - normal.total()) > 0.03
    if roi is not None:
        keep = np.zeros_like(diff)
        win = window(diff.shape, *roi)
        if win is not None:
            keep[win.rows, win.cols] = True
        diff &= keep
    rows, cols = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def develop(layers: Layers, rng: np.random.Generator, side: str) -> np.ndarray:
    """Turn attenuation into an 8-bit film: auto-windowing, noise, collimation, side marker."""
    h, w = layers.soft.shape
    soft = layers.soft * MU_SOFT
    tissue = soft[soft > 0.05]
    bony = layers.bone > 0.05
    # Like a digital system's auto-windowing: soft tissue lands at a grey and dense bone near
    # white whatever the part's thickness, each with some spread between films.
    soft_level = -np.log(1 - rng.uniform(0.22, 0.4))
    bone_level = -np.log(1 - rng.uniform(0.66, 0.82))
    a = soft_level / (np.median(tissue) if tissue.size else 1.0)
    b = (bone_level - soft_level) / (np.percentile(layers.bone[bony], 90) if bony.any() else 1.0)
    heel = 1.0 + 0.08 * (np.linspace(-1, 1, h)[:, None] * rng.uniform(-1, 1))
    dense = b * (layers.bone + layers.cast) + max(b, 3.0) * layers.metal
    signal = 1.0 - np.exp(-(a * soft + dense) * heel)
    gamma = rng.uniform(0.85, 1.2)
    lo, hi = rng.uniform(0, 18), rng.uniform(225, 255)
    film = lo + (hi - lo) * signal**gamma
    # Noise lives where there is matter; open field is flat black. Grain is kept faint: it is
    # what PNG compresses worst, and the committed sample has a size budget.
    grain = rng.uniform(0.2, 0.6) * rng.standard_normal((h, w))
    mottle = rng.uniform(1.0, 3.0) * smooth_noise(rng, (h, w), cell=max(h, w) / 24)
    film += (grain + mottle) * np.minimum(signal * 4.0, 1.0)
    if rng.uniform() < 0.2:
        film = _collimate(film, rng)
    _marker(film, rng, side)
    return np.clip(np.rint(film), 0, 255).astype(np.uint8)


def _collimate(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blank out a border: the unexposed margin outside the collimator shows light grey."""
    h, w = film.shape
    top, bottom = (int(h * rng.uniform(0, 0.08) * (rng.uniform() < 0.6)) for _ in range(2))
    left, right = (int(w * rng.uniform(0, 0.1) * (rng.uniform() < 0.6)) for _ in range(2))
    inside = np.zeros((h, w), dtype=bool)
    inside[top : h - bottom, left : w - right] = True
    return np.where(inside, film, rng.uniform(150, 225))


def _marker(film: np.ndarray, rng: np.random.Generator, side: str) -> None:
    """Burn a bright lead letter (L or R) into a corner of the film, in place."""
    h, w = film.shape
    glyph = np.array([[c == "1" for c in row] for row in GLYPHS[side]])
    k = max(1, int(round(min(h, w) * rng.uniform(0.012, 0.02))))
    mark = np.kron(glyph, np.ones((k, k), dtype=bool))
    mh, mw = mark.shape
    if mh + 4 > h or mw + 4 > w:
        return
    # A corner, a few pixels in from the edge.
    dy, dx = int(rng.integers(2, max(3, h // 10))), int(rng.integers(2, max(3, w // 8)))
    y = dy if rng.uniform() < 0.5 else h - mh - dy
    x = dx if rng.uniform() < 0.5 else w - mw - dx
    y, x = int(np.clip(y, 0, h - mh)), int(np.clip(x, 0, w - mw))
    patch = film[y : y + mh, x : x + mw]
    patch[mark] = rng.uniform(230, 252)
