#!/usr/bin/env python3
"""Train the bundled demo model: a class-conditional pixel-space DiT on the
handwritten digits that ship with scikit-learn (1,797 grayscale 8x8 images,
upsampled to 16x16), and write it in diffusers layout under models/zoo/.

Not part of the test command. Needs PyTorch, diffusers and scikit-learn
(see models/zoo/digits-dit/README.md). Runs on a 2-core CPU in about 25
minutes with the defaults.

Writes:
  models/zoo/digits-dit/transformer/{config.json,diffusion_pytorch_model.safetensors}
  models/zoo/digits-dit/scheduler/scheduler_config.json
  models/zoo/digits-dit/train_log.json       (loss curve, final loss, settings)
  tests/fixtures/digits_classifier.safetensors  (logistic regression on 8x8 digits)
  tests/fixtures/digits_loop/io.safetensors     (a diffusers sampling loop with
        fixed noise: the compiled demo must reproduce it)
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel
from safetensors.numpy import save_file
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def dataset(size):
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0  # [N, 8, 8] in [0, 1]
    x = F.interpolate(x[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return x * 2.0 - 1.0, torch.tensor(d.target, dtype=torch.long)  # [-1, 1]


def classifier(out_path):
    """Multinomial logistic regression on the 8x8 digits in [0, 1]."""
    d = load_digits()
    x = d.data / 16.0
    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(x, d.target)
    acc = clf.score(x, d.target)
    # sklearn keeps coef_ Fortran-ordered; safetensors needs C order.
    save_file({"coef": np.ascontiguousarray(clf.coef_, dtype=np.float32), "intercept": np.ascontiguousarray(clf.intercept_, dtype=np.float32)}, out_path)
    return acc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "models/zoo/digits-dit"))
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    x, y = dataset(args.size)
    model = DiTTransformer2DModel(
        num_attention_heads=args.heads,
        attention_head_dim=args.head_dim,
        in_channels=1,
        out_channels=1,
        num_layers=args.layers,
        sample_size=args.size,
        patch_size=args.patch,
        num_embeds_ada_norm=10,
        norm_type="ada_norm_zero",
        activation_fn="gelu-approximate",
    )
    # CombinedTimestepLabelEmbeddings drops 10% of labels to the null class
    # (id 10) in training mode: that is what makes guidance work.
    train_sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    model.train()
    losses = []
    t0 = time.time()
    g = torch.Generator().manual_seed(args.seed + 1)
    for step in range(args.steps):
        idx = torch.randint(0, x.shape[0], (args.batch,), generator=g)
        x0, lab = x[idx], y[idx]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (args.batch,), generator=g)
        xt = train_sched.add_noise(x0, noise, t)
        pred = model(xt, timestep=t, class_labels=lab).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for k, v in model.state_dict().items():
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
        losses.append(loss.item())
        if step % 200 == 0 or step == args.steps - 1:
            avg = float(np.mean(losses[-200:]))
            print(f"step {step:5d}  loss {avg:.4f}  {time.time() - t0:.0f}s", flush=True)
    model.load_state_dict(ema)
    model.eval()
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(os.path.join(args.out, "transformer"))
    sample_sched = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=False, set_alpha_to_one=False, steps_offset=0
    )
    sample_sched.save_pretrained(os.path.join(args.out, "scheduler"))
    with open(os.path.join(args.out, "model_index.json"), "w") as f:
        json.dump({"_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"], "scheduler": ["diffusers", "DDIMScheduler"]}, f, indent=2)

    # The reference sampling loop with fixed, stored noise (no RNG involved in
    # the comparison): classes 0..9, 20 DDIM steps, guidance 4.
    fixtures = os.path.join(ROOT, "tests/fixtures")
    os.makedirs(os.path.join(fixtures, "digits_loop"), exist_ok=True)
    acc = classifier(os.path.join(fixtures, "digits_classifier.safetensors"))
    labels = torch.arange(10)
    noise = torch.randn((10, 1, args.size, args.size), generator=torch.Generator().manual_seed(1234))
    steps, guidance = 20, 4.0
    sample_sched.set_timesteps(steps)
    lat = noise.clone()
    with torch.no_grad():
        for t in sample_sched.timesteps:
            inp = torch.cat([lat, lat])
            tt = torch.full((20,), int(t), dtype=torch.long)
            lab = torch.cat([labels, torch.full((10,), 10)])
            eps = model(inp, timestep=tt, class_labels=lab).sample
            cond, uncond = eps.chunk(2)
            e = uncond + guidance * (cond - uncond)
            lat = sample_sched.step(e, t, lat).prev_sample
    save_file(
        {
            "input.noise": noise.numpy(),
            "input.class_labels": labels.numpy(),
            "schedule.timesteps": sample_sched.timesteps.numpy().astype(np.int64),
            "output.images": lat.numpy(),
        },
        os.path.join(fixtures, "digits_loop/io.safetensors"),
    )
    with open(os.path.join(fixtures, "digits_loop/meta.json"), "w") as f:
        json.dump({"steps": steps, "guidance": guidance, "scheduler": "DDIMScheduler", "model": "models/zoo/digits-dit"}, f, indent=2)
    log = {
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "final_loss": float(np.mean(losses[-200:])),
        "seconds": time.time() - t0,
        "classifier_train_accuracy": acc,
        "loss_every_100": [float(np.mean(losses[i : i + 100])) for i in range(0, len(losses), 100)],
        "params": sum(p.numel() for p in model.parameters()),
    }
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(json.dumps({k: v for k, v in log.items() if k != "loss_every_100"}))


if __name__ == "__main__":
    main()
