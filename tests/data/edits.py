"""Small edits of a private demo data tree (`world_copy`) that reproduce rare real cases."""

import json

from vsm_kit.jsonio import load_json


def drop_coco_boxes(dataset, file_name: str, category: str) -> None:
    """Remove every COCO-2017 instance box of `category` on image `file_name` (the COCO-Stuff
    label map still paints the class: a class without boxes, which the original asserts on)."""
    path = dataset / "coco2017/annotations/instances_train2017.json"
    data = load_json(path)
    (image_id,) = [im["id"] for im in data["images"] if im["file_name"] == file_name]
    (cat,) = [c["id"] for c in data["categories"] if c["name"] == category]
    data["annotations"] = [
        a for a in data["annotations"] if (a["image_id"], a["category_id"]) != (image_id, cat)
    ]
    path.write_text(json.dumps(data))
