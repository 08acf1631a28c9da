"""Hand-side parts: FINGER, HAND and WRIST films.

Each builder draws one patient's skeleton for one view: proportions come from `body.seed`
(so every view of a study shows the same bones), flexion and finger spread from `pose`.
Fingers point towards -y. Bones marked ``core=False`` are context cut by the edge of the film
(the metacarpals on a finger view); bones marked ``target=False`` never carry an abnormality.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mura_lib.synthetic.anatomy import Anatomy, Bone, Limb, Pose, chain, rotate
from mura_lib.synthetic.skeleton import Body, as_context, carpals, forearm_bones, jitter


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
    a.blobs += carpals(0.0, 2.2 * s, s)
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
            [jitter(rng, meta_len[i] * s)],
            [(0.36 * s, 0.5 * s, 0.55 * s)],
            [0.0],
            0.0,
            False,
        )
        a.bones += mc
        head = np.array(mc[0].p1) + d / np.linalg.norm(d) * 0.1
        lengths = [jitter(rng, x * s) for x in fingers[i]]
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
        [jitter(rng, 4.3 * s), jitter(rng, 3.0 * s), jitter(rng, 2.4 * s)],
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


def finger(body: Body, pose: Pose) -> Anatomy:
    """One finger from the metacarpal head to the tip, neighbours partly in the field."""
    rng = np.random.default_rng(body.seed)
    s = body.size
    lengths = [jitter(rng, x * s) for x in (4.4, 2.7, 1.9)]
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
            a.bones += as_context(nb)
            a.limbs.append(Limb(tuple(o), nb[-1].p1, 0.9 * s, 0.7 * s))
    return a


def hand(body: Body, pose: Pose) -> Anatomy:
    """The whole hand with the distal radius and ulna at the bottom edge."""
    rng = np.random.default_rng(body.seed)
    s = body.size
    a = _hand_skeleton(body, pose, rng)
    a.bones += as_context(forearm_bones(body, 16.0 * s, 3.5 * s, rng))
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
        for b in forearm_bones(body, 18.0 * s, 3.4 * s, rng)
    ]
    a.field_points += [(-2.4 * s, 7.5 * s, 0.0), (2.4 * s, 7.5 * s, 0.0), (0.0, -1.6 * s, 0.0)]
    a.limbs.append(Limb((0.2, 14.0 * s, 0.0), (0.2, 1.5 * s, 0.0), 2.7 * s, 3.1 * s))
    return a
