"""``python -m mura_lib.synthetic``: write a synthetic MURA-v1.1 tree.

Examples:
    python -m mura_lib.synthetic --profile sample --out data_sample --overwrite
    python -m mura_lib.synthetic --profile table1 --out cache/table1
    python -m mura_lib.synthetic --profile table1 --full-size --n-jobs -1 --out benchmarks/data/t1
    python -m mura_lib.synthetic --profile table1 --full-size --n-images 5000 --out /tmp/t1-5k
    python -m mura_lib.synthetic --benchmark 2000 --out benchmarks/data
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from mura_lib.errors import MuraError
from mura_lib.synthetic.tree import write_benchmark_images, write_mura_tree


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mura_lib.synthetic",
        description="Write a synthetic data set in the MURA-v1.1 layout.",
    )
    parser.add_argument(
        "--profile",
        default="sample",
        choices=["sample", "table1"],
        help="sample: the committed sample; table1: MURA's exact counts",
    )
    parser.add_argument("--out", required=True, help="parent folder of MURA-v1.1/")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same pixels")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing MURA-v1.1/ in --out"
    )
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel workers (-1: all)")
    parser.add_argument(
        "--anatomy",
        action="store_true",
        help="table1: draw real anatomy instead of 32-px placeholder films",
    )
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="table1: MURA-sized films (long side 512 px, anatomy; ~10 films/s per core)",
    )
    parser.add_argument(
        "--n-images",
        type=int,
        metavar="N",
        help="only a subset of about N films (whole patients, each split its share)",
    )
    parser.add_argument(
        "--benchmark",
        type=int,
        metavar="N",
        help="instead of a profile: N train images, 512 px, for loader timings",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        if args.benchmark is not None:
            root = write_benchmark_images(
                args.out,
                args.benchmark,
                seed=args.seed,
                n_jobs=args.n_jobs,
                overwrite=args.overwrite,
            )
        else:
            root = write_mura_tree(
                args.out,
                args.profile,
                seed=args.seed,
                n_jobs=args.n_jobs,
                overwrite=args.overwrite,
                anatomy=args.anatomy or None,
                full_size=args.full_size,
                n_images=args.n_images,
            )
    except MuraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n_images = sum(
        sum(1 for _ in open(root / f"{split}_image_paths.csv")) for split in ("train", "valid")
    )
    print(f"wrote {n_images} images to {root} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
