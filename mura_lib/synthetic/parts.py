"""The seven MURA body parts as synthetic skeletons.

Each builder draws one patient's skeleton for one view: the patient's proportions come from
`body.seed` (so every view of a study shows the same bones), the view's flexion and finger
spread from `pose`. Measurements are rough adult values in centimetres; the point is a shape
a reader recognises at a glance, not anatomical accuracy. Bones marked ``core=False`` are
context cut by the edge of the film (the metacarpals on a finger view); bones marked
``target=False`` never carry an abnormality.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from mura_lib.synthetic.anatomy import Anatomy, Arc, Blob, Bone, Limb, Pose, chain, rotate


@dataclass(frozen=True)
class Body:
    """One patient's build: overall size, skeletal maturity and a seed for proportions."""

    size: float  # 1.0 = average adult
    child: bool  # open growth plates
    seed: int


def _jit(rng: np.random.Generator, x: float, rel: float = 0.06) -> float:
    return float(x * (1.0 + rel * rng.uniform(-1, 1)))


def _context(bones: list[Bone]) -> list[Bone]:
    return [replace(b, core=False, target=False) for b in bones]


def _carpals(cx: float, cy: float, s: float) -> list[Blob]:
    """The eight wrist bones in two rows (proximal row at larger y)."""
    spec = [  # x, y, rx, ry, angle
        (-1.25, 0.65, 0.55, 0.9, 0.5),  # scaphoid, long and tilted
        (-0.1, 0.75, 0.55, 0.55, 0.0),  # lunate
        (0.85, 0.6, 0.45, 0.5, 0.0),  # triquetrum
        (1.35, 0.95, 0.3, 0.3, 0.0),  # pisiform
        (-1.65, -0.45, 0.5, 0.5, 0.3),  # trapezium
        (-0.8, -0.55, 0.4, 0.45, 0.0),  # trapezoid
        (0.05, -0.5, 0.5, 0.75, 0.0),  # capitate
        (0.95, -0.45, 0.5, 0.65, -0.2),  # hamate
    ]
    return [
        Blob(f"carpal{i}", (cx + x * s, cy + y * s, 0.0), rx * s, ry * s, 0.6 * s, ang, 0.18)
        for i, (x, y, rx, ry, ang) in enumerate(spec)
    ]


def _ray(
    name: str,
    base: np.ndarray,
    d: np.ndarray,
    lengths: list[float],
    radii: list,
    flex: float,
    child: bool,
    flex_weights: tuple[float, ...],
) -> tuple[list[Bone], list[np.ndarray]]:
    names = [f"{name}_{i}" for i in range(len(lengths))]
    flexes = [flex * w for w in flex_weights[: len(lengths)]]
    return chain(names, base, d, lengths, radii, flexes, 0.2, child)


def _hand_skeleton(body: Body, pose: Pose, rng: np.random.Generator) -> Anatomy:
    """Metacarpals, fingers and thumb fanning out from the carpus (fingers towards -y)."""
    s = body.size
    a = Anatomy()
    a.blobs += _carpals(0.0, 2.2 * s, s)
    meta_x = [-0.95, 0.0, 0.9, 1.75]
    meta_len = [6.6, 6.3, 5.8, 5.3]
    fingers = [[4.0, 2.4, 1.8], [4.5, 2.8, 1.9], [4.2, 2.6, 1.9], [3.4, 1.9, 1.7]]
    fan = [-0.12, -0.03, 0.05, 0.13]
    for i in range(4):
        d = np.array([np.sin(fan[i] * (1 + 2 * pose.spread)), -1.0, 0.0])
        base = np.array([meta_x[i] * s, 1.2 * s, 0.0])
        mc, _ = chain(
            [f"metacarpal{i + 2}"],
            base,
            d,
            [_jit(rng, meta_len[i] * s)],
            [(0.36 * s, 0.5 * s, 0.55 * s)],
            [0.0],
            0.0,
            False,
        )
        a.bones += mc
        head = np.array(mc[0].p1) + d / np.linalg.norm(d) * 0.1
        lengths = [_jit(rng, x * s) for x in fingers[i]]
        radii = [
            (0.38 * s, 0.52 * s, 0.45 * s),
            (0.32 * s, 0.44 * s, 0.38 * s),
            (0.26 * s, 0.36 * s, 0.36 * s),
        ]
        ph, joints = _ray(
            f"finger{i + 2}", head, d, lengths, radii, pose.flex, body.child, (0.5, 0.9, 0.6)
        )
        a.bones += ph
        a.joints += [(tuple(j), 1.0 * s) for j in joints]
        tip = np.array(ph[-1].p1)
        a.limbs.append(Limb(tuple(head), tuple(tip + (tip - head) * 0.05), 0.85 * s, 0.7 * s))
        a.limbs.append(Limb(tuple(base), tuple(head), 1.25 * s, 1.05 * s))
    # The thumb leaves the carpus at an angle and is shorter by one phalanx.
    d = np.array([np.sin(-0.75 - 0.3 * pose.spread), -np.cos(0.75), 0.25])
    base = np.array([-1.9 * s, 1.3 * s, 0.0])
    th, joints = chain(
        ["metacarpal1", "thumb_0", "thumb_1"],
        base,
        d,
        [_jit(rng, 4.3 * s), _jit(rng, 3.0 * s), _jit(rng, 2.4 * s)],
        [
            (0.4 * s, 0.55 * s, 0.55 * s),
            (0.38 * s, 0.5 * s, 0.45 * s),
            (0.32 * s, 0.42 * s, 0.4 * s),
        ],
        [0.0, 0.2, 0.3],
        0.2,
        body.child,
    )
    a.bones += th
    a.joints += [(tuple(j), 1.0 * s) for j in joints[1:]]
    a.limbs.append(Limb(tuple(base), th[-1].p1, 1.3 * s, 0.8 * s))
    return a


