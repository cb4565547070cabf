#!/usr/bin/env python3
"""Create the fixed FLUX-architecture benchmark model (random weights,
float32) and its inputs, as the performance issue defines them:

FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=4,
num_single_layers=8, attention_head_dim=64, num_attention_heads=8,
joint_attention_dim=512, pooled_projection_dim=256, guidance_embeds=True,
axes_dims_rope=[8, 28, 28]) — 71.4 M parameters, 26.8 GFLOP per forward —
batch 1, 256 image tokens x 64 channels, 64 text tokens x 512, timestep 0.5,
guidance 3.5.

Usage: make_flux_bench.py OUT_DIR   (needs torch + diffusers; not part of
the test command). Writes OUT_DIR/{config.json, diffusion_pytorch_model.safetensors,
io.safetensors} where io.safetensors holds input.* and PyTorch's output.sample.
"""
import os
import sys

import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import save_file

CONFIG = dict(
    patch_size=1,
    in_channels=64,
    num_layers=4,
    num_single_layers=8,
    attention_head_dim=64,
    num_attention_heads=8,
    joint_attention_dim=512,
    pooled_projection_dim=256,
    guidance_embeds=True,
    axes_dims_rope=[8, 28, 28],
)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "flux-bench"
    torch.manual_seed(0)
    model = FluxTransformer2DModel(**CONFIG).eval()
    model.save_pretrained(out)
    g = torch.Generator().manual_seed(1)
    h = w = 16
    img_ids = torch.zeros(h * w, 3)
    img_ids[:, 1] = torch.arange(h).repeat_interleave(w).float()
    img_ids[:, 2] = torch.arange(w).repeat(h).float()
    inputs = {
        "input.hidden_states": torch.randn(1, h * w, 64, generator=g),
        "input.encoder_hidden_states": torch.randn(1, 64, 512, generator=g),
        "input.pooled_projections": torch.randn(1, 256, generator=g),
        "input.timestep": torch.tensor([0.5]),
        "input.guidance": torch.tensor([3.5]),
        "input.img_ids": img_ids,
        "input.txt_ids": torch.zeros(64, 3),
    }
    with torch.no_grad():
        y = model(
            hidden_states=inputs["input.hidden_states"],
            encoder_hidden_states=inputs["input.encoder_hidden_states"],
            pooled_projections=inputs["input.pooled_projections"],
            timestep=inputs["input.timestep"],
            img_ids=inputs["input.img_ids"],
            txt_ids=inputs["input.txt_ids"],
            guidance=inputs["input.guidance"],
            return_dict=False,
        )[0]
    inputs["output.sample"] = y
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(out, "io.safetensors"))
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters written to {out}")


if __name__ == "__main__":
    main()
