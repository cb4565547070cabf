#!/usr/bin/env python3
"""Qwen3 causal-LM decode latency: transformers (PyTorch eager, its KV
cache) against omnic's compiled decode artifact (`omnirt generate`), in one
run, alternating.

Usage:
  qwen_bench.py MODEL_DIR [--omnic PATH] [--omnirt PATH] [--artifact PATH]
                [--threads 1,2] [--rounds 3] [--prompt-len 128]
                [--max-tokens 32] [--check-tokens 8] [--skip-omnic]

MODEL_DIR gets a random-weight `Qwen3ForCausalLM` (hidden 768, 12 layers,
12 heads, 4 KV heads, head dim 64, intermediate 2048, vocab 32000: 124.7 M
parameters, f32, seed 0) written with transformers' `save_pretrained` when
it holds no config.json yet; keep it outside the repository. The artifact
(default MODEL_DIR/../qwen3-bench.omni) is compiled once with `omnic
compile MODEL_DIR -o ARTIFACT` when missing.

The prompt is `--prompt-len` fixed pseudo-random ids (seed 1). Before any
timing the greedy ids of both engines are compared for `--check-tokens`
tokens (transformers' top-2 logit margin is printed for each step, so a
disagreement on a near-tie can be told from a real one).

Timing, for each thread count n (`torch.set_num_threads(n)`, `omnirt
generate --threads n`): each round runs transformers then omnirt (the
order alternates per round). transformers: one prefill forward over the
prompt with `use_cache=True, logits_to_keep=1` as `generate` does (timed:
prefill_ms), then `--max-tokens` − 1
greedy decode forwards of one token each on the returned
`past_key_values` (timed: decode_ms_per_token = their total / their
count), the same count as `omnirt generate --max-tokens N` whose line
`prefill_ms=<v> decode_ms_per_token=<v> tokens=<n>` gives omnic's sample
(its load time is not timed). The table gives medians over rounds and
omnic/transformers ratios (< 1 means omnic is faster).
"""
import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch

CONFIG = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    head_dim=64,
    intermediate_size=2048,
    vocab_size=32000,
    max_position_embeddings=2048,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
GEN_LINE = re.compile(r"prefill_ms=([0-9.eE+-]+)\s+decode_ms_per_token=([0-9.eE+-]+)\s+tokens=(\d+)")
IDS_LINE = re.compile(r"^generated_ids=([0-9,]*)$", re.M)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--omnic", default="target/debug/omnic")
    ap.add_argument("--omnirt", default="target/release/omnirt")
    ap.add_argument("--artifact", default=None)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--check-tokens", type=int, default=8)
    ap.add_argument("--skip-omnic", action="store_true", help="time transformers only (omnic side not built yet)")
    return ap.parse_args()


def machine():
    model, cores = platform.processor(), "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                model = v.strip()
            if k.strip() == "Core(s) per socket":
                cores = v.strip()
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),)
    return f"{model}, {cores} cores per socket, {os.cpu_count()} logical CPUs, load average {load[0]:.2f}"


def ensure_model(model_dir):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if not os.path.exists(os.path.join(model_dir, "config.json")):
        torch.manual_seed(0)
        model = Qwen3ForCausalLM(Qwen3Config(**CONFIG)).eval()
        model.save_pretrained(model_dir)
        print(f"wrote a random-weight Qwen3ForCausalLM to {model_dir}")
    model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {n / 1e6:.1f} M parameters, {model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}")
    return model


def prompt_ids(n, vocab):
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, vocab, (1, n), generator=g)


@torch.inference_mode()
def hf_generate(model, ids, max_tokens):
    """Greedy decode with the KV cache: (prefill_ms, decode_ms_per_token, ids, margins)."""
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    prefill = (time.perf_counter() - t0) * 1e3
    past, logits = out.cache, out.logits[:, -1]
    tokens, margins = [], []
    decode = 0.0
    for step in range(max_tokens):
        top2 = torch.topk(logits[0], 2).values
        margins.append(float(top2[0] - top2[1]))
        nxt = int(torch.argmax(logits[0]))
        tokens.append(nxt)
        if step + 1 == max_tokens:
            break
        t0 = time.perf_counter()
        out = model(input_ids=torch.tensor([[nxt]]), cache=past, use_cache=True)
        decode += (time.perf_counter() - t0) * 1e3
        past, logits = out.cache, out.logits[:, -1]
    steps = max(max_tokens - 1, 1)
    return prefill, decode / steps, tokens, margins


