"""Projected path lengths of simple solids, rasterised on a pixel grid.

A radiograph records how much matter an X-ray crossed on its way to each pixel. Drawing each
bone as a solid (a tube with a cortical shell, an ellipsoid) and computing the length of the
ray through it gives the bright cortical edges, the darker medullary canal and the rounded bone
ends of real films for free, at any image size.

All coordinates here are in pixels (x to the right, y down, pixel centres at integer + 0.5).
Each function works on the smallest window of the image that the solid can touch, because a
radiograph holds dozens of solids and most of them cover a small part of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Attenuation per cm of path (arbitrary units, tuned by eye): cortical bone is dense, the
# medullary canal of a shaft is mostly fat, the trabecular bone at the ends lies in between.
MU_CORTEX = 1.0
MU_CANAL = 0.22
MU_TRABECULAR = 0.5
MU_BLOB_INSIDE = 0.3


@dataclass(frozen=True)
class Window:
    """A rectangle of the image and the pixel-centre coordinates inside it."""

    rows: slice
    cols: slice
    x: np.ndarray  # shape (1, w)
    y: np.ndarray  # shape (h, 1)


def window(shape: tuple[int, int], x0: float, x1: float, y0: float, y1: float) -> Window | None:
    """Return the part of an image of `shape` inside the box, or None when they do not meet."""
    h, w = shape
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, w)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)) + 1, h)
    if c0 >= c1 or r0 >= r1:
        return None
    x = np.arange(c0, c1, dtype=np.float64)[None, :] + 0.5
    y = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5
    return Window(slice(r0, r1), slice(c0, c1), x, y)


def chord(radius: np.ndarray | float, dist: np.ndarray) -> np.ndarray:
    """Length of a ray at distance `dist` from the axis of a cylinder of `radius`."""
    return 2.0 * np.sqrt(np.maximum(np.square(radius) - np.square(dist), 0.0))


def tube_density(
    x: np.ndarray,
    y: np.ndarray,
    q0: np.ndarray,
    q1: np.ndarray,
    r_mid: float,
    r_ends: tuple[float, float],
    cortex: float,
    physes: tuple[float, ...] = (),
    physis_px: float = 0.0,
) -> np.ndarray:
    """Attenuation (per pixel of path) of a long bone from `q0` to `q1`, seen side-on.

    The radius flares from `r_mid` along the shaft to `r_ends` (at `q0`, at `q1`: the
    metaphyses), the cortex is thick along the shaft (`cortex` is its share of the radius) and
    thin at the ends, and the canal fills with trabecular bone towards the ends. Beyond the end
    points the distance to the segment gives the rounded shape of an epiphysis. `physes` are
    positions (0..1 along the bone) of open growth plates: lucent bands `physis_px` wide, the
    normal finding in children that a reader must not take for a fracture.
    """
    d = q1 - q0
    length2 = float(d @ d) + 1e-9
    t = np.clip(((x - q0[0]) * d[0] + (y - q0[1]) * d[1]) / length2, 0.0, 1.0)
    dist = np.hypot(x - (q0[0] + t * d[0]), y - (q0[1] + t * d[1]))
    u = np.abs(2.0 * t - 1.0)
    u4 = u**4
    r_end = np.where(t < 0.5, r_ends[0], r_ends[1])
    radius = r_mid + (r_end - r_mid) * u4
    share = cortex * (1.0 - u4) + 0.1 * u4
    inner = radius * (1.0 - share)
    outer_len = chord(radius, dist)
    inner_len = chord(inner, dist)
    mu_in = MU_CANAL + (MU_TRABECULAR - MU_CANAL) * np.minimum(u * 1.6, 1.0) ** 2
    density = MU_CORTEX * (outer_len - inner_len) + mu_in * inner_len
    if physes and physis_px > 0:
        along = t * np.sqrt(length2)
        for tp in physes:
            gap = np.abs(along - tp * np.sqrt(length2)) / (0.5 * physis_px)
            density = density * (1.0 - 0.75 * np.maximum(1.0 - gap**2, 0.0))
    return density


def tube_box(q0: np.ndarray, q1: np.ndarray, reach: float) -> tuple[float, float, float, float]:
    """Bounding box (x0, x1, y0, y1) of everything within `reach` of the segment."""
    return (
        min(q0[0], q1[0]) - reach,
        max(q0[0], q1[0]) + reach,
        min(q0[1], q1[1]) - reach,
        max(q0[1], q1[1]) + reach,
    )


def ellipse_q(
    x: np.ndarray, y: np.ndarray, c: np.ndarray, rx: float, ry: float, angle: float
) -> np.ndarray:
    """Squared normalised distance from the centre of a rotated ellipse (1 on its outline)."""
    ca, sa = np.cos(angle), np.sin(angle)
    u = (x - c[0]) * ca + (y - c[1]) * sa
    v = -(x - c[0]) * sa + (y - c[1]) * ca
    return np.square(u / rx) + np.square(v / ry)


def blob_density(
    x: np.ndarray,
    y: np.ndarray,
    c: np.ndarray,
    rx: float,
    ry: float,
    angle: float,
    cortex: float,
    depth: float,
) -> np.ndarray:
    """Attenuation of an ellipsoidal bone (carpal, humeral head, condyle) with a thin shell.

    `depth` is the semi-axis along the beam, so a flat bone (scapula) can be wide but thin.
    """
    q = ellipse_q(x, y, c, rx, ry, angle)
    outer = 2.0 * depth * np.sqrt(np.maximum(1.0 - q, 0.0))
    k = 1.0 - cortex
    inner = 2.0 * depth * k * np.sqrt(np.maximum(1.0 - q / (k * k), 0.0))
    # Ellipsoidal bones are mostly cancellous: a faint inside within a thin cortex.
    return MU_CORTEX * (outer - inner) + MU_BLOB_INSIDE * inner


def arc_density(
    x: np.ndarray,
    y: np.ndarray,
    c: np.ndarray,
    radius: float,
    r_bone: float,
    angles: tuple[float, float],
    cortex: float,
) -> np.ndarray:
    """Attenuation of a thin curved bone (a rib) along a circular arc from `angles[0]` to [1]."""
    rho = np.hypot(x - c[0], y - c[1])
    phi = np.arctan2(y - c[1], x - c[0])
    lo, hi = angles
    inside = ((phi - lo) % (2 * np.pi)) <= ((hi - lo) % (2 * np.pi))
    dist = np.abs(rho - radius)
    outer, inner = chord(r_bone, dist), chord(r_bone * (1 - cortex), dist)
    return np.where(inside, MU_CORTEX * (outer - inner) + MU_CANAL * inner, 0.0)


def capsule_thickness(
    x: np.ndarray, y: np.ndarray, q0: np.ndarray, q1: np.ndarray, r0: float, r1: float
) -> np.ndarray:
    """Path length through a tapered soft-tissue cylinder with rounded ends (a limb segment)."""
    d = q1 - q0
    length2 = float(d @ d) + 1e-9
    t = np.clip(((x - q0[0]) * d[0] + (y - q0[1]) * d[1]) / length2, 0.0, 1.0)
    dist = np.hypot(x - (q0[0] + t * d[0]), y - (q0[1] + t * d[1]))
    return chord(r0 + (r1 - r0) * t, dist)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-scale noise that varies smoothly over about `cell` pixels.

    Drawn on a coarse grid and interpolated bilinearly, so it is cheap and deterministic
    (no FFT or library filter whose rounding could change between versions).
    """
    h, w = shape
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    grid = rng.standard_normal((gh, gw))
    gy = (np.arange(h) + 0.5) / cell
    gx = (np.arange(w) + 0.5) / cell
    iy, ix = gy.astype(int), gx.astype(int)
    fy, fx = (gy - iy)[:, None], (gx - ix)[None, :]
    top = grid[iy][:, ix] * (1 - fx) + grid[iy][:, ix + 1] * fx
    bottom = grid[iy + 1][:, ix] * (1 - fx) + grid[iy + 1][:, ix + 1] * fx
    return top * (1 - fy) + bottom * fy
