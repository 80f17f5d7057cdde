"""Visual search: wall time per search, ours against the original's sequential way.

On the same model (default: the demo world's tiny VSM on the CPU) and the same V*Bench-format
images (default: the demo world's `vstar_bench/`), runs for every target:
(a) a baseline that calls the model as the original `visual_search.py` does: every call
re-encodes its patch (OWL-ViT and CLIP towers), detection and segmentation generate their answer
"Sure, [LOC]." token by token without a key/value cache (one full forward over the growing
sequence per token, the [LOC] state read from the last one), the context question is answered by
uncached greedy generation (`VSMPredictor.answer(use_cache=False)`: one full forward per token,
image features inserted again; transformers 5's `generate(use_cache=False)` was found to keep a
key/value cache all the same, so it is not used), one call at a time;
(b) ours: `VSMPredictor` encodes each patch once and keeps it, reads the [LOC] state from one
forward over the known answer, decodes no mask on patches too small to split, answers with a
key/value cache;
(c) ours with `batch_siblings=True` (queued siblings located in the same batched call).
The three take turns target by target, each starting with an empty encoding cache. Prints per
search the model calls, patch encodes, language-model forwards with their fewest and most
positions (a cached step has 1; the baseline's never fall below the prompt, which shows it
recomputes), wall time and the ratios to the baseline; exits 1 unless all three visit the same
patches in the same order and end with the same box. How the baseline was checked: the forward
counts and lengths printed (one per generated token, each over the whole sequence so far) and
one encode per model call; by hand, its uncached answers equal the cached ones token for token
on the demo's V*Bench images.

The demo's tiny VSM is bound by its vision towers (a 64-wide language model); in the real 7B VSM
the language model costs ~7× the towers' FLOPs per call. `--arch lm-heavy` keeps the tiny towers
and gives the language model that share (5 layers × 512 wide, random weights) — the closest a
CPU gets to the real balance. A random model never ends its answers, so answers are capped at
`--answer-tokens` (default 24, a typical location answer) in every mode alike; its random heads
may be confident anywhere, so `--confidence-high 1` (never confident: every patch down to the
minimum size is visited, then the fallback) keeps its searches the same length as the tiny's.
CPU time is printed beside wall time: steadier on a shared machine; torch runs one CPU thread by
default, as tiny kernels on a busy machine lose more to thread hand-offs than they gain.
`--smoke`: one target, searched down to 512 px, 4-token answers (seconds; for the tests).
Usage: .venv/bin/python benchmarks/bench_search.py [--arch tiny|lm-heavy] [--bench DIR]
       [--model DIR --owlvit DIR] [--device cpu|cuda] [--limit N] [--minimum-size PX] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vsm_kit.data.images import load_rgb
from vsm_kit.demo.world import ensure_demo_world
from vsm_kit.model.architecture import LlamaArch
from vsm_kit.model.conversation import render, tokenize_with_image
from vsm_kit.model.predictor import LOCATE, VSMPredictor
from vsm_kit.model.vsm import VSMForCausalLM, llama_config
from vsm_kit.search import SearchConfig, visual_search


class OriginalStyle:
    """The original's call pattern over the same predictor, so results are the same numbers.

    The extra work the original does is done for real (encodes, uncached generation steps); the
    last generation step of "Sure, [LOC]." is the predictor's own pass, which gives the result."""

    def __init__(self, predictor: VSMPredictor):
        self.p, self.patch = predictor, None

    def set_image(self, patch: np.ndarray) -> None:
        self.patch = patch  # the original only crops here; each call encodes again

    def _encode(self) -> None:
        self.p.clear_cache()
        self.p.set_image(self.patch)

    @torch.no_grad()
    def _uncached_steps(self, phrase: str) -> None:
        """The generation steps before the one that emits the end of "Sure, [LOC].": each a
        forward over the prompt and the answer tokens so far, without a cache."""
        tok, question = self.p.tokenizer, f"<image>\n{LOCATE.format(phrase)}"
        prompt = tokenize_with_image(render([question, None]), tok)
        full = tokenize_with_image(render([question, "Sure, [LOC]."]), tok)
        ids = torch.tensor([full], device=self.p.device)
        clip = self.p._require_image()["clip"]
        for k in range(len(prompt), len(full) - 1):
            embeds, _, _ = self.p.model.embed_with_image(ids[:, :k], clip)
            self.p.model.model(inputs_embeds=embeds)

    def locate(self, target: str, cue: bool = True):
        """The original's detection call always decodes the mask too, needed or not."""
        self._encode()
        self._uncached_steps(target)
        return self.p.locate(target)

    def segment(self, phrase: str) -> np.ndarray:
        self._encode()
        self._uncached_steps(phrase)
        return self.p.segment(phrase)

    def answer(self, question: str) -> str:
        self._encode()
        return self.p.answer(question, use_cache=False)


def lm_heavy(tiny: VSMPredictor) -> VSMPredictor:
    """The tiny VSM's towers, tokenizer and heads' sizes with a 5×512 language model (random
    weights) whose FLOPs per call are ~7× the towers', as in the 7B VSM."""
    llama = LlamaArch(512, 5, 8, 1408, max_position_embeddings=1024)
    arch = dataclasses.replace(tiny.model.arch, llama=llama)
    torch.manual_seed(0)
    config = llama_config(arch, tiny.model.config.vocab_size, loc_token_idx=tiny.ids.loc)
    model = VSMForCausalLM(config, arch).to(tiny.device)
    model.loc_token_idx = tiny.ids.loc
    return VSMPredictor(model, tiny.tokenizer, tiny.ids)


