"""Command line: `python -m mura_lib {describe,train,evaluate,predict}` (also the `mura` script).

Each subcommand is a thin wrapper around library functions. Errors a user can cause are
:class:`~mura_lib.errors.MuraError`; they are printed as one message and exit with status 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

from mura_lib.errors import MuraError
from mura_lib.numerics import pinned_cpu_numerics

# Kept here rather than imported from mura_lib.inference: `mura --help` must not load torch.
TTA_CHOICES = ("none", "flip")
TTA_HELP = "test-time augmentation (default: the one the threshold was chosen with)"
LABELS_HELP = (
    "folder of relabelled train_labeled_studies.csv and/or valid_labeled_studies.csv that "
    "replace the tree's labels (default: the tree's)"
)


def _cmd_describe(args: argparse.Namespace) -> int:
    from mura_lib.data.describe import describe_mura

    print(describe_mura(args.root, labels=args.labels))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mura_lib.training.config import TrainConfig
    from mura_lib.training.train import fit

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if config.labels:  # from the working directory, as --data (TrainConfig's: the project root)
        config.labels = os.path.abspath(config.labels)
    summary = fit(args.data, args.out, config, resume=args.resume, overwrite=args.overwrite)
    summary.pop("history")
    if os.environ.get("RANK", "0") == "0":  # under torchrun: one summary, from rank 0
        print(json.dumps(summary))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mura_lib.inference.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        args.out,
        split=args.split,
        batch_size=args.batch_size,
        device=args.device,
        n_boot=args.n_boot,
        seed=args.seed,
        skip_bad_images=args.skip_bad_images,
        cache_dir=args.cache_dir or None,
        tta=args.tta,
        labels=args.labels,
    )
    study = report["study"]["overall"]
    print(
        f"{report['n_studies']} studies, {report['n_images']} images of {args.split}: "
        f"study kappa {study['kappa']}, AUROC {study['auroc']} "
        f"(threshold {report['threshold']:.3f}, {report['threshold_rule']}); "
        f"wrote {args.out}/predictions.csv and {args.out}/metrics.json"
    )
    if "labels_note" in report:
        print(f"note: {report['labels_note']}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from mura_lib.data.origin import SYNTHETIC
    from mura_lib.inference.ensemble import load_source
    from mura_lib.inference.predict import predict_paths

    # Checkpoints written before training_data was recorded carry no kind: no warning.
    source = load_source(args.checkpoint)
    kinds = [ckpt.get("training_data", {}).get("kind") for ckpt in source.checkpoints]
    if SYNTHETIC in kinds:
        who = (
            f"{kinds.count(SYNTHETIC)} of the {len(kinds)} members of {args.checkpoint} were"
            if source.is_ensemble
            else f"{args.checkpoint} was"
        )
        print(
            f"warning: {who} trained on synthetic films (mura_lib.synthetic), not radiographs: "
            "these outputs say nothing about radiographs",
            file=sys.stderr,
        )
    results = predict_paths(source, args.paths, device=args.device, cam_dir=args.cam, tta=args.tta)
    for result in results:
        print(json.dumps(result))
    return 0


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from mura_lib.inference.members import build_ensemble

    manifest = build_ensemble(
        args.members,
        args.out,
        data_root=args.data,
        labels=args.labels,
        tta=args.tta,
        device=args.device,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir or None,
    )
    threshold = manifest["threshold"]
    calibrated = (
        f"threshold {threshold:.3f} ({manifest['threshold_rule']}, TTA {manifest['tta']})"
        if threshold is not None
        else "no threshold yet: `mura evaluate` chooses one on validation studies"
    )
    print(f"wrote {args.out}: {len(manifest['members'])} members, {calibrated}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from mura_lib.evaluation.compare import compare_evaluations

    result = compare_evaluations(args.a, args.b, n_boot=args.n_boot, seed=args.seed)
    print(json.dumps(result, allow_nan=False))
    return 0


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (``--image-size``, ``--no-amp`` ...), same defaults;
    its help is the field's comment in TrainConfig, its choices those of CHOICES."""
    from mura_lib.training.config import CHOICES, TrainConfig, field_docs

    docs = field_docs()
    group = parser.add_argument_group("training parameters (see TrainConfig)")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        shown = '""' if field.default == "" else field.default
        help_text = f"{docs[field.name]} (default: {shown})".replace("%", "%%")  # argparse's %
        if isinstance(field.default, bool):
            action = argparse.BooleanOptionalAction
            group.add_argument(flag, action=action, default=field.default, help=help_text)
        elif field.name in CHOICES:
            group.add_argument(
                flag, default=field.default, choices=CHOICES[field.name], help=help_text
            )
        else:
            group.add_argument(
                flag,
                type=type(field.default),
                default=field.default,
                metavar=field.name.upper(),
                help=help_text,
            )


