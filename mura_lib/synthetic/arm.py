"""Arm-side parts: FOREARM, ELBOW, HUMERUS and SHOULDER films.

As in :mod:`mura_lib.synthetic.hand`: proportions from `body.seed`, flexion from `pose`,
``core=False`` for context at the film's edge, ``span`` where along a bone a finding may sit
so that it lies inside the field of view.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mura_lib.synthetic.anatomy import Anatomy, Arc, Blob, Bone, Limb, Pose, rotate
from mura_lib.synthetic.skeleton import Body, as_context, carpals, forearm_bones, jitter


def forearm(body: Body, pose: Pose) -> Anatomy:
    """Radius and ulna from elbow to wrist, the ends of the humerus and carpus at the edges."""
    rng = np.random.default_rng(body.seed)
    s = body.size
    a = Anatomy()
    length = jitter(rng, 24.0 * s)
    a.bones += forearm_bones(body, 0.0, length, rng)
    a.bones += as_context(
        [Bone("humerus", (0.0, -12.0 * s, 0.0), (0.0, -1.3 * s, 0.0), 1.0 * s, (1.0 * s, 2.3 * s))]
    )
    a.blobs += [replace(b, core=False) for b in carpals(-0.2 * s, length + 1.6 * s, s)]
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
            jitter(rng, 1.0 * s),
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
    for b in forearm_bones(body, 0.3 * s, 13.0 * s, rng):
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
    length = jitter(rng, 29.0 * s)
    ph = (0.04,) if body.child else ()
    a.bones.append(
        Bone(
            "humerus",
            (0.3 * s, 0.8 * s, 0.0),
            (0.0, length, 0.0),
            jitter(rng, 1.05 * s),
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
    a.bones += as_context(forearm_bones(body, length + 1.5 * s, length + 14 * s, rng))
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
            jitter(rng, 1.15 * s),
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
            jitter(rng, 0.55 * s),
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
