"""`vsm-kit` subcommands: argument parsing only; each calls one library entry function."""

from __future__ import annotations

import argparse
import sys

from .errors import VsmKitError


def _demo_world(args) -> int:
    from .demo import make_demo_world

    world = make_demo_world(args.out, seed=args.seed, scale=args.scale)
    print(f"demo world written to {world.dataset}")
    return 0


def _check(args) -> int:
    from .data import check_layout

    groups = [g.strip() for g in args.datasets.split(",") if g.strip()]
    verify = None if args.verify_images == "all" else int(args.verify_images)
    report = check_layout(args.data_dir, groups, verify_images=verify)
    print(report)
    return 0 if report.ok else 1


def _preprocess(args) -> int:
    from .preprocess import preprocess

    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    summary = preprocess(
        args.data_dir,
        only=only,
        force=args.force,
        compat_original=args.compat_original,
        check_images=args.check_images,
    )
    print(summary)
    return 0


def _apply_delta(args) -> int:
    from .model.delta import apply_delta

    r = apply_delta(args.base, args.delta, args.out)
    print(
        f"wrote {r.out}: {r.added} tensors summed, {len(r.grown)} grown "
        f"({', '.join(r.grown) or '-'}), {len(r.kept_whole)} kept from the delta, "
        f"{len(r.base_only)} base-only tensors left out"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .data.layout import GROUP_NAMES

    parser = argparse.ArgumentParser(prog="vsm-kit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-world", help="write the embedded demo data tree")
    p.add_argument("--out", required=True, help="folder; the data tree goes to OUT/dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=1, help="multiplies the number of images")
    p.set_defaults(func=_demo_world)

    p = sub.add_parser("check", help="report which dataset files are present")
    p.add_argument("data_dir")
    p.add_argument(
        "--datasets",
        default=",".join(GROUP_NAMES),
        help="comma-separated groups: " + ",".join(GROUP_NAMES),
    )
    p.add_argument(
        "--verify-images", default="20", help="images per folder to decode fully, or 'all'"
    )
    p.set_defaults(func=_check)

    p = sub.add_parser("preprocess", help="build the image→boxes indexes and goldG_train.json")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--only", help="comma-separated steps: coco,objects365,goldg (default: all)")
    p.add_argument("--force", action="store_true", help="rebuild outputs that are up to date")
    p.add_argument(
        "--compat-original",
        action="store_true",
        help="GoldG: attach annotations exactly as the original code (see docs)",
    )
    p.add_argument(
        "--check-images",
        action="store_true",
        help="Objects365: report annotated images absent on disk",
    )
    p.set_defaults(func=_preprocess)

    p = sub.add_parser("apply-delta", help="rebuild LLaVA weights from a LLaMA base + delta")
    p.add_argument("--base", required=True, help="LLaMA base folder")
    p.add_argument("--delta", required=True, help="LLaVA delta folder")
    p.add_argument("--out", required=True, help="output folder (safetensors)")
    p.set_defaults(func=_apply_delta)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VsmKitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