def bench_targets(folder: Path, limit: int | None) -> list[tuple[Path, str]]:
    """(image, target name) for every target of every annotated image, in path order."""
    pairs = []
    for ann in sorted(folder.rglob("*.json")):
        image = next((p for p in ann.parent.glob(ann.stem + ".*") if p.suffix != ".json"), None)
        if image is not None:
            pairs += [(image, name) for name in json.loads(ann.read_text())["target_object"]]
    return pairs[:limit]


def count_forwards(predictor: VSMPredictor) -> list[int]:
    """Positions of every language-model forward from now on, appended as they run."""
    lengths: list[int] = []

    def hook(module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        lengths.append((x if x is not None else kwargs["input_ids"]).shape[1])

    predictor.model.model.register_forward_pre_hook(hook, with_kwargs=True)
    return lengths


def signature(result) -> tuple:
    return ([s.box_xywh for s in result.steps], result.found, result.box_xywh)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=("tiny", "lm-heavy"), default="tiny")
    ap.add_argument("--model", help="merged VSM folder (default: the demo world's tiny VSM)")
    ap.add_argument("--owlvit", help="OWL-ViT folder for --model")
    ap.add_argument("--clip", help="CLIP folder for --model")
    ap.add_argument("--bench", help="V*Bench-format folder (default: the demo world's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, default=4, help="targets to search")
    ap.add_argument("--minimum-size", type=int, default=224)
    ap.add_argument("--answer-tokens", type=int, default=24, help="cap on answer length")
    ap.add_argument("--confidence-high", type=float, help="default: the original's 0.5")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadiest)")
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run, for the tests")
    args = ap.parse_args()
    if args.smoke:
        args.limit, args.minimum_size, args.answer_tokens = 1, 512, 4
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        if args.model is None or args.bench is None:
            world = ensure_demo_world(Path(tmp) / "world", bases="random")  # speed only
        model = Path(args.model) if args.model else world.weights / "vsm-tiny"
        owlvit = args.owlvit or (None if args.model else world.weights / "owlvit-tiny")
        bench = Path(args.bench) if args.bench else world.dataset / "vstar_bench"
        predictor = VSMPredictor.from_pretrained(
            model, clip=args.clip, owlvit=owlvit, device=args.device
        )
        if args.arch == "lm-heavy":
            predictor = lm_heavy(predictor)
        answer = predictor.answer  # the same cap for ours and the baseline
        predictor.answer = lambda question, **kw: answer(
            question, max_new_tokens=args.answer_tokens, **kw
        )
        config = dataclasses.replace(SearchConfig(), minimum_size=args.minimum_size)
        if args.confidence_high is not None:
            config = dataclasses.replace(config, confidence_high=args.confidence_high)
        ways = {
            "baseline": lambda im, t: visual_search(OriginalStyle(predictor), im, t, config),
            "ours": lambda im, t: visual_search(predictor, im, t, config),
            "ours+batch": lambda im, t: visual_search(
                predictor, im, t, config, batch_siblings=True
            ),
        }
        totals = {name: [0, 0, 0.0, 0.0] for name in ways}  # calls, encodes run, wall, CPU s
        forwards = {name: [] for name in ways}  # positions of each language-model forward
        lengths = count_forwards(predictor)
        targets = bench_targets(bench, args.limit)
        name = f"{model.name} ({args.arch})" if args.model is None else model.name
        print(f"{len(targets)} searches on {args.device}, {name}, images from {bench}")
        differ = 0
        for k, (path, target) in enumerate(targets):
            image = load_rgb(path)
            signatures = set()
            for name in np.roll(list(ways), k):  # rotate the order against drift in load
                predictor.clear_cache()
                lengths.clear()
                encodes, t0, c0 = predictor.encodes, time.perf_counter(), time.process_time()
                result = ways[name](image, target)
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                forwards[name] += lengths
                signatures.add(repr(signature(result)))
                totals[name][0] += result.model_calls
                totals[name][1] += predictor.encodes - encodes
                totals[name][2] += seconds
                totals[name][3] += cpu
            differ += len(signatures) > 1
            same = "same path" if len(signatures) == 1 else "PATHS DIFFER"
            print(f"  {path.parent.name}/{path.name} {target!r}: {len(result.steps)} steps, {same}")
        n = max(len(targets), 1)
        _, _, base, base_cpu = totals["baseline"]
        print(
            "               calls/search  encodes/search  LM fwd/search  positions/fwd"
            "  s/search  ratio  CPU s/search  ratio"
        )
        for name, (calls, encodes, seconds, cpu) in totals.items():
            fw = forwards[name] or [0]
            span = f"{min(fw)}–{max(fw)}"
            print(
                f"  {name:>11}  {calls / n:12.1f}  {encodes / n:14.1f}  {len(fw) / n:13.1f}"
                f"  {span:>13}  {seconds / n:8.2f}  {seconds / base:4.2f}x"
                f"  {cpu / n:12.2f}  {cpu / base_cpu:4.2f}x"
            )
        if differ:
            raise SystemExit(f"{differ} of {len(targets)} searches took different paths")


if __name__ == "__main__":
    main()
