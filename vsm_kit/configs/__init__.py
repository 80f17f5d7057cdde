"""The shipped run recipes (`<name>.yaml` beside this file), by name: `names()`, `path(name)`,
`load(name)` — so notebooks, tests and scripts need not build the path themselves."""

from __future__ import annotations

from pathlib import Path

from ..errors import VsmKitError

FOLDER = Path(__file__).parent


class UnknownRecipeError(VsmKitError, KeyError):
    """A recipe name that is not shipped."""

    def __str__(self) -> str:
        return str(self.args[0])


def names() -> list[str]:
    """The shipped recipes' names, sorted ("demo_tiny_cpu", "vsm_7b_lora", …)."""
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def path(name: str) -> Path:
    """The YAML file of the recipe `name`."""
    if name not in names():
        raise UnknownRecipeError(
            f"no shipped recipe {name!r}. Fix: choose one of {', '.join(names())} "
            f"(the YAML files in {FOLDER}), or load your own file with RunConfig.load(path)"
        )
    return FOLDER / f"{name}.yaml"


def load(name: str):
    """The recipe `name` as a `RunConfig` (torch is imported only here, with the config)."""
    from ..train.config import RunConfig

    return RunConfig.load(path(name))
