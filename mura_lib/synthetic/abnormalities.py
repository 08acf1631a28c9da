"""Abnormal findings: fractures, orthopaedic hardware, lytic lesions and soft-tissue swelling.

A finding is drawn once per study in anatomical terms (which bone, where along it, on which
side of it) and then projected into every view, so the views of an abnormal study show the
same fracture from different sides: a displacement seen face-on in one view can vanish in the
other, as in real films. One number, `subtlety` (0 = obvious, 1 = barely there), sets how
large, displaced and contrasted the finding is, so errors can later be broken down by it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mura_lib.synthetic.anatomy import Anatomy, Bone, Projector
from mura_lib.synthetic.primitives import Window, capsule_thickness, chord

KINDS = ("fracture", "hardware", "lesion", "swelling")
KIND_WEIGHTS = (0.4, 0.3, 0.22, 0.08)  # fractures dominate MURA's abnormal studies
MU_METAL = 6.0  # per cm: steel is far denser than bone and saturates the film
MU_CAST = 0.3  # per cm: plaster, about a third as dense as cortical bone

DensityFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Finding:
    """One abnormality of a study, in anatomical terms. Sizes are in cm, angles in radians."""

    kind: str
    subtlety: float
    bone: str  # name of the bone it sits on (swelling: the bone nearest the joint)
    t: float  # position along the bone, 0..1 from p0
    theta: float  # side of the bone it faces, about the bone's axis
    size: float  # fracture gap / lesion radius / hardware length / swelling radius
    contrast: float = 0.0  # fracture gap, lesion: share of bone density removed
    shift: float = 0.0  # fracture: sideways displacement of the distal fragment
    angulation: float = 0.0  # fracture: bend of the distal fragment; screws: tilt
    obliquity: float = 0.0  # fracture: tilt of the line from perpendicular
    extent: float = 1.0  # fracture: share of the bone's width the line crosses
    cast: bool = False  # fracture: the limb is in a plaster cast
    elongation: float = 1.0  # lesion: length along the bone / width
    holes: int = 0  # lesion: satellite holes around the main one
    rim: bool = False  # lesion: sclerotic rim (a slow-growing lesion)
    blastic: bool = False  # lesion: dense new bone instead of a hole (a sclerotic lesion)
    seed: int = 0  # lesion: placement of the satellite holes
    style: str = ""  # hardware: "plate", "screws" or "wire"
    screws: int = 0  # hardware: screws (through the plate, or loose)
    joint: int = 0  # swelling: index into the anatomy's joints


def draw_finding(rng: np.random.Generator, anatomy: Anatomy, field_cm: float) -> Finding:
    """Draw the kind, subtlety, place and shape of a study's abnormality.

    Sizes scale with the bone and with `field_cm`, the length of the part's field of view: a
    finding that is obvious must stay visible when the film is shrunk to the model's input
    (about 128 px), where a humerus is a few pixels wide.
    """
    kind = KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS))]
    # Most abnormal films in MURA show their finding plainly: subtlety leans to the obvious
    # side, with a tail of genuinely subtle findings. Hardware is rarely subtle (metal is
    # always bright), so its subtlety is compressed towards 0.
    subtlety = float(rng.beta(0.6, 2.4))
    if kind == "hardware":
        subtlety *= 0.7
    e = 1.0 - subtlety  # evidence
    targets = [b for b in anatomy.bones if b.target]
    # Thick bones are chosen more often: lesions and plates need room.
    weights = np.array([b.r_mid for b in targets]) ** 2
    bone = targets[int(rng.choice(len(targets), p=weights / weights.sum()))]
    theta = float(rng.uniform(0, 2 * np.pi))
    t = float(rng.uniform(*bone.span))
    where = (kind, subtlety, bone.name, t, theta)
    # The order of the random draws below is part of the sample's definition: changing it
    # changes every committed abnormal image.
    if kind == "fracture":
        # Obvious fractures are complete, wide and displaced or angulated; subtle ones are
        # hairlines that cross part of the bone.
        displaced = e > 0.3 or rng.uniform() < 0.3
        # Plain fractures are often filmed in their cast (MURA has many); a cast makes a study
        # easy to call, so it goes with the less subtle fractures.
        cast = bool(rng.uniform() < 0.35 + 0.5 * e)
        shift = max(bone.r_mid * 2.0 * e, field_cm * 0.06 * e) * rng.uniform(0.6, 1.0)
        angulation = 0.6 * e * rng.uniform(0.5, 1.0) * rng.choice([-1, 1])
        return Finding(
            *where,
            size=max(bone.r_mid * (0.15 + 0.9 * e), field_cm * (0.004 + 0.012 * e)),
            contrast=min(1.0, 0.4 + 0.8 * e),
            shift=shift * displaced,
            angulation=angulation * displaced,
            obliquity=float(rng.uniform(-0.7, 0.7)),
            extent=min(1.0, 0.4 + 0.9 * e),
            cast=cast,
        )
    if kind == "lesion":
        # Aggressive lesions are large, moth-eaten and expand past the cortex. About half are
        # blastic (dense, brighter than any normal bone: metastases of prostate cancer, bone
        # islands), the rest lytic (holes, which resemble normal gaps between bones more).
        return Finding(
            *where,
            size=max(bone.r_mid * (0.6 + 0.8 * e), field_cm * (0.016 + 0.03 * e)),
            contrast=0.5 + 0.45 * e,
            holes=int(round(1 + 4 * e * rng.uniform(0.6, 1.0))),
            elongation=float(rng.uniform(1.2, 2.2)),
            rim=bool(rng.uniform() < 0.5 + 0.5 * e),
            seed=int(rng.integers(2**31)),
            blastic=bool(rng.uniform() < 0.5),
        )
    if kind == "hardware":
        return Finding(
            *where,
            size=_bone_length(bone) * (0.2 + 0.35 * e),
            style="plate" if e > 0.45 else ("screws" if e > 0.38 else "wire"),
            angulation=float(rng.uniform(-0.6, 0.6)),
            screws=int(rng.integers(2, 6)),
        )
    joint = int(rng.integers(len(anatomy.joints)))
    radius = anatomy.joints[joint][1]
    return Finding(*where, size=radius * (0.45 + 0.9 * e), contrast=0.7 + 1.0 * e, joint=joint)


def _bone_length(b: Bone) -> float:
    return float(np.linalg.norm(np.subtract(b.p1, b.p0)))


def _frame(b: Bone) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit axis of a bone and two unit vectors perpendicular to it."""
    axis = np.subtract(b.p1, b.p0) / _bone_length(b)
    e1 = np.cross(axis, [0.0, 0.0, 1.0])
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.array([1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    return axis, e1, np.cross(axis, e1)


def site(f: Finding, b: Bone) -> np.ndarray:
    """Anatomical point on the bone's axis where the finding sits."""
    return np.asarray(b.p0) + f.t * np.subtract(b.p1, b.p0)


def fractured(f: Finding, b: Bone, proj: Projector, density: DensityFn) -> DensityFn:
    """Wrap a bone's density function so the bone is broken as `f` says.

    The proximal fragment is drawn as is; the distal one through a rigid transform (shift along
    the projected displacement, rotation by the angulation). Each fragment gets a lucent band
    along its broken edge, over `extent` of the bone's width.
    """
    axis3, e1, e2 = _frame(b)
    p3 = site(f, b)
    d3 = f.shift * (np.cos(f.theta) * e1 + np.sin(f.theta) * e2)
    pf = proj(p3)
    delta = proj(p3 + d3) - pf
    a2 = proj(p3 + axis3) - pf
    a2 /= np.linalg.norm(a2) + 1e-9
    perp = np.array([-a2[1], a2[0]])
    co, so = np.cos(f.obliquity), np.sin(f.obliquity)
    normal = a2 * co + perp * so  # normal of the fracture line
    across = -a2 * so + perp * co  # along the fracture line
    half_gap = max(f.size * proj.scale / 2, 0.3)
    r_px = b.r_mid * proj.scale
    ca, sa = np.cos(f.angulation), np.sin(f.angulation)

    def lucency(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        side = (x - pf[0]) * normal[0] + (y - pf[1]) * normal[1]
        pos = (x - pf[0]) * across[0] + (y - pf[1]) * across[1]
        # An incomplete fracture starts at one cortex and fades out across the bone.
        reach = -1.3 * r_px + 2.6 * r_px * f.extent
        fade = np.clip((reach - pos) / (0.3 * r_px + 1e-9) + 0.5, 0.0, 1.0)
        band = np.exp(-np.square(side / half_gap) * 2.0)
        return 1.0 - f.contrast * band * fade

    def broken(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        side = (x - pf[0]) * normal[0] + (y - pf[1]) * normal[1]
        proximal = np.where(side < 0, density(x, y) * lucency(x, y), 0.0)
        # Distal fragment: undo its displacement and rotation to find where it came from.
        ux, uy = x - pf[0] - delta[0], y - pf[1] - delta[1]
        sx, sy = pf[0] + ca * ux + sa * uy, pf[1] - sa * ux + ca * uy
        side_d = (sx - pf[0]) * normal[0] + (sy - pf[1]) * normal[1]
        distal = np.where(side_d >= 0, density(sx, sy) * lucency(sx, sy), 0.0)
        return proximal + distal

    return broken


def _lesion_holes(f: Finding, b: Bone) -> list[tuple[np.ndarray, float, float]]:
    """Centre (anatomical), radius across the bone (cm) and elongation of each lytic hole.

    One main hole off the bone's axis towards `theta`; aggressive lesions add satellite holes
    along the bone (`holes` of them), the moth-eaten look of a permeative process, which no
    normal structure resembles (a single round hole with a rim looks much like a carpal).
    """
    rng = np.random.default_rng(f.seed)
    axis3, e1, e2 = _frame(b)
    main = site(f, b) + 0.35 * b.r_mid * (np.cos(f.theta) * e1 + np.sin(f.theta) * e2)
    holes = [(main, f.size, f.elongation)]
    for _ in range(f.holes):
        along = rng.uniform(-1, 1) * f.size * (f.elongation + 1.5)
        phi = rng.uniform(0, 2 * np.pi)
        centre = site(f, b) + axis3 * along + 0.45 * b.r_mid * (np.cos(phi) * e1 + np.sin(phi) * e2)
        holes.append((centre, f.size * rng.uniform(0.3, 0.6), rng.uniform(1.0, 1.6)))
    return holes


def _ellipse_radius(
    proj: Projector, b: Bone, centre: np.ndarray, radius: float, elong: float, win: Window
) -> np.ndarray:
    """Normalised distance (1 on the outline) from a hole elongated along the bone's axis."""
    axis3 = np.subtract(b.p1, b.p0) / _bone_length(b)
    c = proj(centre)
    a2 = proj(centre + axis3) - c
    angle = float(np.arctan2(a2[1], a2[0]))
    rx, ry = radius * elong * proj.scale, radius * proj.scale
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = (win.x - c[0]) * ca + (win.y - c[1]) * sa, -(win.x - c[0]) * sa + (win.y - c[1]) * ca
    return np.sqrt(np.square(u / rx) + np.square(v / ry))


def lesion_factor(f: Finding, b: Bone, proj: Projector, win: Window) -> np.ndarray:
    """Multiplier that carves a lytic lesion out of a bone (maybe with a rim) or, for a blastic
    one, makes its foci denser than any normal bone."""
    factor = np.ones(np.broadcast(win.x, win.y).shape)
    for k, (centre, radius, elong) in enumerate(_lesion_holes(f, b)):
        r = _ellipse_radius(proj, b, centre, radius, elong, win)
        hole = np.clip(1.25 - r, 0.0, 0.25) / 0.25  # flat floor, soft 20 % edge
        if f.blastic:  # dense foci: up to three times the bone's own density
            factor *= 1.0 + 2.0 * f.contrast * hole
            continue
        factor *= 1.0 - f.contrast * hole
        if k == 0 and f.rim:  # a sclerotic rim marks a slow-growing lesion
            factor *= 1.0 + 0.6 * f.contrast * np.exp(-np.square((r - 1.15) / 0.15))
    return factor


def lesion_shell(f: Finding, b: Bone, proj: Projector, win: Window) -> np.ndarray:
    """Thin bony shell (cm of cortex) of a lesion that has blown the bone out.

    A lesion wider than the bone expands it: beyond the old cortex it is outlined by a thin
    rim of new bone, the "soap bubble" look of aggressive or cystic lesions.
    """
    excess = f.size - 0.8 * b.r_mid
    if excess <= 0 or f.blastic:
        return np.zeros(np.broadcast(win.x, win.y).shape)
    centre, radius, elong = _lesion_holes(f, b)[0]
    r = _ellipse_radius(proj, b, centre, radius, elong, win)
    strength = min(1.0, excess / (0.5 * b.r_mid))
    return 0.4 * strength * np.exp(-np.square((r - 1.2) / 0.1))


def hardware_metal(f: Finding, b: Bone, proj: Projector, win: Window) -> np.ndarray:
    """Metal path length (times MU_METAL) of a plate with screws, loose screws or a wire."""
    axis3, e1, e2 = _frame(b)
    radial = np.cos(f.theta) * e1 + np.sin(f.theta) * e2
    tangent = -np.sin(f.theta) * e1 + np.cos(f.theta) * e2
    c3 = site(f, b)
    half = f.size / 2
    s = proj.scale
    metal = np.zeros(np.broadcast(win.x, win.y).shape)
    n_screws = f.screws
    if f.style == "plate":  # on the bone's surface, a screw through each hole
        top = c3 + radial * (b.r_mid + 0.2)
        p0, p1 = proj(top - axis3 * half), proj(top + axis3 * half)
        half_width = min(0.6, 0.9 * b.r_mid)
        width = abs(_across(proj, top, tangent * half_width, axis3))
        thick = abs(_across(proj, top, radial * 0.15, axis3))
        hw = width + thick + 0.5
        flat = np.clip(hw - _seg_dist(win, p0, p1) + 0.5, 0.0, 1.0)
        # The path through the plate is its cross-section spread over its projected width.
        metal += flat * MU_METAL * (2 * half_width * 0.3) / max(2 * hw / s, 0.2)
        for k in range(n_screws + 2):
            q3 = top + axis3 * half * (2 * (k + 0.5) / (n_screws + 2) - 1)
            metal += _rod(win, proj(q3), proj(q3 - radial * (2 * b.r_mid + 0.6)), 0.18 * s, s)
    elif f.style == "screws":  # one or two screws across the bone
        for k in range(max(1, n_screws // 2)):
            q3 = c3 + axis3 * (k - 0.5) * 0.9 + radial * (b.r_mid + 0.3)
            end = q3 - radial * (2 * b.r_mid + 0.5) + axis3 * f.angulation
            metal += _rod(win, proj(q3), proj(end), 0.22 * s, s)
    else:  # a thin Kirschner wire crossing the bone obliquely
        q3 = c3 + axis3 * half + radial * (b.r_mid + 0.8)
        end = c3 - axis3 * half - radial * (b.r_mid + 0.3)
        metal += _rod(win, proj(q3), proj(end), 0.07 * s + 0.4, s)
    return metal


def _across(proj: Projector, p3: np.ndarray, v3: np.ndarray, axis3: np.ndarray) -> float:
    """Length in pixels of `v3` projected across the projected direction of `axis3`."""
    a = proj(p3 + axis3) - proj(p3)
    a /= np.linalg.norm(a) + 1e-9
    v = proj(p3 + v3) - proj(p3)
    return float(v[0] * -a[1] + v[1] * a[0])


def _seg_dist(win: Window, q0: np.ndarray, q1: np.ndarray) -> np.ndarray:
    d = q1 - q0
    t = np.clip(((win.x - q0[0]) * d[0] + (win.y - q0[1]) * d[1]) / (d @ d + 1e-9), 0.0, 1.0)
    return np.hypot(win.x - q0[0] - t * d[0], win.y - q0[1] - t * d[1])


def _rod(win: Window, q0: np.ndarray, q1: np.ndarray, r_px: float, scale: float) -> np.ndarray:
    """Metal attenuation of a cylindrical screw or wire (path length in cm times MU_METAL)."""
    return capsule_thickness(win.x, win.y, q0, q1, r_px, r_px) / scale * MU_METAL


def cast_path(f: Finding, anatomy: Anatomy, b: Bone, proj: Projector, win: Window) -> np.ndarray:
    """Plaster path length (times MU_CAST) of a cast around the limb at the fracture site.

    The cast is a tube 0.6 cm thick around the nearest soft-tissue cylinder, 16 cm long (less
    on short limbs), with open ends.
    """
    p = site(f, b)
    best = None
    for limb in anatomy.limbs:  # the soft-tissue cylinder the fracture lies in
        a0, a1 = np.asarray(limb.p0), np.asarray(limb.p1)
        d = a1 - a0
        t = float(np.clip((p - a0) @ d / (d @ d + 1e-9), 0.0, 1.0))
        dist = float(np.linalg.norm(a0 + t * d - p))
        if best is None or dist < best[0]:
            best = (dist, a0, a1, limb.r0 + (limb.r1 - limb.r0) * t)
    _, a0, a1, radius = best
    axis = (a1 - a0) / (np.linalg.norm(a1 - a0) + 1e-9)
    half = min(8.0, 2.2 * radius + 2.0)
    q0, q1 = proj(p - axis * half), proj(p + axis * half)
    s = proj.scale
    d = q1 - q0
    t = ((win.x - q0[0]) * d[0] + (win.y - q0[1]) * d[1]) / (d @ d + 1e-9)
    tc = np.clip(t, 0.0, 1.0)
    dist = np.hypot(win.x - q0[0] - tc * d[0], win.y - q0[1] - tc * d[1])
    r_in, r_out = (radius + 0.15) * s, (radius + 0.75) * s
    shell = chord(r_out, dist) - chord(r_in, dist)
    return np.where((t >= 0) & (t <= 1), shell, 0.0) / s * MU_CAST


def swelling_centre(f: Finding, anatomy: Anatomy) -> tuple[np.ndarray, float]:
    """Anatomical centre and radius (cm) of the extra soft tissue of a swelling."""
    joint, radius = anatomy.joints[f.joint % len(anatomy.joints)]
    direction = np.array([np.cos(f.theta), 0.0, np.sin(f.theta)])
    return np.asarray(joint) + direction * radius * 0.75, f.size