def _forearm_bones(body: Body, top: float, bottom: float, rng: np.random.Generator) -> list[Bone]:
    """Radius (thumb side, -x, wide distally) and ulna (+x, wide proximally), elbow at y=`top`.

    The distal radius ends in a broad, flat articular surface: a shaft plus a transverse bar.
    """
    s = body.size
    ph = (0.97,) if body.child else ()
    r_mid = _jit(rng, 0.62 * s)
    return [
        Bone(
            "radius",
            (-1.0 * s, top + 0.6 * s, 0.3 * s),
            (-0.8 * s, bottom, 0.3 * s),
            r_mid,
            (0.8 * s, 1.05 * s),
            0.4,
            physes=ph,
            group="radius",
        ),
        Bone(
            "radius_end",
            (-2.0 * s, bottom + 0.1 * s, 0.3 * s),
            (0.2 * s, bottom - 0.2 * s, 0.3 * s),
            0.55 * s,
            (0.5 * s, 0.55 * s),
            0.15,
            target=False,
            group="radius",
        ),
        Bone(
            "ulna",
            (0.9 * s, top - 0.5 * s, -0.3 * s),
            (1.3 * s, bottom + 0.4 * s, -0.3 * s),
            _jit(rng, 0.55 * s),
            (1.15 * s, 0.62 * s),
            0.4,
            physes=ph,
        ),
    ]


def finger(body: Body, pose: Pose) -> Anatomy:
    """One finger from the metacarpal head to the tip, neighbours partly in the field."""
    rng = np.random.default_rng(body.seed)
    s = body.size
    lengths = [_jit(rng, x * s) for x in (4.4, 2.7, 1.9)]
    radii = [
        (0.4 * s, 0.56 * s, 0.47 * s),
        (0.33 * s, 0.46 * s, 0.4 * s),
        (0.27 * s, 0.38 * s, 0.38 * s),
    ]
    a = Anatomy()
    d = np.array([0.0, -1.0, 0.0])
    origin = np.array([0.0, 0.0, 0.0])
    ph, joints = _ray("phalanx", origin, d, lengths, radii, pose.flex, body.child, (0.4, 1.0, 0.6))
    a.bones += ph
    a.bones.append(
        Bone(
            "metacarpal",
            (0.0, 6.0 * s, 0.0),
            (0.0, 0.15 * s, 0.0),
            0.4 * s,
            (0.5 * s, 0.6 * s),
            target=False,
            core=False,
        )
    )
    tip = np.array(ph[-1].p1)
    a.limbs.append(
        Limb((0.0, 0.3, 0.0), tuple(tip + np.array([0, -0.35 * s, 0])), 0.95 * s, 0.72 * s)
    )
    a.limbs.append(Limb((0.0, 7.0 * s, 0.0), (0.0, 0.6 * s, 0.0), 2.2 * s, 1.3 * s))
    a.joints += [(tuple(j), 0.95 * s) for j in joints]
    if rng.uniform() < 0.7:  # neighbouring fingers, flexed less, at the edge of the field
        for side in (-1, 1):
            o = np.array([side * 2.1 * s, 0.25 * s, -1.2 * abs(np.sin(pose.beam))])
            dd = rotate(d, np.array([0.0, 0.0, 1.0]), side * (0.1 + pose.spread))
            nb, _ = _ray(
                f"neighbour{side}",
                o,
                dd,
                [x * 0.95 for x in lengths],
                radii,
                pose.flex * 0.4,
                body.child,
                (0.4, 1.0, 0.6),
            )
            a.bones += _context(nb)
            a.limbs.append(Limb(tuple(o), nb[-1].p1, 0.9 * s, 0.7 * s))
    return a


