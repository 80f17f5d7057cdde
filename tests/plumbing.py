"""The demo recipe as the plumbing tests run it: the original's data mix (every source a few steps
can touch) and the short schedule they were written for (validation and checkpoints every 5
steps). The demo recipe itself is tuned to learn; `tests/train/test_learning.py` runs it as is."""

from vsm_kit.train.config import RunConfig

PLUMBING = {
    "data.mix": RunConfig().to_dict()["data"]["mix"],
    "data.val_limit": 4,
    "optim.lr": 1e-3,
    "optim.warmup_steps": 2,
    "optim.epochs": 4,
    "optim.steps_per_epoch": 5,
    "cadence.validate_every": 5,
    "cadence.checkpoint_every": 5,
    "cadence.validate_first": False,
}
