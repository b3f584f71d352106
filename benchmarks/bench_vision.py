"""splice-vision next to open_clip, transformers and timm, side by side in one process.

* **CLIP training step** (forward + contrastive loss + backward, gradients cleared; no
  optimizer step): one open_clip ``CLIP``, a splice ``CLIP`` converted from it
  (``from_open_clip``: same weights, same config) and a transformers ``CLIPModel`` of the
  same shapes, on the same batch of images and token ids. Target: splice >= 1.3x both.
* **ViT image encoding** (inference, no gradients): a timm ``VisionTransformer`` and a
  splice ``ViT`` of the same config on the same images; throughput in images/s.
  Target: splice >= 1.0x.
"""

from __future__ import annotations

import torch
from harness import bench_args, compare, configure_threads, device, write_section
from splice_vision.configs import ViTConfig
from splice_vision.interop import from_open_clip
from splice_vision.vit import ViT

IMAGE, PATCH, WIDTH, LAYERS, HEADS = 64, 16, 256, 4, 4
CONTEXT, VOCAB, EMBED = 32, 1000, 256


def _clear(*models: torch.nn.Module) -> None:
    for m in models:
        for p in m.parameters():
            p.grad = None


def clip_step(quick: bool) -> tuple[str, dict[str, float]]:
    import open_clip
    import transformers
    from open_clip.loss import ClipLoss

    dev = device()
    torch.manual_seed(0)
    oc = open_clip.CLIP(
        embed_dim=EMBED,
        vision_cfg=open_clip.CLIPVisionCfg(
            layers=LAYERS,
            width=WIDTH,
            head_width=WIDTH // HEADS,
            patch_size=PATCH,
            image_size=IMAGE,
        ),
        text_cfg=open_clip.CLIPTextCfg(
            context_length=CONTEXT, vocab_size=VOCAB, width=WIDTH, heads=HEADS, layers=LAYERS
        ),
    ).to(dev)
    ours = from_open_clip(oc).to(dev)
    hf_cfg = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=4 * WIDTH,
            num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            max_position_embeddings=CONTEXT, hidden_act="gelu", eos_token_id=2,
        ),
        vision_config=dict(
            image_size=IMAGE, patch_size=PATCH, hidden_size=WIDTH, intermediate_size=4 * WIDTH,
            num_hidden_layers=LAYERS, num_attention_heads=HEADS, hidden_act="gelu",
        ),
        projection_dim=EMBED,
    )  # fmt: skip
    hf = transformers.CLIPModel(hf_cfg).to(dev)
    batch = 32 if not quick else 8
    images = torch.randn(batch, 3, IMAGE, IMAGE, device=dev)
    ids = torch.randint(1, VOCAB - 1, (batch, CONTEXT), device=dev)
    ids[:, -1] = VOCAB - 1  # end of text: the largest id (all three pool there)
    loss_fn = ClipLoss()

    def step_open_clip() -> None:
        img, txt, scale = oc(images, ids)[:3]
        loss_fn(img, txt, scale).backward()
        _clear(oc)

    def step_splice() -> None:
        ours(images, ids).loss.backward()
        _clear(ours)

    def step_hf() -> None:
        hf(input_ids=ids, pixel_values=images, return_loss=True).loss.backward()
        _clear(hf)

    res = compare(
        {"splice": step_splice, "open_clip": step_open_clip, "transformers": step_hf},
        baseline="open_clip",
        warmup=2,
        rounds=3 if quick else 8,
    )
    vs_hf = res.median("transformers") / res.median("splice")
    ratios = {"clip_vs_open_clip": res.speedup("splice"), "clip_vs_transformers": vs_hf}
    body = (
        f"CLIP training step (forward + loss + backward), batch {batch}: ViT {IMAGE}px/patch "
        f"{PATCH}, text context {CONTEXT}, width {WIDTH}, {LAYERS} layers x {HEADS} heads per "
        "tower, same weights in splice and open_clip.\n\n"
        + res.table(work={n: batch for n in res.samples}, unit_name="pairs/s")
        + f"\n\nTarget: splice >= 1.3x each peer. Measured: {ratios['clip_vs_open_clip']:.2f}x "
        f"open_clip (median of per-round ratios), {vs_hf:.2f}x transformers (ratio of the medians)."
    )
    return body, ratios


def vit_encode(quick: bool) -> tuple[str, dict[str, float]]:
    import timm

    dev = device()
    torch.manual_seed(0)
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=IMAGE, patch_size=PATCH, embed_dim=WIDTH, depth=LAYERS, num_heads=HEADS,
        num_classes=0, global_pool="token",
    ).to(dev).eval()  # fmt: skip
    ours = (
        ViT(
            ViTConfig(
                image_size=IMAGE, patch_size=PATCH, d_model=WIDTH, n_layers=LAYERS, n_heads=HEADS
            )
        )
        .to(dev)
        .eval()
    )
    batch = 64 if not quick else 8
    images = torch.randn(batch, 3, IMAGE, IMAGE, device=dev)

    def enc_timm() -> None:
        with torch.inference_mode():
            ref(images)

    def enc_splice() -> None:
        with torch.inference_mode():
            ours.pooled(ours(images))

    res = compare(
        {"splice": enc_splice, "timm": enc_timm},
        baseline="timm",
        warmup=2,
        rounds=3 if quick else 10,
    )
    ratio = res.speedup("splice")
    body = (
        f"ViT image encoding (inference), batch {batch}, {IMAGE}px / patch {PATCH}, width "
        f"{WIDTH}, {LAYERS} layers x {HEADS} heads, class-token pooled.\n\n"
        + res.table(work={n: batch for n in res.samples}, unit_name="images/s")
        + f"\n\nTarget: splice >= 1.0x timm. Measured: {ratio:.2f}x."
    )
    return body, {"vit_vs_timm": ratio}


def main(quick: bool = False) -> str:
    threads = configure_threads()
    clip_body, clip_ratios = clip_step(quick)
    vit_body, vit_ratios = vit_encode(quick)
    body = (
        f"{clip_body}\n\n{vit_body}\n\nThe machine was shared with other jobs during the run "
        f"({threads} threads): absolute times are inflated, the same-round ratios are the figures."
    )
    print({**clip_ratios, **vit_ratios})
    return write_section(
        "vision", "CLIP training step and ViT encoding (vs open_clip, transformers, timm)", body
    )


if __name__ == "__main__":
    main(**bench_args())
