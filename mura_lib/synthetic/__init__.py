"""Synthetic radiographs in the exact MURA-v1.1 layout.

Real MURA may not be redistributed, so the project ships its own sample: seven body parts
drawn as projected 3-D skeletons (long bones with cortex and canal, phalanges, carpals,
joints, soft tissue), films with noise, uneven exposure and an L/R marker, and abnormal
studies carrying a fracture, orthopaedic hardware, a lytic lesion or soft-tissue swelling of
graded subtlety. The ground truth of every image goes to ``synthetic_truth.csv``.

    write_mura_tree(out_dir, profile="sample", seed=0)  # the committed data_sample/
    write_mura_tree(out_dir, profile="table1")          # MURA's exact counts, tiny films
    write_benchmark_images(out_dir, n_images=2000)      # 512-px films for loader timings

Command line: ``python -m mura_lib.synthetic --profile sample --out data_sample --overwrite``.
"""

from mura_lib.synthetic.profiles import PROFILES, PartCounts, Profile, scaled_profile
from mura_lib.synthetic.tree import (
    TRUTH_COLUMNS,
    TRUTH_NAME,
    write_benchmark_images,
    write_mura_tree,
)

__all__ = [
    "PROFILES",
    "TRUTH_COLUMNS",
    "TRUTH_NAME",
    "PartCounts",
    "Profile",
    "scaled_profile",
    "write_benchmark_images",
    "write_mura_tree",
]
