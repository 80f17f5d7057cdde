"""The hybrid training mix: groups and sources drawn at their rates, seeded per sample index.

Sample `i` is a pure function of `(seed, i)`, so every dataloader worker and every rank draws
the same sample for the same index, and resuming at a step resumes the exact data stream:
`StepSampler` gives micro-step m of rank r the indices [(m·W + r)·b, (m·W + r + 1)·b).

An image (or mask file) that cannot be read mid-epoch does not stop the run: the sample is
re-drawn (again a pure function of `(seed, i, attempt)`), so every rank still gets full
micro-batches and stays in step, and the skipped paths travel with the sample into the batch
(`skipped_images`) for the engine to count. The original crashes there instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Sampler

from ..data.layout import check_layout
from ..data.sources import Source, open_source
from ..errors import CorruptImageError, MissingDataError, VsmKitError
from ..model.image_inputs import ImageInputs, decode_rgb
from .config import GroupMix
from .samples import Sample, build_sample

MAX_DRAWS = 50  # records without a usable target are re-drawn (the original recursed)


class DataTreeError(VsmKitError):
    """Sources of the mix cannot be read; the message holds the layout report."""


class HybridDataset(Dataset):
    """`dataset[i]` → a `Sample` with its two image inputs, resized uint8 (the image is decoded
    once; `ImageInputs.normalise` finishes them on the training device)."""

    def __init__(
        self,
        data_dir: str | Path,
        mix: dict[str, GroupMix],
        seed: int = 0,
        targets_per_sample: int = 3,
        image_inputs: ImageInputs | None = None,
    ):
        self.seed = seed
        self.k = targets_per_sample
        self.inputs = image_inputs or ImageInputs()
        self.sources: dict[str, Source] = {}
        failed = {}
        for g in mix.values():
            for name in g.sources:
                try:
                    self.sources[name] = open_source(name, data_dir)
                except VsmKitError as err:
                    failed[name] = str(err)
        if failed:
            report = check_layout(data_dir, groups=list(mix), verify_images=0)
            reasons = "\n".join(f"- {n}: {msg}" for n, msg in failed.items())
            raise DataTreeError(f"cannot read {', '.join(failed)}:\n{reasons}\n\n{report}")
        self.groups = list(mix)
        self.group_p = _normalise([mix[g].rate for g in self.groups])
        self.source_names, self.source_p = {}, {}
        for g, m in mix.items():
            names = [n for n in m.sources if not m.by_size or len(self.sources[n])]
            weights = [len(self.sources[n]) if m.by_size else m.sources[n] for n in names]
            self.source_names[g], self.source_p[g] = names, _normalise(weights)

    def draw(self, i: int, attempt: int = 0) -> Sample:
        """Sample i without its image inputs (cheap: no decoding); `attempt` > 0 draws the
        replacement of a sample whose image could not be read."""
        rng = np.random.default_rng((self.seed, i, attempt) if attempt else (self.seed, i))
        # as the original, a record without a usable target re-draws inside its group (source
        # and image), so the group rates hold
        g = self.groups[rng.choice(len(self.groups), p=self.group_p)]
        for _ in range(MAX_DRAWS):
            name = self.source_names[g][rng.choice(len(self.source_names[g]), p=self.source_p[g])]
            source = self.sources[name]
            if not len(source):
                continue
            sample = build_sample(source[int(rng.integers(len(source)))], source, rng, self.k)
            if sample is not None:
                return sample
        raise DataTreeError(
            f"sample {i}: no usable record of group {g} in {MAX_DRAWS} draws; check the mix"
        )

    def __getitem__(self, i: int) -> Sample:
        skipped = []
        for attempt in range(MAX_DRAWS):
            try:
                sample = self.draw(i, attempt)
                sample.images, sample.images_clip = self.inputs.resize(
                    decode_rgb(sample.image_path)
                )
            except (CorruptImageError, MissingDataError) as err:
                skipped.append(str(err.path))
                continue
            sample.skipped_images = skipped
            return sample
        raise DataTreeError(
            f"sample {i}: {MAX_DRAWS} draws in a row hit unreadable files (the last: "
            f"{skipped[-1]}); check the data tree with `vsm-kit check --verify-images`"
        )


class StepSampler(Sampler[list[int]]):
    """Index batches of one rank from micro-step `start` on (endless when `stop` is None)."""

    def __init__(
        self, micro_batch: int, rank: int = 0, world_size: int = 1, start: int = 0, stop=None
    ):
        self.b, self.rank, self.world = micro_batch, rank, world_size
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[list[int]]:
        m = self.start
        while self.stop is None or m < self.stop:
            first = (m * self.world + self.rank) * self.b
            yield list(range(first, first + self.b))
            m += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless StepSampler has no length")
        return max(0, self.stop - self.start)


def _normalise(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()
