"""Skeletons in three dimensions and their projection onto a film.

A body part is described once per patient in anatomical coordinates (centimetres; y along the
limb, x across it, z front to back) as long bones, ellipsoidal bones and soft-tissue
cylinders. Each view of a study projects the same skeleton with its own beam direction
(postero-anterior, lateral, oblique), in-plane rotation, mirroring and magnification, so the
views of one study show one patient from several sides, as in a real study. The skeletons
themselves live in :mod:`mura_lib.synthetic.parts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Bone:
    """A long bone: a tube from `p0` to `p1` with flared ends and a cortical shell."""

    name: str
    p0: Vec3
    p1: Vec3
    r_mid: float  # shaft radius, cm
    r_ends: tuple[float, float]  # radius at p0 and at p1, cm
    cortex: float = 0.35  # cortical share of the shaft radius
    physes: tuple[float, ...] = ()  # open growth plates, positions 0..1 from p0
    target: bool = True  # may carry an abnormality (lies wholly in the field)
    core: bool = True  # counts when the view is framed (False: context cut by the edge)
    group: str = ""  # bones of one group merge (max, not sum): the pieces of one curved bone
    span: tuple[float, float] = (0.2, 0.8)  # where along it a finding may sit (in the field)


@dataclass(frozen=True)
class Blob:
    """An ellipsoidal bone (carpal, humeral head, condyle, flat scapula)."""

    name: str
    c: Vec3
    rx: float  # semi-axis across the limb, cm
    ry: float  # semi-axis along the limb, cm
    rz: float  # semi-axis along the beam in the postero-anterior view, cm
    angle: float = 0.0  # in-plane tilt, radians
    cortex: float = 0.15
    core: bool = True


@dataclass(frozen=True)
class Arc:
    """A thin curved bone (a rib) in the background, drawn in the film plane."""

    c: Vec3  # centre of the circle
    radius: float
    r_bone: float
    angles: tuple[float, float]  # from, to (radians, counter-clockwise in anatomical x-y)


@dataclass(frozen=True)
class Limb:
    """Soft tissue: a tapered cylinder of muscle, fat and skin around the bones."""

    p0: Vec3
    p1: Vec3
    r0: float
    r1: float
    mu: float = 1.0  # relative attenuation (a chest wall is mostly air-filled lung)


@dataclass
class Anatomy:
    """Everything one view of a body part is drawn from."""

    bones: list[Bone] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)
    limbs: list[Limb] = field(default_factory=list)
    arcs: list[Arc] = field(default_factory=list)
    joints: list[tuple[Vec3, float]] = field(default_factory=list)  # centre, soft-tissue radius
    field_points: list[Vec3] = field(default_factory=list)  # more points the view must show

    def bone(self, name: str) -> Bone:
        """The bone called `name` (abnormalities refer to bones by name)."""
        for b in self.bones:
            if b.name == name:
                return b
        raise KeyError(name)


@dataclass(frozen=True)
class Pose:
    """How one view is taken: beam direction and joint flexion, chosen per view."""

    projection: str  # "PA", "LAT" or "OBL": recorded in the truth sidecar
    beam: float  # rotation of the limb about its long axis, radians (0 = PA, pi/2 = lateral)
    flex: float  # joint flexion, radians (fingers, elbow)
    spread: float  # finger abduction, radians


@dataclass(frozen=True)
class Projector:
    """Maps anatomical points (cm) to pixel coordinates of one view."""

    beam: float
    angle: float  # in-plane rotation, radians
    mirror: bool  # left and right limbs are mirror images on film
    scale: float = 1.0  # pixels per cm
    offset: tuple[float, float] = (0.0, 0.0)

    def plane(self, p: Vec3 | np.ndarray) -> np.ndarray:
        """Project onto the film plane, before scaling and placement (cm)."""
        x, y, z = p
        cb, sb = np.cos(self.beam), np.sin(self.beam)
        u = x * cb + z * sb
        if self.mirror:
            u = -u
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        return np.array([u * ca - y * sa, u * sa + y * ca])

    def __call__(self, p: Vec3 | np.ndarray) -> np.ndarray:
        """Pixel coordinates of an anatomical point."""
        return self.plane(p) * self.scale + np.asarray(self.offset)

    def blob_axes(self, b: Blob) -> tuple[float, float, float]:
        """Projected semi-axes (across, along, depth) of an axis-aligned ellipsoid, in cm."""
        cb, sb = abs(np.cos(self.beam)), abs(np.sin(self.beam))
        rx = float(np.hypot(b.rx * cb, b.rz * sb))
        rz = float(np.hypot(b.rx * sb, b.rz * cb))
        return rx, b.ry, rz

    def blob_angle(self, b: Blob) -> float:
        """In-plane tilt of a blob on the film."""
        return (-b.angle if self.mirror else b.angle) + self.angle

    def arc_angles(self, a: Arc) -> tuple[float, float]:
        """Start and end angle of an arc on the film (mirroring reverses its direction)."""
        lo, hi = a.angles
        if self.mirror:
            lo, hi = np.pi - hi, np.pi - lo
        return float(lo + self.angle), float(hi + self.angle)


def core_extent(anatomy: Anatomy, proj: Projector) -> tuple[float, float, float, float]:
    """Box (x0, x1, y0, y1), in film-plane cm, around the bones a view must show whole."""
    pts = []
    for b in anatomy.bones:
        if b.core:
            r = max(b.r_ends)
            for p in (b.p0, b.p1):
                q = proj.plane(p)
                pts += [q - r, q + r]
    for b in anatomy.blobs:
        if b.core:
            r = max(b.rx, b.ry, b.rz)
            q = proj.plane(b.c)
            pts += [q - r, q + r]
    pts += [proj.plane(p) for p in anatomy.field_points]
    arr = np.array(pts)
    return arr[:, 0].min(), arr[:, 0].max(), arr[:, 1].min(), arr[:, 1].max()


def frame(
    anatomy: Anatomy,
    proj: Projector,
    size: tuple[int, int],
    fill: float,
    shift: tuple[float, float],
) -> Projector:
    """Scale and place a view so its core bones fill `fill` of the image (w, h).

    `shift` moves the anatomy off centre, in units of the free margin (-1..1), as a
    radiographer rarely centres a limb exactly.
    """
    x0, x1, y0, y1 = core_extent(anatomy, proj)
    w, h = size
    scale = fill * min(w / (x1 - x0), h / (y1 - y0))
    free_x, free_y = w - scale * (x1 - x0), h - scale * (y1 - y0)
    ox = (w - scale * (x0 + x1)) / 2 + shift[0] * free_x / 2
    oy = (h - scale * (y0 + y1)) / 2 + shift[1] * free_y / 2
    return Projector(proj.beam, proj.angle, proj.mirror, float(scale), (float(ox), float(oy)))


def rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotate vector `v` about unit `axis` by `angle` (Rodrigues' formula)."""
    axis = axis / np.linalg.norm(axis)
    c, s = np.cos(angle), np.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * (axis @ v) * (1 - c)


