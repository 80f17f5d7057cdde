"""Where a VSM's CLIP tower is: named in its config as the original names it, found offline.

The original's merged config names the tower by its hub name (`openai/clip-vit-large-patch14`)
and never holds a path of the machine that saved it; `tower_name` chooses that name for a save
and `find_clip` turns it back into a local folder without downloading anything."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import MissingDataError

HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# our key in a saved config: the CLIP folder relative to the model folder (never absolute), so
# the folder still finds its tower on the machine that saved it
CLIP_HINT_KEY = "vsm_vision_tower_relpath"


def tower_name(clip: str | Path) -> str:
    """How a saved config names the CLIP tower `clip` (a folder or a hub name): its hub name
    `org/name` when the folder is a hub-cache snapshot or its config declares one, else the
    folder's own name; never a path of this machine."""
    path = Path(clip).expanduser()
    if not path.is_dir():
        return str(clip)
    path = path.resolve()
    cached = re.search(r"models--(.+?)--([^/]+)/snapshots/[^/]+$", path.as_posix())
    if cached:
        return f"{cached[1]}/{cached[2]}"
    declared = _read_json(path / "config.json").get("_name_or_path") or ""
    return declared if HUB_NAME.fullmatch(declared) else path.name


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").exists()


def _hub_snapshot(name: str) -> Path | None:
    """The locally cached snapshot of hub repo `name`, or None; never downloads."""
    if not HUB_NAME.fullmatch(name):
        return None
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached, or a name the hub client rejects
        return None
    return path if _is_model_folder(path) else None


def find_clip(folder: str | Path, config: dict, clip: str | Path | None = None) -> Path:
    """The local CLIP tower folder for the model in `folder`, tried in this order: `clip` (a
    folder or a cached hub name); the config's `vision_tower` as a path (absolute, or relative
    to the model folder); our relative-path record of the folder the model was saved with; the
    name in the local Hugging Face cache; a folder of the name's last part beside the model
    folder or beside its parent. Nothing is downloaded; the error lists where it looked."""
    folder = Path(folder).absolute()
    looked: list[str] = []

    def first(*candidates: Path | None) -> Path | None:
        for cand in candidates:
            if cand is not None and _is_model_folder(cand):
                return cand.resolve()
            if cand is not None:
                looked.append(str(cand))
        return None

    if clip:
        found = first(Path(clip).expanduser()) or _hub_snapshot(str(clip))
        if found is None:
            raise MissingDataError(
                Path(clip),
                "CLIP vision tower given as --clip (clip=)",
                "give a folder holding the tower's config.json and weights, or a hub name "
                "cached on this machine",
            )
        return found
    name = config.get("vision_tower") or config.get("mm_vision_tower") or ""
    hint = config.get(CLIP_HINT_KEY)
    as_path = Path(name).expanduser()
    found = first(
        (as_path if as_path.is_absolute() else folder / name) if name else None,
        folder.resolve() / hint if hint else None,  # relative to where it was saved
    )
    if found is None and HUB_NAME.fullmatch(name):
        from huggingface_hub import constants

        found = _hub_snapshot(name)
        looked.append(f"the Hugging Face cache {constants.HF_HUB_CACHE} for {name}")
    base = Path(name.rstrip("/")).name
    if found is None and base:
        found = first(folder.parent / base, folder.parent.parent / base)
    if found is None:
        beside = f", or put it beside the model folder as {base}/" if base else ""
        raise MissingDataError(
            Path(name or "(config.json names no vision_tower)"),
            "CLIP vision tower",
            f"pass its folder with --clip (Python: clip=...){beside}. Looked in: "
            + "; ".join(looked),
        )
    return found
