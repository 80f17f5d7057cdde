"""The OWL-ViT and CLIP pixel tensors equal transformers 4.31's processors' (the original's), for
demo images of several shapes and kinds, decoded once as the training pipeline does.

Known exception: an EXIF-rotated JPEG. The original decodes twice, OpenCV for OWL-ViT (applies
the rotation) and PIL for CLIP (does not); vsm_kit decodes once without rotation, as the
annotations' pixel grid is stored, so it matches the original's PIL (CLIP) branch on both."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from vsm_kit.model.image_inputs import ImageInputs, decode_rgb

from .sideenv import run_side

ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def images(demo_world, tmp_path_factory):
    """name → path: demo pictures re-cut to the shapes and kinds the real data has."""
    src = sorted((demo_world.dataset / "coco2017" / "train2017").glob("*.jpg"))[0]
    rgb = Image.open(src).convert("RGB")
    out = tmp_path_factory.mktemp("pixels")
    shapes = {
        "landscape": ((1024, 683), "JPEG"),
        "portrait": ((480, 853), "JPEG"),
        "small": ((150, 97), "JPEG"),
        "square": ((224, 224), "PNG"),
    }
    paths = {}
    for name, (size, fmt) in shapes.items():
        paths[name] = out / f"{name}.{fmt.lower()}"
        rgb.resize(size, Image.BILINEAR).save(paths[name], fmt, quality=90)
    paths["grayscale"] = out / "grayscale.jpg"
    rgb.convert("L").save(paths["grayscale"], "JPEG", quality=90)
    rgba = rgb.resize((300, 500)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    paths["alpha"] = out / "alpha.png"
    rgba.save(paths["alpha"])
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # rotate 90° clockwise to display
    paths["exif"] = out / "exif.jpg"
    rgb.resize((640, 400)).save(paths["exif"], "JPEG", quality=90, exif=exif.tobytes())
    return paths


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    npz = tmp_path_factory.mktemp("ref") / "pixels.npz"
    reply = run_side(
        {"images": [str(p) for p in images.values()], "npz": str(npz), "owl": 768, "clip": 224}
    )
    arrays = np.load(npz)
    return reply, {name: (arrays[f"owl{k}"], arrays[f"clip{k}"]) for k, name in enumerate(images)}


@pytest.mark.parametrize("name", ["landscape", "portrait", "small", "square", "grayscale", "alpha"])
def test_pixels_equal_the_original_processors(images, reference, name):
    reply, ref = reference
    assert reply["transformers"] == "4.31.0"
    owl, clip = ImageInputs().both(decode_rgb(images[name]))
    assert owl.shape == (3, 768, 768) and clip.shape == (3, 224, 224)
    assert torch.equal(owl, torch.from_numpy(ref[name][0])), name
    assert torch.equal(clip, torch.from_numpy(ref[name][1])), name


def test_exif_rotated_jpeg_matches_the_pil_branch(images, reference):
    """Equal to the original's PIL (CLIP) branch; its OpenCV branch would see the rotated
    image, which has another shape, so its OWL-ViT input differs."""
    _, ref = reference
    owl, clip = ImageInputs().both(decode_rgb(images["exif"]))
    assert torch.equal(owl, torch.from_numpy(ref["exif"][0]))
    assert torch.equal(clip, torch.from_numpy(ref["exif"][1]))
    rotated = np.asarray(ImageOps.exif_transpose(Image.open(images["exif"])).convert("RGB"))
    assert rotated.shape[:2] == (640, 400)
    assert not torch.equal(ImageInputs().owl(rotated), owl)
