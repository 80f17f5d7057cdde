"""`vsm-kit` subcommands: argument parsing only; each calls one library entry function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import VsmKitError


class UsageError(VsmKitError):
    """A command line argparse rejects; reported like any user error (exit 2, no usage dump)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}\n  Fix: see `{self.prog} --help`")


def _names(known) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of names drawn from `known`."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown name(s) {unknown or [text]}; choose from {','.join(known)}"
            )
        return names

    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _images(text: str) -> int | str:
    """`--verify-images`: a count, 0 included, or 'all'."""
    if text == "all":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count nor 'all'")
    return int(text)


def _demo_world(args) -> int:
    from .demo import make_demo_world

    world = make_demo_world(args.out, **_given(seed=args.seed, scale=args.scale, bases=args.bases))
    print(f"demo world written to {world.dataset}")
    return 0


def _check(args) -> int:
    from .data import check_layout

    options = _given(groups=args.datasets)
    if args.verify_images is not None:
        options["verify_images"] = None if args.verify_images == "all" else args.verify_images
    report = check_layout(args.data_dir, **options)
    print(report)
    return 0 if report.ok else 1


def _preprocess(args) -> int:
    from .preprocess import preprocess

    summary = preprocess(
        args.data_dir,
        only=args.only,
        force=args.force,
        fix_goldg_ids=args.fix_goldg_ids,
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


def _detect(args) -> int:
    import json

    from .data.images import load_rgb

    predictor = _predictor(args)
    predictor.set_image(load_rgb(args.image))
    det = predictor.detect(args.target)
    rows = [
        {"box_xyxy": [round(float(v), 1) for v in b], "score": round(float(s), 4)}
        for b, s in zip(det.boxes_xyxy[: args.top], det.scores[: args.top], strict=True)
    ]
    if args.json:
        print(json.dumps({"image": str(args.image), "target": args.target, "detections": rows}))
    else:
        for r in rows:
            x0, y0, x1, y1 = r["box_xyxy"]
            print(f"{r['score']:.4f}  {x0:8.1f} {y0:8.1f} {x1:8.1f} {y1:8.1f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .data.layout import GROUP_NAMES
    from .preprocess.run import STEPS

    parser = _Parser(
        prog="vsm-kit",
        description="Toolkit for the V* visual search model: data, preprocessing, weights, "
        "detection. Each command's --help lists its options.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-world", help="write the demo data tree and tiny weights")
    p.add_argument("--out", required=True, help="folder; the data tree goes to OUT/dataset")
    p.add_argument("--seed", type=int, help="(default 0)")
    p.add_argument("--scale", type=_positive, help="multiplies the number of images (default 1)")
    p.add_argument(
        "--bases",
        choices=("random", "pretrained"),
        help="tiny base weights: fitted to the demo's scenes (default; about 2 minutes once, "
        "then cached) or seeded random (seconds; the recipe does not learn from them)",
    )
    p.set_defaults(func=_demo_world)

    p = sub.add_parser("check", help="report which dataset files are present")
    p.add_argument("data_dir")
    p.add_argument(
        "--datasets",
        type=_names(GROUP_NAMES),
        help="comma-separated groups (default: all): " + ",".join(GROUP_NAMES),
    )
    p.add_argument(
        "--verify-images",
        type=_images,
        help="images per folder to decode fully, or 'all' (default 20)",
    )
    p.set_defaults(func=_check)

    p = sub.add_parser("preprocess", help="build the image→boxes indexes and goldG_train.json")
    p.add_argument("--data-dir", required=True)
    p.add_argument(
        "--only",
        type=_names(tuple(STEPS)),
        help="comma-separated steps: coco,objects365,goldg (default: all)",
    )
    p.add_argument("--force", action="store_true", help="rebuild outputs that are up to date")
    p.add_argument(
        "--fix-goldg-ids",
        action="store_true",
        help="GoldG: attach each annotation to its own file's image (the original does not)",
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

    p = sub.add_parser("detect", help="boxes (pixel xyxy) and scores of a target in an image")
    _model_image_target(p)
    p.add_argument("--top", type=_positive, default=5, help="how many boxes to print")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_detect)

    p = sub.add_parser("train", help="train under the deepspeed launcher (GPUs or CPU ranks)")
    p.add_argument("--config", required=True, help="run YAML (see vsm_kit/configs/)")
    p.add_argument(
        "--num-gpus", type=_positive, help="ranks on this machine (default: every GPU, 1 on CPU)"
    )
    p.add_argument("--hostfile", help="DeepSpeed hostfile for several nodes")
    p.add_argument("--data-dir", help="override data.data_dir")
    p.add_argument("--weights-dir", help="override weights.dir (a demo world's weights/)")
    p.add_argument("--output-dir", help="override output_dir")
    p.add_argument("--max-steps", type=_positive, help="stop after this many optimizer steps")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, write OUTPUT_DIR/config.yaml and print the launcher command line "
        "without running it",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser("convert", help="ZeRO checkpoint of a run → fp32 safetensors")
    p.add_argument("run_dir", help="the run folder (holds config.yaml and checkpoints/)")
    _checkpoint_args(p)
    p.add_argument("--out", help="output file (default: RUN_DIR/weights_fp32.safetensors)")
    p.set_defaults(func=_convert)

    p = sub.add_parser("merge", help="merge LoRA into the base; save and verify a HF folder")
    p.add_argument("--weights", required=True, help="the converted fp32 safetensors file")
    p.add_argument("--out", required=True, help="the merged model folder to write")
    p.add_argument("--base", help="LLaVA base folder (default: from the run's config)")
    p.add_argument("--config", help="the run's config.yaml (default: beside --weights)")
    _merge_args(p)
    p.set_defaults(func=_merge)

    p = sub.add_parser("convert-merge", help="convert, then merge, a run folder")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="the merged model folder to write")
    _checkpoint_args(p)
    _merge_args(p)
    p.set_defaults(func=_convert_merge)

    p = sub.add_parser("search", help="V* guided search for a target in a (large) image")
    _model_image_target(p)
    _search_options(p)
    p.add_argument("--out", help="folder for result.json and the pictures")
    p.set_defaults(func=_search)

    p = sub.add_parser(
        "search-eval",
        help="search every target of a V*Bench-format folder; success rate at IoU > 0.5",
    )
    _model_args(p)
    _search_options(p)
    p.add_argument(
        "--bench", required=True, help="folder of image folders, each image beside its .json"
    )
    p.add_argument("--limit", type=_positive, help="search only the first N targets")
    p.add_argument(
        "--log",
        required=True,
        help="the per-target JSON-lines file to write (required: the bench folder is left "
        "untouched, it may be read-only, and nothing is written to the current folder)",
    )
    p.set_defaults(func=_search_eval)
    return parser


def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    """Which checkpoint of a run `convert` and `convert-merge` export."""
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--tag", help="checkpoint tag, e.g. global_step500 (default: the best by val det_acc)"
    )
    which.add_argument("--last", action="store_true", help="the last checkpoint, not the best")


