#!/usr/bin/env python3
"""Side-by-side latency of the FLUX benchmark model (see make_flux_bench.py):
PyTorch eager, torch.compile, ONNX Runtime, OpenVINO and omnic's compiled
artifact, in one run, alternating.

Usage:
  flux_bench.py MODEL_DIR ARTIFACT [--omnirt PATH] [--threads 1,2]
                [--rounds 10] [--omnic-iters 3] [--work DIR]
                [--skip ENGINE,...]

MODEL_DIR is the output of make_flux_bench.py (config.json, weights and
io.safetensors with the fixed inputs); ARTIFACT is `omnic compile MODEL_DIR
-o ARTIFACT`; --omnirt is a release build of omnirt.

Before any timing it checks omnic's output against PyTorch's (max abs
<= 1e-3; it stops otherwise) and reports every other engine's max abs
difference from PyTorch eager. The ONNX model is exported once with the
dynamo exporter (the TorchScript exporter fails on aten::rms_norm) into
--work; OpenVINO compiles that ONNX file with INFERENCE_PRECISION_HINT f32.

Timing, for each thread count n: torch.set_num_threads(n), ONNX Runtime
intra_op_num_threads=n, OpenVINO INFERENCE_NUM_THREADS=n, `omnirt bench
--threads n`. Each engine is warmed up, then every round times one forward
of each engine in turn (the order rotates each round); omnic's turn is an
`omnirt bench ARTIFACT --iters K --warmup 1` process whose median_ms is
one sample (its load time is not timed). The table gives the median over
rounds, GFLOP/s (FLOPs per forward from omnirt's profile, the compiler's
count) and omnic/PyTorch-eager (latency ratio: < 1 means omnic is faster).
"""
import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import load_file

FLOPS_FALLBACK = 26.8e9  # per forward, `omnic inspect` of the benchmark model
ATOL = 1e-3
ARG_NAMES = ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids", "guidance"]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("artifact")
    ap.add_argument("--omnirt", default="target/release/omnirt")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--omnic-iters", type=int, default=3)
    ap.add_argument("--work", default=None, help="directory for the ONNX export and omnic's outputs (default: a temp dir)")
    ap.add_argument("--skip", default="", help="engines to leave out: eager,compile,onnxruntime,openvino")
    return ap.parse_args()


def machine():
    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return f"{model}, {os.cpu_count()} logical CPUs, load average {load[0]:.2f}"


def run_omnirt_bench(omnirt, artifact, io_file, threads, iters, warmup):
    cmd = [omnirt, "bench", artifact, "--inputs", io_file, "--threads", str(threads), "--iters", str(iters), "--warmup", str(warmup)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"omnirt bench failed ({' '.join(cmd)}):\n{p.stdout}{p.stderr}")
    last = p.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"median_ms=([0-9.]+) iters=(\d+)", last)
    if not m:
        sys.exit(f"unexpected last line of omnirt bench: {last!r}")
    return float(m.group(1)), p.stdout