def build_parser(command: str | None = "train") -> argparse.ArgumentParser:
    """The command line; the training options are added only when ``command`` is ``train``.

    They are read from TrainConfig, and importing it for `mura evaluate` or `mura predict`
    would load the training package for nothing.
    """
    parser = argparse.ArgumentParser(prog="mura", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("describe", help="summarise a MURA-v1.1 tree: counts per split and part")
    p.add_argument("root", help="the MURA-v1.1 folder or its parent")
    p.add_argument("--labels", metavar="DIR", help=LABELS_HELP)
    p.set_defaults(func=_cmd_describe)

    p = sub.add_parser("train", help="train a model; writes OUT/best.pt, last.pt, history.csv")
    p.add_argument("--data", required=True, help="the MURA-v1.1 folder or its parent")
    p.add_argument("--out", required=True, help="output folder of the run")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in OUT")
    p.add_argument("--overwrite", action="store_true", help="replace the run in OUT")
    if command == "train":
        _add_train_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a split (default: valid)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="the MURA-v1.1 folder or its parent")
    p.add_argument("--out", required=True, help="writes OUT/predictions.csv and OUT/metrics.json")
    p.add_argument("--split", default="valid", choices=["train", "valid"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--skip-bad-images", action="store_true")
    p.add_argument("--cache-dir", default="", help="image cache folder (default: cache/)")
    p.add_argument("--tta", choices=TTA_CHOICES, default=None, help=TTA_HELP)
    p.add_argument("--labels", metavar="DIR", help=LABELS_HELP)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="predict image files or study folders (JSON lines)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("paths", nargs="+", help="PNG files or study folders")
    p.add_argument("--cam", metavar="DIR", help="write class activation map overlays to DIR")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", choices=TTA_CHOICES, default=None, help=TTA_HELP)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("ensemble", help="write an ensemble manifest of checkpoints (JSON)")
    p.add_argument("members", nargs="+", metavar="CKPT_OR_MANIFEST")
    p.add_argument("--out", required=True, help="the manifest to write (FILE.json)")
    p.add_argument(
        "--data",
        help="MURA root: choose the threshold on the validation studies every member held out "
        "(otherwise from the members' validation predictions when they have them)",
    )
    p.add_argument("--labels", metavar="DIR", help=LABELS_HELP)
    p.add_argument("--tta", choices=TTA_CHOICES, default="none", help="TTA of the threshold")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cache-dir", default="", help="image cache folder (default: cache/)")
    p.set_defaults(func=_cmd_ensemble)

    p = sub.add_parser("compare", help="paired comparison of two `evaluate` folders (JSON)")
    p.add_argument("a", metavar="DIR_A", help="the reference evaluation (mura evaluate --out)")
    p.add_argument("b", metavar="DIR_B", help="the evaluation compared with it, same studies")
    p.add_argument("--n-boot", type=int, default=1000, help="paired bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=_cmd_compare)
    return parser


def _kept_after_interrupt(args: argparse.Namespace) -> str:
    """What an interrupted command kept, and how to go on: the one line Ctrl-C prints."""
    if args.command == "train":
        return (
            f"{args.out}/last.pt keeps the last finished epoch; continue with the same "
            "command and --resume"
        )
    if args.command == "evaluate":
        return (
            f"{args.out} holds no complete evaluation (its metrics.json is written last); "
            "run the command again"
        )
    if args.command == "ensemble":
        return f"{args.out} was not written; run the command again"
    return "nothing was written that a later run would trust"


def _command(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (its first word that is not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    try:
        # Before any command imports torch: a CPU run's arithmetic is the same on every
        # x86-64 CPU with AVX2 (see mura_lib.numerics).
        with pinned_cpu_numerics(getattr(args, "device", "auto")):
            return args.func(args)
    except MuraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `mura describe ROOT | head`: the reader left, not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (silences the flush at exit)
        return 0
    except KeyboardInterrupt:
        print(f"interrupted: {_kept_after_interrupt(args)}", file=sys.stderr)
        return 130