def hand(body: Body, pose: Pose) -> Anatomy:
    """The whole hand with the distal radius and ulna at the bottom edge."""
    rng = np.random.default_rng(body.seed)
    s = body.size
    a = _hand_skeleton(body, pose, rng)
    a.bones += _context(_forearm_bones(body, 16.0 * s, 3.5 * s, rng))
    a.limbs.append(Limb((0.2, 12.0 * s, 0.0), (0.2, 2.0 * s, 0.0), 2.9 * s, 3.1 * s))
    return a


def wrist(body: Body, pose: Pose) -> Anatomy:
    """Distal radius and ulna, carpus and the bases of the metacarpals."""
    rng = np.random.default_rng(body.seed)
    s = body.size
    a = _hand_skeleton(body, pose, rng)
    for i, b in enumerate(a.bones):  # only the carpus and metacarpal bases are in the field
        a.bones[i] = replace(b, core=False, target=False)
    a.joints = [(tuple(np.array([0.0, 3.2 * s, 0.0])), 2.6 * s)]
    # The field: carpus, metacarpal bases and the distal radius; the shafts run off the edge.
    a.bones += [
        replace(b, core=False, span=(0.68, 0.95))
        for b in _forearm_bones(body, 18.0 * s, 3.4 * s, rng)
    ]
    a.field_points += [(-2.4 * s, 7.5 * s, 0.0), (2.4 * s, 7.5 * s, 0.0), (0.0, -1.6 * s, 0.0)]
    a.limbs.append(Limb((0.2, 14.0 * s, 0.0), (0.2, 1.5 * s, 0.0), 2.7 * s, 3.1 * s))
    return a


def forearm(body: Body, pose: Pose) -> Anatomy:
    """Radius and ulna from elbow to wrist, the ends of the humerus and carpus at the edges."""
    rng = np.random.default_rng(body.seed)
    s = body.size
    a = Anatomy()
    length = _jit(rng, 24.0 * s)
    a.bones += _forearm_bones(body, 0.0, length, rng)
    a.bones += _context(
        [Bone("humerus", (0.0, -12.0 * s, 0.0), (0.0, -1.3 * s, 0.0), 1.0 * s, (1.0 * s, 2.3 * s))]
    )
    a.blobs += [replace(b, core=False) for b in _carpals(-0.2 * s, length + 1.6 * s, s)]
    a.limbs.append(Limb((0.0, -12.0 * s, 0.0), (0.0, length + 3 * s, 0.0), 4.0 * s, 2.6 * s))
    a.joints += [((0.0, 0.0, 0.0), 3.5 * s), ((0.0, length, 0.0), 2.8 * s)]
    return a


