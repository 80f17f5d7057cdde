"""Runs in the side environment with the original's pinned libraries (transformers 4.31,
tokenizers 0.13.3, sentencepiece 0.1.99), never with vsm_kit: the original's input steps, written
from the facts (§3.1, §4.1, §4.3), as the reference the compatibility tests compare against.

Reads one JSON request on stdin and writes a JSON reply on stdout (pixel arrays go to an .npz):
  {"tokenizer": DIR, "texts": [...], "batches": [{"conversations": [...], "bboxes_valid": [...],
   "inference": bool}], "decode": [[ids]], "images": [PATH], "npz": OUT, "owl": S, "clip": s}
"""

import json
import sys

import numpy as np

IMAGE_TOKEN_INDEX, IGNORE_INDEX = -200, -100
REPLY = "\nREPLY "
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def load_tokenizer(folder):
    """train.py's set-up (§4.1)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        folder, model_max_length=512, padding_side="right", use_fast=False
    )
    tok.pad_token = tok.unk_token
    tok.add_tokens("[LOC]")
    tok.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    return tok


def image_token_ids(text, tok):
    """LLaVA's tokenizer_image_token (§4.1)."""
    chunks = [tok(c).input_ids for c in text.split("<image>")]
    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tok.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for k, chunk in enumerate(chunks):
        if k:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


def collate(tok, conversations, bboxes_valid, inference, max_length=512):
    """The collate's ids, labels and attention masks (§4.3), as nested lists."""
    loc = tok("[LOC]", add_special_tokens=False).input_ids[0]
    rows = [image_token_ids(c, tok) for c in conversations]
    width = max(map(len, rows))
    ids = np.zeros((len(rows), width), np.int64)  # pad id 0
    for r, row in enumerate(rows):
        ids[r, : len(row)] = row
    attention = ids != tok.pad_token_id
    for r, valid in enumerate(bboxes_valid):
        if not valid:
            attention[r] &= ids[r] != loc
    labels = ids.copy()
    for conversation, target in zip(conversations, labels, strict=True):
        total = int((target != tok.pad_token_id).sum())
        cur = 1
        target[:cur] = IGNORE_INDEX
        for rou in conversation.split("</s>"):
            if rou == "":
                break
            parts = rou.split(" ASSISTANT: ")
            assert len(parts) == 2, rou
            parts[0] += " ASSISTANT: "
            round_len = len(image_token_ids(rou, tok))
            instruction_len = len(image_token_ids(parts[0], tok)) - 2
            target[cur : cur + instruction_len] = IGNORE_INDEX
            cur += round_len
        target[cur:] = IGNORE_INDEX
        if cur < max_length:
            assert cur == total, (cur, total)
    if not inference:
        keep = max_length - 255
        ids, labels, attention = ids[:, :keep], labels[:, :keep], attention[:, :keep]
    return {"input_ids": ids.tolist(), "labels": labels.tolist(), "attention": attention.tolist()}


def pixels(paths, owl_size, clip_size, out):
    """Both image inputs (§3.1) from PIL-decoded pixels (the original's CLIP branch decodes
    with PIL; its OWL-ViT branch uses OpenCV's array, the same pixels but for EXIF rotation)."""
    from PIL import Image
    from transformers import CLIPImageProcessor, OwlViTImageProcessor

    owl = OwlViTImageProcessor(
        size={"height": owl_size, "width": owl_size},
        crop_size={"height": owl_size, "width": owl_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        resample=3,
    )
    clip = CLIPImageProcessor(
        size={"shortest_edge": clip_size},
        crop_size={"height": clip_size, "width": clip_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        resample=3,
    )
    arrays = {}
    for k, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        arrays[f"owl{k}"] = owl.preprocess(np.array(image), return_tensors="np")["pixel_values"][0]
        w, h = image.size
        square = Image.new(
            image.mode, (max(w, h), max(w, h)), tuple(int(x * 255) for x in CLIP_MEAN)
        )
        square.paste(image, (0, 0))
        arrays[f"clip{k}"] = clip.preprocess(square, return_tensors="np")["pixel_values"][0]
    np.savez(out, **arrays)


def main():
    import PIL
    import transformers

    request = json.load(sys.stdin)
    out, sys.stdout = sys.stdout, sys.stderr  # library chatter must not mix with the reply
    reply = {"transformers": transformers.__version__, "pillow": PIL.__version__}
    if request.get("tokenizer"):
        tok = load_tokenizer(request["tokenizer"])
        reply["loc"] = tok("[LOC]", add_special_tokens=False).input_ids[0]
        reply["vocab"] = len(tok)
        reply["ids"] = [image_token_ids(t, tok) for t in request.get("texts", [])]
        reply["batches"] = [
            collate(tok, b["conversations"], b["bboxes_valid"], b["inference"])
            for b in request.get("batches", [])
        ]
        reply["decoded"] = [
            tok.decode(i, skip_special_tokens=True) for i in request.get("decode", [])
        ]
    if request.get("images"):
        pixels(request["images"], request["owl"], request["clip"], request["npz"])
    out.write(REPLY + json.dumps(reply))  # last line: C libraries may print to stdout too


if __name__ == "__main__":
    main()
