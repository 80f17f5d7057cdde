import re

import pytest
import torch

from vsm_kit.model.architecture import vsm_tiny
from vsm_kit.model.vsm import IMAGE_TOKEN_INDEX, VSMForCausalLM, llama_config

from .batch import demo_batch

FROZEN = ("model.vision_tower.", "model.owlvit.vision_model.", "model.owlvit.box_head.")


def test_forward_backward_finite_and_only_trainables_get_grads(demo_world, tiny_vsm):
    model, tok, _ = tiny_vsm
    model.train()
    batch = demo_batch(demo_world.dataset, tok)
    out = model.forward_train(batch)
    for key in (
        "loss",
        "ce_loss",
        "mask_bce_loss",
        "mask_dice_loss",
        "detection_loss",
        "detection_loss_ce",
        "detection_loss_bbox",
        "detection_loss_giou",
    ):
        assert torch.isfinite(out[key]), key
        assert out[key].item() > 0, key
    model.zero_grad()
    out["loss"].backward()
    for name, p in model.named_parameters():
        if name.startswith(FROZEN):
            assert not p.requires_grad and p.grad is None, name
    trained = {
        n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    for part in (
        "lm_head",
        "model.embed_tokens",
        "model.text_hidden_fcs_seg",
        "model.text_hidden_fcs_det",
        "model.mask_decoder",
        "model.visual_projection",
        "model.owlvit.class_head",
        "model.mm_projector",
    ):
        assert any(n.startswith(part) for n in trained), part
    # trainable, but applied under no_grad as in the original: never a gradient
    norm = model.model.owlvit.layer_norm
    assert all(p.requires_grad and p.grad is None for p in norm.parameters())
    model.zero_grad()
    model.eval()


def test_lora_model_trains_the_originals_set_and_passes_the_giou_mode(demo_world):
    """The PEFT-wrapped model keeps `owlvit.layer_norm` trainable (the original's trainable set,
    so checkpoints hold it) though it never gets a gradient; `giou` reaches the loss through
    the wrapper as the engine passes it."""
    from vsm_kit.model.weights import load_vsm
    from vsm_kit.train.config import LoraConfig
    from vsm_kit.train.lora import wrap_lora

    model, tok, _ = load_vsm(demo_world.weights / "vsm-tiny", arch=vsm_tiny())
    wrapped = wrap_lora(model, LoraConfig()).train()
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    prefix = "base_model.model.model.owlvit."
    assert {f"{prefix}layer_norm.weight", f"{prefix}layer_norm.bias"} <= trainable
    batch = demo_batch(demo_world.dataset, tok)
    torch.manual_seed(0)
    out = wrapped(batch=batch)
    out["loss"].backward()
    params = dict(wrapped.named_parameters())
    assert params[f"{prefix}layer_norm.weight"].grad is None
    assert params[f"{prefix}layer_norm.bias"].grad is None
    assert params[f"{prefix}class_head.dense0.weight"].grad.abs().sum() > 0
    with torch.no_grad():
        torch.manual_seed(0)
        normalized = wrapped(batch=batch, giou="normalized")["detection_loss_giou"]
    # every query of the demo batch is valid: the original's term is num_boxes × the mean
    num_boxes = sum(len(b) for b in batch["bboxes_labels_list"])
    assert num_boxes > 1
    assert out["detection_loss_giou"].item() == pytest.approx(
        num_boxes * normalized.item(), rel=1e-4
    )


def test_bf16_model_runs_upscaling_and_box_bias_in_fp32(demo_world):
    """Under bf16, as in the original: the mask decoder's upscaling path sees and returns fp32
    (the transformer before it stays bf16), and the box logits meet the fp32 bias in fp32."""
    from vsm_kit.model.heads import box_bias
    from vsm_kit.model.weights import load_vsm

    model, tok, _ = load_vsm(demo_world.weights / "vsm-tiny", arch=vsm_tiny())
    model = model.to(torch.bfloat16).eval()
    decoder = model.model.mask_decoder
    seen: dict[str, list] = {}

    def record(name):
        def hook(_module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            seen.setdefault(name, []).append((inputs[0].dtype, out.dtype, out))

        return hook

    hooked = {"transformer": decoder.transformer, "upscaling": decoder.output_upscaling}
    hooked |= {f"upscaling.{k}": m for k, m in enumerate(decoder.output_upscaling)}
    hooked["box_head"] = model.model.owlvit.box_head
    handles = [m.register_forward_hook(record(n)) for n, m in hooked.items()]
    batch = demo_batch(demo_world.dataset, tok)
    for key in ("images", "images_clip"):
        batch[key] = batch[key].to(torch.bfloat16)
    with torch.no_grad():
        p = model.predict(batch)
    for h in handles:
        h.remove()
    assert {(i, o) for i, o, _ in seen["transformer"]} == {(torch.bfloat16, torch.bfloat16)}
    # the path takes the transformer's bf16 output; each of its blocks computes in fp32
    assert {(i, o) for i, o, _ in seen["upscaling"]} == {(torch.bfloat16, torch.float32)}
    blocks = [n for n in seen if n.startswith("upscaling.")]
    assert len(blocks) == len(decoder.output_upscaling)
    for name in blocks:
        assert {(i, o) for i, o, _ in seen[name]} == {(torch.float32, torch.float32)}, name
    assert p["masks"][0].dtype == torch.float32
    logits = torch.cat([out for _, _, out in seen["box_head"]])
    assert logits.dtype == torch.bfloat16 and p["det_boxes"].dtype == torch.float32
    bias = box_bias(int(logits.shape[1] ** 0.5))
    assert bias.dtype == torch.float32
    assert torch.equal(p["det_boxes"], torch.sigmoid(logits.float() + bias))
    bf16_sum = torch.sigmoid((logits + bias.to(torch.bfloat16)).float())
    assert not torch.equal(p["det_boxes"], bf16_sum)


def test_mask_decoder_matches_sam_in_fp32_and_box_bias_matches_owlvit():
    from segment_anything.modeling import MaskDecoder
    from transformers import OwlViTForObjectDetection

    from vsm_kit.model.heads import VSMMaskDecoder, box_bias, owlvit_config

    arch = vsm_tiny()
    torch.manual_seed(0)
    decoder = VSMMaskDecoder(arch.sam).eval()
    d, g, q = arch.sam.embed_dim, 6, 3
    args = (
        torch.randn(1, d, g, g),
        torch.randn(1, d, g, g),
        torch.randn(q, 1, d),
        torch.randn(q, d, g, g),
    )
    ours, sam = decoder.predict_masks(*args), MaskDecoder.predict_masks(decoder, *args)
    assert ours[0].shape == (q, 4, 4 * g, 4 * g)
    assert torch.allclose(ours[0], sam[0], atol=1e-6) and torch.equal(ours[1], sam[1])
    detector = OwlViTForObjectDetection(owlvit_config(arch.owlvit))
    grid = arch.owlvit.image_size // arch.owlvit.patch_size
    assert torch.equal(box_bias(grid), detector.box_bias)


def test_bf16_training_forward_and_images_without_masks(demo_world):
    """The engine's bf16 path: every head in bf16. A batch without mask supervision gives
    gradients to the same parameters as one with masks (ranks must reduce the same set)."""
    from vsm_kit.model.weights import load_vsm

    model, tok, _ = load_vsm(demo_world.weights / "vsm-tiny", arch=vsm_tiny())
    model = model.to(torch.bfloat16).train()

    def graded(without_masks: bool) -> set[str]:
        batch = demo_batch(demo_world.dataset, tok)
        if without_masks:
            batch["masks_valid_list"] = [torch.zeros_like(v) for v in batch["masks_valid_list"]]
        for key in ("images", "images_clip"):
            batch[key] = batch[key].to(torch.bfloat16)
        model.zero_grad(set_to_none=True)
        out = model(batch=batch)
        assert all(torch.isfinite(v) for v in out.values())
        if without_masks:
            assert out["mask_bce_loss"].item() == 0 and out["mask_dice_loss"].item() == 0
        out["loss"].backward()
        return {n for n, p in model.named_parameters() if p.grad is not None}

    with_masks = graded(False)
    assert any(n.startswith("model.mask_decoder.") for n in with_masks)
    assert graded(True) == with_masks


@pytest.mark.parametrize("patch", [14, 28])  # 256 and 64 image tokens
def test_loc_gather_finds_the_state_before_each_loc(patch):
    arch = vsm_tiny()
    arch = type(arch)(
        llama=arch.llama,
        clip=type(arch.clip)(**{**arch.clip.__dict__, "patch_size": patch}),
        owlvit=arch.owlvit,
        sam=arch.sam,
    )
    n_image = (224 // patch) ** 2
    model = VSMForCausalLM(llama_config(arch, 50, loc_token_idx=49), arch)
    loc = 49
    ids = torch.tensor(
        [
            [
                1,
                5,
                IMAGE_TOKEN_INDEX,
                loc,
                7,
                8,
                loc,
                2,
            ],  # a [LOC] right after the image (VQA rows)
            [1, 5, 6, 7, IMAGE_TOKEN_INDEX, 9, loc, 2],
        ]
    )
    feats = torch.randn(2, n_image, arch.llama.hidden_size)
    _, expanded, text_idx = model.embed_with_image(ids, feats)
    assert expanded.shape[1] == ids.shape[1] + n_image - 1
    assert (text_idx < 0).sum(1).tolist() == [n_image, n_image]
    hidden = torch.arange(expanded.shape[1]).float()[None, :, None].expand(2, -1, 3)
    picked = model.loc_hidden(hidden, expanded)[:, 0].long().tolist()
    # text position p after the image sits at p + n_image - 1; the state before it at one less
    assert picked == [3 + n_image - 2, 6 + n_image - 2, 6 + n_image - 2]


def test_embedding_rejects_rows_without_exactly_one_image():
    arch = vsm_tiny()
    model = VSMForCausalLM(llama_config(arch, 50, loc_token_idx=49), arch)
    with pytest.raises(ValueError, match="exactly one image"):
        model.embed_with_image(torch.tensor([[1, 5, 6]]), torch.zeros(1, 4, 64))


# §9.1 of the facts: every key of a merged VSM and its shape, with H = hidden, V = vocab,
# C = OWL-ViT width, D = SAM width, O = out_dim (det projection), M = CLIP width
def _patterns(a, vocab):
    h, c, d, o, m = (
        a.llama.hidden_size,
        a.owlvit.hidden_size,
        a.sam.embed_dim,
        a.owlvit.text_hidden_size,
        a.clip.hidden_size,
    )
    inter, g = a.llama.intermediate_size, a.owlvit.image_size // a.owlvit.patch_size
    ow, sm = a.owlvit.intermediate_size, a.sam.mlp_dim
    return {
        r"model\.embed_tokens\.weight|lm_head\.weight": (vocab, h),
        r"model\.layers\.\d+\.self_attn\.[qkvo]_proj\.weight": (h, h),
        r"model\.layers\.\d+\.mlp\.(gate|up)_proj\.weight": (inter, h),
        r"model\.layers\.\d+\.mlp\.down_proj\.weight": (h, inter),
        r"model\.layers\.\d+\.(input|post_attention)_layernorm\.weight|model\.norm\.weight": (h,),
        r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq": None,
        r"model\.mm_projector\.weight": (h, m),
        r"model\.mm_projector\.bias": (h,),
        r"model\.owlvit\.vision_model\.embeddings\.class_embedding": (c,),
        r"model\.owlvit\.vision_model\.embeddings\.patch_embedding\.weight": (
            c,
            3,
            a.owlvit.patch_size,
            a.owlvit.patch_size,
        ),
        r"model\.owlvit\.vision_model\.embeddings\.position_embedding\.weight": (g * g + 1, c),
        r"model\.owlvit\.vision_model\.embeddings\.position_ids": None,
        r"model\.owlvit\.vision_model\.(pre|post)_layernorm\.(weight|bias)": (c,),
        r"model\.owlvit\.vision_model\.encoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj\.weight": (
            c,
            c,
        ),
        r"model\.owlvit\.vision_model\.encoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj\.bias": (
            c,
        ),
        r"model\.owlvit\.vision_model\.encoder\.layers\.\d+\.layer_norm[12]\.(weight|bias)": (c,),
        r"model\.owlvit\.vision_model\.encoder\.layers\.\d+\.mlp\.fc1\.weight": (ow, c),
        r"model\.owlvit\.vision_model\.encoder\.layers\.\d+\.mlp\.fc1\.bias": (ow,),
        r"model\.owlvit\.vision_model\.encoder\.layers\.\d+\.mlp\.fc2\.weight": (c, ow),
        r"model\.owlvit\.vision_model\.encoder\.layers\.\d+\.mlp\.fc2\.bias": (c,),
        r"model\.owlvit\.class_head\.dense0\.weight": (o, c),
        r"model\.owlvit\.class_head\.dense0\.bias": (o,),
        r"model\.owlvit\.class_head\.logit_(shift|scale)\.weight": (1, c),
        r"model\.owlvit\.class_head\.logit_(shift|scale)\.bias": (1,),
        r"model\.owlvit\.box_head\.dense[01]\.weight": (c, c),
        r"model\.owlvit\.box_head\.dense[01]\.bias": (c,),
        r"model\.owlvit\.box_head\.dense2\.weight": (4, c),
        r"model\.owlvit\.box_head\.dense2\.bias": (4,),
        r"model\.owlvit\.layer_norm\.(weight|bias)": (c,),
        r"model\.visual_projection\.weight": (d, c),
        r"model\.prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix": (2, d // 2),
        r"model\.prompt_encoder\.(point_embeddings\.[0-3]|not_a_point_embed"
        r"|no_mask_embed)\.weight": (1, d),
        r"model\.prompt_encoder\.mask_downscaling\.[0-6]\.(weight|bias)": None,
        r"model\.mask_decoder\.iou_token\.weight": (1, d),
        r"model\.mask_decoder\.mask_tokens\.weight": (4, d),
        r"model\.mask_decoder\.transformer\.layers\.\d+\.self_attn\.(q|k|v|out)_proj\.weight": (
            d,
            d,
        ),
        r"model\.mask_decoder\.transformer\.(layers\.\d+\.cross_attn_(token_to_image|image_to_token)"
        r"|final_attn_token_to_image)\.(q|k|v)_proj\.weight": (d // 2, d),
        r"model\.mask_decoder\.transformer\.(layers\.\d+\.cross_attn_(token_to_image|image_to_token)"
        r"|final_attn_token_to_image)\.out_proj\.weight": (d, d // 2),
        r"model\.mask_decoder\.transformer\..*_proj\.bias": None,
        r"model\.mask_decoder\.transformer\.layers\.\d+\.mlp\.lin1\.weight": (sm, d),
        r"model\.mask_decoder\.transformer\.layers\.\d+\.mlp\.lin1\.bias": (sm,),
        r"model\.mask_decoder\.transformer\.layers\.\d+\.mlp\.lin2\.weight": (d, sm),
        r"model\.mask_decoder\.transformer\.layers\.\d+\.mlp\.lin2\.bias": (d,),
        r"model\.mask_decoder\.transformer\.(layers\.\d+\.norm[1-4]"
        r"|norm_final_attn)\.(weight|bias)": (d,),
        r"model\.mask_decoder\.output_upscaling\.0\.conv\.weight": (d // 4, d, 3, 3),
        r"model\.mask_decoder\.output_upscaling\.0\.conv\.bias": (d // 4,),
        r"model\.mask_decoder\.output_upscaling\.1\.(weight|bias)": (d // 4,),
        r"model\.mask_decoder\.output_upscaling\.3\.conv\.weight": (d // 8, d // 4, 3, 3),
        r"model\.mask_decoder\.output_upscaling\.3\.conv\.bias": (d // 8,),
        r"model\.mask_decoder\.output_hypernetworks_mlps\.[0-3]\.layers\.[01]\.weight": (d, d),
        r"model\.mask_decoder\.output_hypernetworks_mlps\.[0-3]\.layers\.[01]\.bias": (d,),
        r"model\.mask_decoder\.output_hypernetworks_mlps\.[0-3]\.layers\.2\.weight": (d // 8, d),
        r"model\.mask_decoder\.output_hypernetworks_mlps\.[0-3]\.layers\.2\.bias": (d // 8,),
        r"model\.mask_decoder\.iou_prediction_head\.layers\.[01]\.weight": (d, d),
        r"model\.mask_decoder\.iou_prediction_head\.layers\.[01]\.bias": (d,),
        r"model\.mask_decoder\.iou_prediction_head\.layers\.2\.weight": (4, d),
        r"model\.mask_decoder\.iou_prediction_head\.layers\.2\.bias": (4,),
        r"model\.text_hidden_fcs_(seg|det)\.0\.0\.weight": (h, h),
        r"model\.text_hidden_fcs_(seg|det)\.0\.0\.bias": (h,),
        r"model\.text_hidden_fcs_seg\.0\.2\.weight": (d, h),
        r"model\.text_hidden_fcs_seg\.0\.2\.bias": (d,),
        r"model\.text_hidden_fcs_det\.0\.2\.weight": (o, h),
        r"model\.text_hidden_fcs_det\.0\.2\.bias": (o,),
    }


def test_merged_layout_keys_and_shapes_follow_the_original(demo_world):
    from vsm_kit.model.weights import read_state_dict

    state = read_state_dict(demo_world.weights / "vsm-tiny")
    patterns = _patterns(vsm_tiny(), state["lm_head.weight"].shape[0])
    used = dict.fromkeys(patterns, 0)
    for key, tensor in state.items():
        hits = [p for p in patterns if re.fullmatch(p, key)]
        assert hits, f"{key} matches no pattern of the original layout"
        shape = patterns[hits[0]]
        assert shape is None or tuple(tensor.shape) == shape, (key, tuple(tensor.shape), shape)
        used[hits[0]] += 1
    optional = {r"model\.owlvit\.vision_model\.embeddings\.position_ids"}  # version-dependent
    assert [p for p, n in used.items() if n == 0 and p not in optional] == []
    assert not any("vision_tower" in k for k in state)
    assert state["lm_head.weight"].shape[0] == 1004  # 1000 pieces + 3 image markers + [LOC]