def elbow(body: Body, pose: Pose) -> Anatomy:
    """Distal humerus with its condyles, proximal radius and ulna; flexed in the lateral view."""
    rng = np.random.default_rng(body.seed)
    s = body.size
    a = Anatomy()
    ph = (0.95,) if body.child else ()
    # The distal humerus: a shaft that splits into two columns around the olecranon fossa
    # and ends in a bar of condyles (a ring when seen from the side).
    a.bones += [
        Bone(
            "humerus",
            (0.0, -13.0 * s, 0.0),
            (0.0, -3.2 * s, 0.0),
            _jit(rng, 1.0 * s),
            (1.0 * s, 1.35 * s),
            0.4,
            physes=ph,
            core=False,
            span=(0.78, 0.97),
            group="humerus",
        ),
        Bone(
            "medial_column",
            (0.3 * s, -3.6 * s, 0.0),
            (2.3 * s, -1.6 * s, 0.0),
            0.55 * s,
            (0.7 * s, 0.5 * s),
            0.3,
            target=False,
            group="humerus",
        ),
        Bone(
            "lateral_column",
            (-0.3 * s, -3.6 * s, 0.0),
            (-1.9 * s, -1.6 * s, 0.0),
            0.5 * s,
            (0.7 * s, 0.45 * s),
            0.3,
            target=False,
            group="humerus",
        ),
        Bone(
            "condyles",
            (2.4 * s, -1.3 * s, 0.0),
            (-2.0 * s, -1.2 * s, 0.0),
            0.8 * s,
            (0.5 * s, 0.55 * s),
            0.15,
            target=False,
            group="humerus",
        ),
    ]
    a.blobs += [
        Blob("capitellum", (-1.1 * s, -0.6 * s, 0.2 * s), 0.7 * s, 0.65 * s, 0.8 * s),
        Blob("trochlea", (0.6 * s, -0.6 * s, 0.0), 0.9 * s, 0.7 * s, 0.9 * s),
    ]
    axis = np.array([1.0, 0.0, 0.0])
    for b in _forearm_bones(body, 0.3 * s, 13.0 * s, rng):
        # The forearm swings about the elbow joint by the flexion angle; only its top is in
        # the field.
        p0, p1 = (rotate(np.array(p), axis, pose.flex) for p in (b.p0, b.p1))
        a.bones.append(
            replace(b, p0=tuple(p0), p1=tuple(p1), physes=(), core=False, span=(0.08, 0.35))
        )
    forearm_side = rotate(np.array([0.0, 5.5 * s, 0.0]), axis, pose.flex)
    a.field_points += [
        (-2.6 * s, -5.5 * s, 0.0),
        (2.6 * s, -5.5 * s, 0.0),
        tuple(forearm_side + [2.6 * s, 0, 0]),
        tuple(forearm_side - [2.6 * s, 0, 0]),
    ]
    olecranon = rotate(np.array([-0.5 * s, -0.3 * s, -1.1 * s]), axis, pose.flex * 0.5)
    a.blobs.append(Blob("olecranon", tuple(olecranon), 0.7 * s, 0.9 * s, 0.8 * s))
    far = rotate(np.array([0.0, 14.0 * s, 0.0]), axis, pose.flex)
    a.limbs += [
        Limb((0.0, -14.0 * s, 0.0), (0.0, 0.0, 0.0), 4.2 * s, 3.9 * s),
        Limb((0.0, 0.0, 0.0), tuple(far), 3.9 * s, 3.0 * s),
    ]
    a.joints.append(((0.0, 0.0, 0.0), 3.6 * s))
    return a


def humerus(body: Body, pose: Pose) -> Anatomy:
    """The whole humerus, head at the top, with glenoid and forearm at the edges."""
    rng = np.random.default_rng(body.seed)
    s = body.size
    a = Anatomy()
    length = _jit(rng, 29.0 * s)
    ph = (0.04,) if body.child else ()
    a.bones.append(
        Bone(
            "humerus",
            (0.3 * s, 0.8 * s, 0.0),
            (0.0, length, 0.0),
            _jit(rng, 1.05 * s),
            (1.7 * s, 2.3 * s),
            0.38,
            physes=ph,
        )
    )
    a.blobs += [
        Blob("head", (-0.4 * s, -0.6 * s, 0.0), 2.3 * s, 2.4 * s, 2.3 * s, 0.0, 0.12),
        Blob("tuberosity", (1.7 * s, 0.0, 0.6 * s), 0.9 * s, 1.3 * s, 0.9 * s),
        Blob("condyles", (0.0, length + 0.5 * s, 0.0), 2.2 * s, 0.8 * s, 1.0 * s),
    ]
    a.blobs.append(
        Blob("glenoid", (-3.4 * s, -0.6 * s, 0.0), 0.6 * s, 2.0 * s, 1.2 * s, core=False)
    )
    a.bones += _context(_forearm_bones(body, length + 1.5 * s, length + 14 * s, rng))
    a.limbs += [
        Limb((0.5, -2.0 * s, 0.0), (0.0, length + 1 * s, 0.0), 5.2 * s, 4.0 * s),
        Limb((0.0, length + 1 * s, 0.0), (0.0, length + 14 * s, 0.0), 4.0 * s, 3.2 * s),
    ]
    a.joints += [((-0.4 * s, -0.6 * s, 0.0), 4.5 * s), ((0.0, length, 0.0), 3.8 * s)]
    return a