def main():
    a = parse_args()
    skip = set(filter(None, a.skip.split(",")))
    threads = [int(t) for t in a.threads.split(",")]
    work = a.work or tempfile.mkdtemp(prefix="flux-bench-")
    os.makedirs(work, exist_ok=True)
    io_file = os.path.join(a.model_dir, "io.safetensors")
    io = load_file(io_file)
    kwargs = {n: io[f"input.{n}"] for n in ARG_NAMES}
    model = FluxTransformer2DModel.from_pretrained(a.model_dir, torch_dtype=torch.float32).eval()
    nparams = sum(p.numel() for p in model.parameters())
    print(f"machine: {machine()}")
    print(f"model: FluxTransformer2DModel, {nparams / 1e6:.1f} M parameters, f32, batch 1, "
          f"{kwargs['hidden_states'].shape[1]} image + {kwargs['encoder_hidden_states'].shape[1]} text tokens")
    print(f"torch {torch.__version__}")

    with torch.no_grad():
        ref = model(**kwargs, return_dict=False)[0]
    saved = io["output.sample"]
    print(f"eager vs the saved reference: max abs {float((ref - saved).abs().max()):.3e}")

    # omnic's output first: nothing is timed unless it matches.
    out_file = os.path.join(work, "omnic-out.safetensors")
    p = subprocess.run([a.omnirt, "run", a.artifact, "--inputs", io_file, "--outputs", out_file], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"omnirt run failed:\n{p.stdout}{p.stderr}")
    got = load_file(out_file)["output.sample"]
    err = float((got - ref).abs().max())
    print(f"omnic vs PyTorch eager: max abs {err:.3e} (limit {ATOL:g})")
    if not err <= ATOL:
        sys.exit("omnic's output does not match PyTorch's; not timing")

    _, report = run_omnirt_bench(a.omnirt, a.artifact, io_file, threads[0], 1, 0)
    m = re.search(r"forward: .*?, ([0-9.]+) GFLOP,", report)
    flops = float(m.group(1)) * 1e9 if m else FLOPS_FALLBACK
    print(f"FLOPs per forward: {flops / 1e9:.2f} G ({'omnirt profile' if m else 'fallback constant'})")

    engines = {}  # name -> (make(n) -> callable forward)

    def eager(n):
        def f():
            with torch.no_grad():
                return model(**kwargs, return_dict=False)[0]
        return f

    engines["PyTorch eager"] = eager

    if "compile" not in skip:
        compiled = torch.compile(model)
        t = time.perf_counter()
        with torch.no_grad():
            y = compiled(**kwargs, return_dict=False)[0]
        print(f"torch.compile: first call {time.perf_counter() - t:.1f} s, max abs vs eager {float((y - ref).abs().max()):.3e}")

        def tc(n):
            def f():
                with torch.no_grad():
                    return compiled(**kwargs, return_dict=False)[0]
            return f

        engines["torch.compile"] = tc

    onnx_path = os.path.join(work, "flux.onnx")
    if not {"onnxruntime", "openvino"} <= skip:
        if not os.path.exists(onnx_path):
            t = time.perf_counter()
            torch.onnx.export(model, (), onnx_path, kwargs=dict(kwargs, return_dict=False), dynamo=True, external_data=True)
            print(f"ONNX export (dynamo): {time.perf_counter() - t:.1f} s")
        np_inputs = {n: kwargs[n].numpy() for n in ARG_NAMES}

    if "onnxruntime" not in skip:
        import onnxruntime as ort

        print(f"onnxruntime {ort.__version__}")
        names = [i.name for i in ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).get_inputs()]

        def ortf(n):
            so = ort.SessionOptions()
            so.intra_op_num_threads = n
            so.inter_op_num_threads = 1
            s = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
            feed = {k: np_inputs[k] for k in names}
            return lambda: s.run(None, feed)[0]

        y = ortf(threads[0])()
        print(f"ONNX Runtime: max abs vs eager {np.abs(y - ref.numpy()).max():.3e}")
        engines["ONNX Runtime"] = ortf

    if "openvino" not in skip:
        import openvino as ov

        print(f"openvino {ov.__version__}")
        core = ov.Core()
        ov_model = core.read_model(onnx_path)

        def ovf(n):
            c = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": n})
            req = c.create_infer_request()
            feed = {i.get_any_name(): np_inputs[i.get_any_name()] for i in c.inputs}
            return lambda: req.infer(feed)[c.output(0)]

        y = ovf(threads[0])()
        print(f"OpenVINO: max abs vs eager {np.abs(y - ref.numpy()).max():.3e}")
        engines["OpenVINO"] = ovf

    results = {}
    spread = {}
    rss = {}
    for n in threads:
        torch.set_num_threads(n)
        fns = {name: make(n) for name, make in engines.items()}
        for f in fns.values():  # warm-up
            f()
            f()
        order = list(fns) + ["omnic"]
        times = {k: [] for k in order}
        for r in range(a.rounds):
            rot = order[r % len(order):] + order[: r % len(order)]
            for k in rot:
                if k == "omnic":
                    ms, rep = run_omnirt_bench(a.omnirt, a.artifact, io_file, n, a.omnic_iters, 1)
                    times[k].append(ms)
                    mem = re.search(r"^memory: .*$", rep, re.M)
                    if mem:
                        rss[n] = mem.group(0)
                else:
                    t = time.perf_counter()
                    fns[k]()
                    times[k].append((time.perf_counter() - t) * 1e3)
        results[n] = {k: statistics.median(v) for k, v in times.items()}
        spread[n] = {k: (min(v), max(v)) for k, v in times.items()}
        print(f"threads {n}: done ({a.rounds} rounds, load average {os.getloadavg()[0]:.2f})")

    print()
    print(f"median latency per forward over {a.rounds} alternating rounds; GFLOP/s at {flops / 1e9:.2f} GFLOP per forward")
    print(f"{'engine':<16} {'threads':>7} {'ms':>10} {'min..max ms':>19} {'GFLOP/s':>9} {'omnic/engine':>12}")
    for n in threads:
        base = results[n]["omnic"]
        for k, ms in results[n].items():
            lo, hi = spread[n][k]
            print(f"{k:<16} {n:>7} {ms:>10.2f} {f'{lo:.1f}..{hi:.1f}':>19} {flops / 1e9 / (ms / 1e3):>9.1f} {base / ms:>12.3f}")
        eager_ms = results[n]["PyTorch eager"]
        print(f"omnic/PyTorch (latency ratio, {n} thread{'s' if n > 1 else ''}): {base / eager_ms:.3f}")
        if n in rss:
            print(f"omnic {rss[n]}")
    print(f"machine after the run: {machine()}")


if __name__ == "__main__":
    main()
