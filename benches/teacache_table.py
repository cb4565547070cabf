#!/usr/bin/env python3
"""TeaCache and CFG-batching measurements for benches/RESULTS.md.

Usage: teacache_table.py FLUX_BENCH_DIR [--work DIR] [--repeats N] [--threads N]

FLUX_BENCH_DIR is what benches/make_flux_bench.py writes (transformer
weights + config + io.safetensors). The script needs numpy and safetensors
and the release binaries (`cargo build --release --bin omnic --bin omnirt`;
OMNIC / OMNIRT override their paths). It

1. builds two FluxPipeline directories under --work: `flux-pipe`
   (the benchmark transformer with its guidance embedding: distilled
   guidance 3.5) and `flux-pipe-cfg` (the same weights with
   `guidance_embeds: false`: FLUX.1-schnell style, true CFG with a negative
   prompt), each with the FlowMatchEulerDiscreteScheduler config FluxPipeline
   uses (tests/fixtures/denoise/scheduler);
2. TeaCache table on the benchmark config: 28 steps, latents [1,256,64],
   prompt embeds [1,64,512], pooled [1,256]; compiled without a cache (the
   reference) and with `--teacache` (published FLUX.1 coefficients), run at
   thresholds 0, 0.1, 0.2, 0.4, 0.6 (`omnirt run --teacache T`);
3. the same on the bundled digits model (models/zoo/digits-dit, calibrated
   coefficients from its teacache.json), 20 DDIM steps, classes 0..9 in one
   batch, guidance 4, plus the digit classifier's accuracy over 5 seeds;
4. CFG batching on flux-pipe-cfg (28 steps, true CFG 4 with a negative
   prompt): compiled with and without `--disable-pass cfg-batching`.

Runs alternate between configurations (repeat r runs every configuration
once) and the minimum wall time of the denoise loop ("denoise: N steps in
X s") over the repeats is reported; `uptime` is recorded before and after.
The binaries are copied into --work first (a rebuild during the run cannot
mix versions). "runs ratio" = branch-steps / block-stack runs, the speedup
the skipping alone would give if the block stack were all the time.
Errors are of the final latents against the run without a cache: max abs
and PSNR = 10·log10(range² / MSE), range = max − min of the reference.
Prints markdown tables.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THRESHOLDS = [0.0, 0.1, 0.2, 0.4, 0.6]


PINNED = {}


def binary(name):
    if name in PINNED:
        return PINNED[name]
    env = os.environ.get(name.upper())
    if env:
        return env
    for prof in ("release", "debug"):
        p = os.path.join(ROOT, "target", prof, name)
        if os.path.exists(p):
            return p
    sys.exit(f"{name} not built: cargo build --release --bin {name}")


def pin(name, work):
    """Copy a binary into the work dir so a rebuild during the run cannot mix versions."""
    dst = os.path.join(work, name)
    shutil.copy(binary(name), dst)
    PINNED[name] = dst


def sh(cmd):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout + r.stderr


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def compile_(src, out, extra=()):
    if not os.path.exists(out):
        sh([binary("omnic"), "compile", src, "-o", out, *extra])
    return out


def run(art, inputs, out, threads, extra=()):
    text = sh([binary("omnirt"), "run", art, "--inputs", inputs, "--outputs", out, "--threads", str(threads), *extra])
    m = re.search(r"denoise: (\d+) steps in ([0-9.]+) s", text)
    c = re.search(r"(\d+) computed, (\d+) skipped", text)
    if not m or not c:
        sys.exit(f"unexpected omnirt output:\n{text}")
    return float(m.group(2)), int(c.group(1)), int(c.group(2)), load_file(out)["output.latents"]


def errors(x, ref):
    d = (x.astype(np.float64) - ref.astype(np.float64))
    mse = float(np.mean(d * d))
    rng = float(ref.max() - ref.min())
    psnr = float("inf") if mse == 0 else 10 * np.log10(rng * rng / mse)
    return float(np.abs(d).max()), psnr


def make_pipe(bench, work, name, guidance):
    d = os.path.join(work, name)
    os.makedirs(os.path.join(d, "transformer"), exist_ok=True)
    os.makedirs(os.path.join(d, "scheduler"), exist_ok=True)
    w = os.path.join(d, "transformer", "diffusion_pytorch_model.safetensors")
    if not os.path.exists(w):
        os.symlink(os.path.abspath(os.path.join(bench, "diffusion_pytorch_model.safetensors")), w)
    cfg = json.load(open(os.path.join(bench, "config.json")))
    cfg["guidance_embeds"] = guidance
    json.dump(cfg, open(os.path.join(d, "transformer", "config.json"), "w"), indent=2)
    shutil.copy(os.path.join(ROOT, "tests/fixtures/denoise/scheduler/scheduler_config.json"), os.path.join(d, "scheduler"))
    json.dump({"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"],
               "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}, open(os.path.join(d, "model_index.json"), "w"), indent=2)
    return d


def fmt_row(cells):
    return "| " + " | ".join(cells) + " |"


def cache_table(title, base_art, tc_art, inputs, work, tag, threads, repeats, steps, extra=()):
    """Rows: no cache, then each threshold on the split artifact."""
    configs = [("no cache", base_art, [])] + [(f"{t:g}", tc_art, ["--teacache", f"{t}"]) for t in THRESHOLDS]
    best = {}
    for r in range(repeats):
        for name, art, ex in configs:
            out = os.path.join(work, f"{tag}-{name.replace(' ', '_')}.safetensors")
            secs, comp, skip, lat = run(art, inputs, out, threads, ["--steps", str(steps), *extra, *ex])
            if name not in best or secs < best[name][0]:
                best[name] = (secs, comp, skip, lat)
    ref_secs, _, _, ref = best["no cache"]
    lines = [f"**{title}**", "", fmt_row(["threshold", "block-stack runs (branch-steps)", "skipped", "denoise wall (s)", "speedup",
                                          "runs ratio", "max abs vs no cache", "PSNR (dB)"]),
             fmt_row(["---"] * 8)]
    for name, _, _ in configs:
        secs, comp, skip, lat = best[name]
        m, p = errors(lat, ref)
        lines.append(fmt_row([name, f"{comp}", f"{skip}", f"{secs:.2f}", f"{ref_secs / secs:.2f}×", f"{(comp + skip) / comp:.2f}×",
                              f"{m:.3e}", "∞" if p == float('inf') else f"{p:.1f}"]))
    return "\n".join(lines), best


def digits_accuracy(tc_art, work, threads, thresholds):
    """Classifier accuracy over 5 seeds × classes 0..9 per threshold (numpy noise)."""
    clf = load_file(os.path.join(ROOT, "tests/fixtures/digits_classifier.safetensors"))
    coef, icpt = clf["coef"].reshape(10, 64).astype(np.float64), clf["intercept"].astype(np.float64)
    acc = {}
    for t in thresholds:
        ok = 0
        comp_total = skip_total = 0
        for seed in range(5):
            noise = np.random.default_rng(100 + seed).standard_normal((10, 1, 16, 16)).astype(np.float32)
            inp = os.path.join(work, f"digits-acc-{seed}.safetensors")
            save_file({"input.latents": noise, "input.class_labels": np.arange(10, dtype=np.int64)}, inp)
            out = os.path.join(work, "digits-acc-out.safetensors")
            _, comp, skip, lat = run(tc_art, inp, out, threads, ["--steps", "20", "--teacache", f"{t}"])
            comp_total += comp
            skip_total += skip
            x = np.clip(lat.reshape(10, 16, 16).astype(np.float64), -1, 1)
            pooled = x.reshape(10, 8, 2, 8, 2).mean(axis=(2, 4)).reshape(10, 64)
            pred = np.argmax((pooled + 1) / 2 @ coef.T + icpt, axis=1)
            ok += int((pred == np.arange(10)).sum())
        acc[t] = (ok, comp_total, skip_total)
    return acc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench")
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "teacache-bench"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-flux", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    pin("omnic", a.work)
    pin("omnirt", a.work)
    print(f"uptime before: {uptime()}")
    t0 = time.time()
    out = []

    # Digits model (calibrated coefficients from models/zoo/digits-dit/teacache.json).
    digits = os.path.join(ROOT, "models/zoo/digits-dit")
    d_base = compile_(digits, os.path.join(a.work, "digits.omni"))
    d_tc = compile_(digits, os.path.join(a.work, "digits-tc.omni"), ["--teacache"])
    noise = np.random.default_rng(0).standard_normal((10, 1, 16, 16)).astype(np.float32)
    d_in = os.path.join(a.work, "digits-in.safetensors")
    save_file({"input.latents": noise, "input.class_labels": np.arange(10, dtype=np.int64)}, d_in)
    table, _ = cache_table("digits-dit (DiT, calibrated coefficients), 20 DDIM steps, batch of 10 classes, class CFG 4 (batched)",
                           d_base, d_tc, d_in, a.work, "digits", a.threads, a.repeats, 20)
    out.append(table)
    acc = digits_accuracy(d_tc, a.work, a.threads, THRESHOLDS + [0.8, 1.0])
    lines = ["", "**digits-dit quality per threshold** (50 samples: 5 noise seeds × classes 0..9, 20 steps, recognised by the digit classifier)", "",
             fmt_row(["threshold", "recognised", "block-stack runs / branch-steps"]), fmt_row(["---"] * 3)]
    for t, (ok, comp, skip) in acc.items():
        lines.append(fmt_row([f"{t:g}", f"{ok}/50", f"{comp}/{comp + skip}"]))
    out.append("\n".join(lines))

    if not a.skip_flux:
        pipe = make_pipe(a.bench, a.work, "flux-pipe", True)
        pipe_cfg = make_pipe(a.bench, a.work, "flux-pipe-cfg", False)
        io = load_file(os.path.join(a.bench, "io.safetensors"))
        rng = np.random.default_rng(1)
        f_in = os.path.join(a.work, "flux-in.safetensors")
        save_file({
            "input.latents": rng.standard_normal((1, 256, 64)).astype(np.float32),
            "input.prompt_embeds": io["input.encoder_hidden_states"],
            "input.pooled_prompt_embeds": io["input.pooled_projections"],
            "input.negative_prompt_embeds": rng.standard_normal((1, 64, 512)).astype(np.float32),
            "input.negative_pooled_prompt_embeds": rng.standard_normal((1, 256)).astype(np.float32),
            "input.img_ids": io["input.img_ids"],
            "input.txt_ids": io["input.txt_ids"],
        }, f_in)
        f_base = compile_(pipe, os.path.join(a.work, "flux.omni"))
        f_tc = compile_(pipe, os.path.join(a.work, "flux-tc.omni"), ["--teacache"])
        table, _ = cache_table("FLUX benchmark model (71.4 M parameters, published FLUX.1 coefficients), 28 steps, distilled guidance 3.5",
                               f_base, f_tc, f_in, a.work, "flux", a.threads, a.repeats, 28)
        out.append("\n" + table)

        c_on = compile_(pipe_cfg, os.path.join(a.work, "flux-cfg-batched.omni"))
        c_off = compile_(pipe_cfg, os.path.join(a.work, "flux-cfg-plain.omni"), ["--disable-pass", "cfg-batching"])
        best = {}
        for r in range(a.repeats):
            for name, art in (("two calls per step", c_off), ("cfg-batching (one call on a batch of 2)", c_on)):
                o = os.path.join(a.work, "flux-cfg-out.safetensors")
                secs, _, _, lat = run(art, f_in, o, a.threads, ["--steps", "28", "--true-cfg-scale", "4.0"])
                if name not in best or secs < best[name][0]:
                    best[name] = (secs, lat)
        (s_off, l_off), (s_on, l_on) = best["two calls per step"], best["cfg-batching (one call on a batch of 2)"]
        m, _ = errors(l_on, l_off)
        out.append("\n".join(["", "**CFG batching**, FLUX benchmark weights without the guidance embedding (true CFG 4, negative prompt), 28 steps", "",
                              fmt_row(["compiled", "denoise wall (s)", "ms/step"]), fmt_row(["---"] * 3),
                              fmt_row(["`--disable-pass cfg-batching`", f"{s_off:.2f}", f"{1e3 * s_off / 28:.1f}"]),
                              fmt_row(["default (cfg-batching)", f"{s_on:.2f}", f"{1e3 * s_on / 28:.1f}"]),
                              "", f"speedup {s_off / s_on:.2f}×; final latents max abs difference {m:.2e}"]))
    print("\n".join(out))
    print(f"\nuptime after: {uptime()}; {time.time() - t0:.0f} s; repeats {a.repeats}, minimum wall time of each configuration")


if __name__ == "__main__":
    main()
