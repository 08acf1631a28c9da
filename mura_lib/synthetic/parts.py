"""The seven MURA body parts: which builder draws each one.

A builder takes a patient's build (:class:`~mura_lib.synthetic.skeleton.Body`) and a view's
pose and returns the :class:`~mura_lib.synthetic.anatomy.Anatomy` to project. The point is a
shape a reader recognises at a glance, not anatomical accuracy.
"""

from __future__ import annotations

from collections.abc import Callable

from mura_lib.synthetic.anatomy import Anatomy, Pose
from mura_lib.synthetic.arm import elbow, forearm, humerus, shoulder
from mura_lib.synthetic.hand import finger, hand, wrist
from mura_lib.synthetic.skeleton import Body

__all__ = ["BUILDERS", "Body"]

BUILDERS: dict[str, Callable[[Body, Pose], Anatomy]] = {
    "ELBOW": elbow,
    "FINGER": finger,
    "FOREARM": forearm,
    "HAND": hand,
    "HUMERUS": humerus,
    "SHOULDER": shoulder,
    "WRIST": wrist,
}