def shoulder(body: Body, pose: Pose) -> Anatomy:
    """Humeral head and neck, glenoid, scapula, acromion, clavicle and a few ribs."""
    rng = np.random.default_rng(body.seed)
    s = body.size
    a = Anatomy()
    ph = (0.03,) if body.child else ()
    a.bones.append(
        Bone(
            "humerus",
            (0.9 * s, 1.2 * s, 0.0),
            (1.3 * s, 16.0 * s, 0.0),
            _jit(rng, 1.15 * s),
            (1.8 * s, 1.15 * s),
            0.38,
            physes=ph,
            core=False,
            span=(0.04, 0.3),
        )
    )
    rot = pose.spread * 4  # internal/external rotation moves the greater tuberosity
    a.blobs += [
        Blob("head", (0.0, 0.0, 0.0), 2.5 * s, 2.5 * s, 2.5 * s, 0.0, 0.12),
        Blob(
            "tuberosity",
            (1.9 * s * np.cos(rot), -0.6 * s, 1.9 * s * np.sin(rot)),
            0.9 * s,
            1.1 * s,
            0.9 * s,
        ),
        Blob("glenoid", (-2.9 * s, 0.2 * s, 0.0), 0.65 * s, 2.0 * s, 1.5 * s),
        # The blade of the scapula: thin, so faint, framed by its thicker borders.
        Blob("scapula", (-6.3 * s, 4.0 * s, -1.0 * s), 3.2 * s, 5.8 * s, 0.3 * s, 0.2, 0.0),
    ]

    def border(name: str, p0: tuple, p1: tuple, r: float, target: bool = False) -> Bone:
        return Bone(
            name,
            tuple(np.multiply(p0, s)),
            tuple(np.multiply(p1, s)),
            r * s,
            (r * s * 1.2, r * s * 1.2),
            0.45,
            target=target,
            group="scapula",
        )

    a.bones += [
        border("lateral_border", (-3.2, 1.6, -0.5), (-6.6, 10.5, -1.0), 0.5),
        border("medial_border", (-10.2, -0.8, -1.5), (-6.6, 10.5, -1.0), 0.3),
        border("superior_border", (-10.2, -0.8, -1.5), (-3.6, -0.6, -0.5), 0.3),
        border("spine", (-10.0, -1.4, -2.0), (-2.0, -3.0, -1.0), 0.45),
        border("acromion", (-2.0, -3.0, -1.0), (1.8, -3.4, 0.0), 0.55, True),
        Bone(
            "coracoid",
            (-2.4 * s, -1.2 * s, 1.5),
            (-0.9 * s, -1.7 * s, 2.0),
            0.4 * s,
            (0.5 * s, 0.45 * s),
            target=False,
        ),
        Bone(
            "clavicle_medial",
            (-14.0 * s, -3.4 * s, 1.0),
            (-5.0 * s, -4.7 * s, 0.5),
            _jit(rng, 0.55 * s),
            (0.8 * s, 0.55 * s),
            0.4,
            core=False,
            group="clavicle",
        ),
        Bone(
            "clavicle",
            (-5.4 * s, -4.65 * s, 0.5),
            (1.2 * s, -3.9 * s, 0.0),
            0.55 * s,
            (0.55 * s, 0.75 * s),
            0.4,
            group="clavicle",
        ),
    ]
    for k in range(5):  # ribs: arcs of circles centred over the chest
        a.arcs.append(
            Arc(
                (-17.0 * s, (2.5 * k - 3.0) * s, 0.0),
                (9.0 + 2.2 * k) * s,
                0.5 * s,
                (-0.25 + 0.06 * k, 0.7),
            )
        )
    a.limbs += [
        Limb((0.5, 0.0, 0.0), (1.2, 17.0 * s, 0.0), 5.5 * s, 4.6 * s),
        Limb((-6.0 * s, 3.0 * s, 0.0), (-16.0 * s, 9.0 * s, 0.0), 9.0 * s, 11.0 * s, 0.35),
    ]
    a.joints.append(((0.0, 0.0, 0.0), 4.5 * s))
    return a


BUILDERS: dict[str, Callable[[Body, Pose], Anatomy]] = {
    "ELBOW": elbow,
    "FINGER": finger,
    "FOREARM": forearm,
    "HAND": hand,
    "HUMERUS": humerus,
    "SHOULDER": shoulder,
    "WRIST": wrist,
}
