"""Building blocks shared by the body parts: a patient's build and two bone groups.

The carpus appears on hand, wrist and forearm films, the radius and ulna on hand, wrist,
forearm and elbow films; they are drawn here once. Measurements are rough adult values in
centimetres (y along the limb, x across it, z front to back).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mura_lib.synthetic.anatomy import Blob, Bone


@dataclass(frozen=True)
class Body:
    """One patient's build: overall size, skeletal maturity and a seed for proportions."""

    size: float  # 1.0 = average adult
    child: bool  # open growth plates
    seed: int


def jitter(rng: np.random.Generator, x: float, rel: float = 0.06) -> float:
    """`x` changed by up to `rel` either way: one patient's proportions."""
    return float(x * (1.0 + rel * rng.uniform(-1, 1)))


def as_context(bones: list[Bone]) -> list[Bone]:
    """The same bones as context: cut by the film's edge, never framed, never abnormal."""
    return [replace(b, core=False, target=False) for b in bones]


def carpals(cx: float, cy: float, s: float) -> list[Blob]:
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


def forearm_bones(body: Body, top: float, bottom: float, rng: np.random.Generator) -> list[Bone]:
    """Radius (thumb side, -x, wide distally) and ulna (+x, wide proximally), elbow at y=`top`.

    The distal radius ends in a broad, flat articular surface: a shaft plus a transverse bar.
    """
    s = body.size
    ph = (0.97,) if body.child else ()
    r_mid = jitter(rng, 0.62 * s)
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
            jitter(rng, 0.55 * s),
            (1.15 * s, 0.62 * s),
            0.4,
            physes=ph,
        ),
    ]
