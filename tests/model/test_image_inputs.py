"""The direct image path equals the transformers processors bit for bit."""

import numpy as np
import pytest
import torch

from vsm_kit.data.images import decode_rgb, load_rgb
from vsm_kit.model.image_inputs import PAD_RGB, ImageInputs, expand_to_square


def _processors(inputs: ImageInputs, image: np.ndarray):
    owl = inputs.owl_processor(images=image, return_tensors="pt")["pixel_values"][0]
    h, w = image.shape[:2]
    square = np.empty((max(h, w), max(h, w), 3), np.uint8)
    square[:] = PAD_RGB
    square[:h, :w] = image
    clip = inputs.clip_processor(images=square, return_tensors="pt")["pixel_values"][0]
    return owl, clip


@pytest.mark.parametrize("shape", [(480, 640), (768, 1024), (500, 333), (224, 224), (37, 1000)])
def test_direct_path_equals_the_processors(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    inputs = ImageInputs()
    owl, clip = inputs.both(image)
    ref_owl, ref_clip = _processors(inputs, image)
    assert owl.shape == (3, 768, 768) and clip.shape == (3, 224, 224)
    assert torch.equal(owl, ref_owl) and torch.equal(clip, ref_clip)


def test_one_decode_feeds_both_inputs_like_pil(demo_world):
    path = next((demo_world.dataset / "coco2017" / "train2017").glob("*.jpg"))
    inputs = ImageInputs(owl_size=96, clip_size=32)
    tensor_path = inputs.both(decode_rgb(path))
    pil_path = inputs.both(load_rgb(path))
    assert all(torch.equal(a, b) for a, b in zip(tensor_path, pil_path, strict=True))


def test_expand_to_square_pads_right_and_bottom():
    image = torch.full((3, 2, 4), 7, dtype=torch.uint8)
    square = expand_to_square(image)
    assert square.shape == (3, 4, 4)
    assert (square[:, :2] == 7).all()
    assert square[:, 2:, :].amax((1, 2)).tolist() == list(PAD_RGB)
    assert square[:, 2:, :].amin((1, 2)).tolist() == list(PAD_RGB)