def _checkpoint(args) -> dict:
    from .convert import LAST

    return _given(tag=LAST if args.last else args.tag)


def _merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype",
        help="saved dtypes: mixed (LLM bf16, VSM heads fp32, as the original; the default), "
        "or bf16, fp16, fp32 for every tensor",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the output comparison")


def _given(**kwargs) -> dict:
    """The options given on the command line; the library's defaults stand for the others."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _model_args(p: argparse.ArgumentParser) -> None:
    """The arguments every command that loads a merged model takes (see `_predictor`)."""
    p.add_argument("--model", required=True, help="merged VSM folder")
    p.add_argument(
        "--clip",
        help="CLIP vision tower: a folder or a cached hub name (default: the one the model's "
        "config names, found locally)",
    )
    p.add_argument(
        "--owlvit",
        help="OWL-ViT folder giving the detector's architecture (default: read from the "
        "checkpoint's tensors)",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")


def _model_image_target(p: argparse.ArgumentParser) -> None:
    """The arguments every command that asks a merged model about an image takes."""
    _model_args(p)
    p.add_argument("--image", required=True)
    p.add_argument("--target", required=True, help="what to find, e.g. 'red cup'")


def _search_options(p: argparse.ArgumentParser) -> None:
    """The search settings `search` and `search-eval` share (see `_search_config`)."""
    p.add_argument(
        "--minimum-size", type=_positive, help="smallest patch side to split (default 224)"
    )
    p.add_argument(
        "--batch-siblings",
        action="store_true",
        help="locate a patch's queued siblings in the same batched call (same path; pays on GPUs)",
    )


def _search_config(args):
    import dataclasses

    from .search import SearchConfig

    config = SearchConfig()
    if args.minimum_size:
        config = dataclasses.replace(config, minimum_size=args.minimum_size)
    return config


def _predictor(args):
    from .model.predictor import VSMPredictor

    return VSMPredictor.from_pretrained(
        args.model, clip=args.clip, owlvit=args.owlvit, device=args.device
    )


def _search(args) -> int:
    import json

    from .data.images import load_rgb
    from .search import visual_search
    from .search.outputs import write_result

    predictor = _predictor(args)
    image = load_rgb(args.image)
    result = visual_search(
        predictor, image, args.target, _search_config(args), batch_siblings=args.batch_siblings
    )
    summary = {k: v for k, v in result.to_dict().items() if k != "steps"}
    print(json.dumps(summary))
    if args.out:
        print(f"wrote {write_result(result, image, args.out)}")
    return 0


def _search_eval(args) -> int:
    import json

    from .search.bench import evaluate_bench, load_bench, write_log

    bench = load_bench(args.bench)  # a bad annotation fails before the model loads
    for name in bench.unpaired:
        print(f"warning: {name} has no image/json partner; not searched", file=sys.stderr)
    report = evaluate_bench(
        _predictor(args),
        bench,
        _search_config(args),
        batch_siblings=args.batch_siblings,
        limit=args.limit,
    )
    print(json.dumps(report.to_dict()))
    print(f"{report}; per-target log: {write_log(report, args.log)}")
    return 0


def _convert(args) -> int:
    from .convert import convert

    print(convert(args.run_dir, out=args.out, **_checkpoint(args)))
    return 0


def _merge(args) -> int:
    from pathlib import Path

    from .convert import merge
    from .train.config import RunConfig

    config = RunConfig.load(args.config or Path(args.weights).parent / "config.yaml")
    if args.base:
        config = config.replace(**{"weights.base": args.base})
    options = _given(dtype=args.dtype)
    print(merge(config, args.weights, args.out, verify=not args.no_verify, **options))
    return 0


def _convert_merge(args) -> int:
    from .convert import convert_merge

    converted, merged = convert_merge(
        args.run_dir,
        args.out,
        verify=not args.no_verify,
        **_checkpoint(args),
        **_given(dtype=args.dtype),
    )
    print(converted)
    print(merged)
    return 0


def _train(args) -> int:
    from .train.config import RunConfig
    from .train.launch import TrainingRun, dry_run

    overrides = {
        "data.data_dir": args.data_dir,
        "weights.dir": args.weights_dir,
        "output_dir": args.output_dir,
        "max_steps": args.max_steps,
    }
    config = RunConfig.load(args.config).replace(
        **{k: v for k, v in overrides.items() if v is not None}
    )
    if args.dry_run:
        print(dry_run(config, num_gpus=args.num_gpus, hostfile=args.hostfile))
        return 0
    run = TrainingRun.start(config, num_gpus=args.num_gpus, hostfile=args.hostfile)
    print(f"run folder: {run.output_dir} (log: {run.output_dir / 'train.log'})")
    try:
        status = run.follow()
    except KeyboardInterrupt:
        run.stop()
        status = "stopped"
    if status != "finished":
        print(run.log_tail(30), file=sys.stderr)
        print(f"error: training {status}: {run.error or 'see train.log'}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error (`VsmKitError`, a bad argument) prints one message and
    returns 2, Ctrl-C one line and 130 (the shell's code for SIGINT). Anything else is a bug
    and keeps its traceback."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except VsmKitError as err:  # an interrupted preprocess is one: it says what was kept
        print(f"error: {err}", file=sys.stderr)
        return 130 if isinstance(err, KeyboardInterrupt) else 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
