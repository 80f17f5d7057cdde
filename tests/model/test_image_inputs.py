"""The image inputs: PIL's bicubic resize and the processors' arithmetic, from one decode.
(Equality with transformers 4.31's processors themselves: tests/compat/test_pixels.py.)"""

import numpy as np
import pytest
import torch
from PIL import Image

from vsm_kit.data.images import load_rgb
from vsm_kit.model.image_inputs import (
    CLIP_MEAN,
    CLIP_STD,
    PAD_RGB,
    ImageInputs,
    decode_rgb,
    expand_to_square,
)


def _numpy_reference(image: np.ndarray, size: int) -> np.ndarray:
    """PIL bicubic, ×1/255 in float64, cast to float32, (x − mean) / std in float32."""
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    x = (resized * (1 / 255)).astype(np.float32)
    x = (x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return x.transpose(2, 0, 1)


@pytest.mark.parametrize("shape", [(480, 640), (768, 1024), (500, 333), (224, 224), (37, 1000)])
def test_inputs_follow_pil_and_the_processors_arithmetic(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    owl, clip = ImageInputs().both(image)
    assert owl.shape == (3, 768, 768) and clip.shape == (3, 224, 224)
    assert torch.equal(owl, torch.from_numpy(_numpy_reference(image, 768)))
    square = expand_to_square(image)
    assert torch.equal(clip, torch.from_numpy(_numpy_reference(square, 224)))


def test_worker_half_and_device_half_give_the_same_tensors():
    image = np.random.default_rng(3).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    inputs = ImageInputs(owl_size=96, clip_size=32)
    owl_u8, clip_u8 = inputs.resize(image)
    assert owl_u8.dtype == clip_u8.dtype == torch.uint8
    owl, clip = inputs.both(image)
    assert torch.equal(inputs.normalise(owl_u8[None])[0], owl)
    assert torch.equal(inputs.normalise(clip_u8), clip)


def test_one_decode_feeds_both_inputs_like_pil(demo_world):
    path = next((demo_world.dataset / "coco2017" / "train2017").glob("*.jpg"))
    inputs = ImageInputs(owl_size=96, clip_size=32)
    tensor_path = inputs.both(decode_rgb(path))
    pil_path = inputs.both(load_rgb(path))
    assert all(torch.equal(a, b) for a, b in zip(tensor_path, pil_path, strict=True))


def test_expand_to_square_pads_right_and_bottom():
    image = np.full((2, 4, 3), 7, dtype=np.uint8)
    square = expand_to_square(image)
    assert square.shape == (4, 4, 3)
    assert (square[:2] == 7).all()
    assert square[2:].reshape(-1, 3).max(0).tolist() == list(PAD_RGB)
    assert square[2:].reshape(-1, 3).min(0).tolist() == list(PAD_RGB)
