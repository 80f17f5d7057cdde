"""The llava_v1 conversation template and image-aware tokenization (as the original tool uses)."""

from __future__ import annotations

from .vsm import IMAGE_TOKEN_INDEX

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions."
)
ROLES = ("USER", "ASSISTANT")
SEP, SEP2 = " ", "</s>"
IMAGE = "<image>"
IMAGE_WRAPPED = "<im_start><image><im_end>"
ROUND_SEP = SEP + ROLES[1] + ": "  # splits a round into instruction and reply (labels)


def render(messages: list[str | None]) -> str:
    """Alternating user/assistant messages → the prompt text; a final `None` leaves
    "ASSISTANT:" open for generation. `<image>` is wrapped in the start/end markers."""
    text = SYSTEM + SEP
    for k, message in enumerate(messages):
        role = ROLES[k % 2]
        if message is None:
            text += f"{role}:"
        else:
            text += f"{role}: {message}" + (SEP if k % 2 == 0 else SEP2)
    return text.replace(IMAGE, IMAGE_WRAPPED)


def tokenize_with_image(text: str, tokenizer) -> list[int]:
    """Token ids with `IMAGE_TOKEN_INDEX` where `<image>` is: each chunk is tokenized with its
    BOS, which is kept for the first chunk only."""
    chunks = [tokenizer.encode(c) for c in text.split(IMAGE)]
    ids = list(chunks[0])
    for chunk in chunks[1:]:
        ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[1:] if chunk and chunk[0] == tokenizer.bos_token_id else chunk)
    return ids


def image_prompt(question: str, answer: str | None = None) -> str:
    """One question about an image, as the search asks it: the image then the question; the
    reply `answer` (detection reads the [LOC] state of "Sure, [LOC].", the reply the model was
    trained to give) or, with None, "ASSISTANT:" left open for generation."""
    return render([f"{IMAGE}\n{question}", answer])