def omnirt_generate(omnirt, artifact, ids, max_tokens, threads):
    cmd = [omnirt, "generate", artifact, "--prompt-ids", ",".join(str(int(i)) for i in ids[0]), "--max-tokens", str(max_tokens), "--threads", str(threads), "--ignore-eos"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"omnirt generate failed (exit {p.returncode}):\n{p.stdout}{p.stderr}")
    m = GEN_LINE.search(p.stdout)
    if not m:
        sys.exit(f"omnirt generate printed no `prefill_ms=… decode_ms_per_token=… tokens=…` line:\n{p.stdout}")
    got = IDS_LINE.search(p.stdout)
    tokens = [int(t) for t in got.group(1).split(",") if t] if got else None
    return float(m.group(1)), float(m.group(2)), tokens, int(m.group(3))


def main():
    a = parse_args()
    threads = [int(t) for t in a.threads.split(",") if t]
    print("machine:", machine())
    print(f"torch {torch.__version__}")
    model = ensure_model(a.model_dir)
    ids = prompt_ids(a.prompt_len, model.config.vocab_size)
    artifact = a.artifact or os.path.join(os.path.dirname(os.path.abspath(a.model_dir)), "qwen3-bench.omni")
    if not a.skip_omnic and not os.path.exists(artifact):
        t0 = time.perf_counter()
        p = subprocess.run([a.omnic, "compile", a.model_dir, "-o", artifact], capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"omnic compile failed (exit {p.returncode}):\n{p.stdout}{p.stderr}")
        print(f"omnic compile: {time.perf_counter() - t0:.1f} s -> {artifact}")

    # Greedy agreement before any timing.
    torch.set_num_threads(threads[0])
    _, _, ref, margins = hf_generate(model, ids, a.check_tokens)
    print("transformers greedy ids:", ref, " top-2 margins:", ", ".join(f"{m:.2e}" for m in margins))
    if not a.skip_omnic:
        _, _, got, _ = omnirt_generate(a.omnirt, artifact, ids, a.check_tokens, threads[0])
        print("omnic greedy ids:       ", got)
        same = next((i for i, (x, y) in enumerate(zip(ref, got or [])) if x != y), min(len(ref), len(got or [])))
        print(f"greedy agreement: {same}/{len(ref)} tokens")

    rows = []
    for n in threads:
        torch.set_num_threads(n)
        hf_generate(model, ids, 3)  # warm-up
        if not a.skip_omnic:
            omnirt_generate(a.omnirt, artifact, ids, 3, n)
        samples = {"hf": [], "omnic": []}
        for r in range(a.rounds):
            order = ["hf", "omnic"] if r % 2 == 0 else ["omnic", "hf"]
            for eng in order:
                if eng == "hf":
                    pf, dc, _, _ = hf_generate(model, ids, a.max_tokens)
                    samples["hf"].append((pf, dc))
                elif not a.skip_omnic:
                    pf, dc, _, _ = omnirt_generate(a.omnirt, artifact, ids, a.max_tokens, n)
                    samples["omnic"].append((pf, dc))
        med = {k: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v)) for k, v in samples.items() if v}
        rows.append((n, med))

    print(f"\nprompt {a.prompt_len} tokens, {a.max_tokens} new tokens (greedy), {a.rounds} rounds, medians")
    print(f"{'threads':>7}  {'engine':<12} {'prefill ms':>11} {'decode ms/tok':>14} {'tok/s':>8}")
    for n, med in rows:
        for k, name in (("hf", "transformers"), ("omnic", "omnic")):
            if k in med:
                pf, dc = med[k]
                print(f"{n:>7}  {name:<12} {pf:>11.2f} {dc:>14.2f} {1e3 / dc:>8.1f}")
        if "omnic" in med:
            print(f"{n:>7}  {'omnic/hf':<12} {med['omnic'][0] / med['hf'][0]:>11.2f} {med['omnic'][1] / med['hf'][1]:>14.2f}")


if __name__ == "__main__":
    main()