def chain(
    names: list[str],
    start: np.ndarray,
    direction: np.ndarray,
    lengths: list[float],
    radii: list[tuple[float, float, float]],
    flex: list[float],
    gap: float,
    physes: bool,
) -> tuple[list[Bone], list[np.ndarray]]:
    """A row of bones joined end to end (a ray of phalanges), bending at each joint.

    Each bone starts `gap` after the previous one (the joint space) and its direction turns by
    its entry in `flex` towards +z (palmar flexion). Returns the bones and the joint centres.
    `radii` holds (shaft, proximal end, distal end) per bone.
    """
    bones, joints = [], []
    p = np.asarray(start, dtype=float)
    d = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    lateral = np.cross(d, np.array([0.0, 0.0, 1.0]))
    if np.linalg.norm(lateral) < 1e-6:
        lateral = np.array([1.0, 0.0, 0.0])
    for name, length, (rm, ra, rb), f in zip(names, lengths, radii, flex, strict=True):
        d = rotate(d, lateral, -f)
        a, b = p + d * gap / 2, p + d * (length - gap / 2)
        bones.append(Bone(name, tuple(a), tuple(b), rm, (ra, rb), physes=(0.08,) if physes else ()))
        joints.append(p.copy())
        p = p + d * length
    return bones, joints
