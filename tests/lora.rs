//! LoRA end to end on the `lora` fixture (FluxTransformer2DModel `base/`, a
//! PEFT adapter `adapter/` made by peft, the same adapter in the diffusers
//! layout `adapter_diffusers/` written by diffusers' save_lora_weights;
//! references `output.sample_lora` / `output.sample_base` from PyTorch):
//! merged at compile time (`omnic compile --lora`), and bound at run time to
//! a program compiled with `--lora-slots` (runtime API and `omnirt run
//! --lora`), with -O2 (qkv-fusion on). Every bad adapter fails with a clear
//! message.

use crate::support::{omnic, omnirt, root, run, text};
use omnic_runtime::exec::{ExecOptions, Executable};
use omnic_runtime::lora::{AdapterSpec, LoraRuntime};
use omnic_runtime::HostTensor;
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-4;

fn lora_dir() -> PathBuf {
    root().join("tests/fixtures/lora")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `omnic compile tests/fixtures/lora/base -o ART extra…`, which must succeed.
fn compile(art: &Path, extra: &[&str]) {
    let base = lora_dir().join("base");
    let mut args = vec!["compile", s(&base), "-o", s(art)];
    args.extend_from_slice(extra);
    let o = run(&omnic(), &args);
    assert!(o.status.success(), "omnic compile: {}", text(&o));
    eprintln!("{}", text(&o).trim());
}

fn io() -> Vec<(String, HostTensor)> {
    omnic_runtime::io::read_all(&lora_dir().join("io.safetensors")).unwrap()
}

fn reference(name: &str) -> HostTensor {
    io().into_iter().find(|(n, _)| n == name).unwrap().1
}

fn max_abs(a: &HostTensor, reference_name: &str) -> f64 {
    a.compare(&reference(reference_name)).unwrap_or_else(|| panic!("shape {:?} vs {reference_name}", a.shape)).0
}

/// `sample` of one forward with `extra` inputs added to the fixture's.
fn forward(exe: &Executable, extra: &[(String, HostTensor)]) -> HostTensor {
    let io = io();
    let outs = exe.run_forward(io.iter().chain(extra).map(|(n, t)| (n.as_str(), t))).unwrap();
    outs.into_iter().find(|(n, _)| n == "sample").unwrap().1
}

/// A diffusers-layout adapter file with one module (`transformer.<module>`),
/// rank `r`, `A: [r, inp]`, `B: [out, r]`.
fn write_adapter(path: &Path, module: &str, r: usize, inp: usize, out: usize) {
    let a: Vec<f32> = (0..r * inp).map(|i| (i % 7) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..out * r).map(|i| (i % 5) as f32 * 0.01).collect();
    let t = vec![
        (format!("transformer.{module}.lora_A.weight"), HostTensor::from_f32(&[r, inp], &a)),
        (format!("transformer.{module}.lora_B.weight"), HostTensor::from_f32(&[out, r], &b)),
    ];
    omnic_runtime::io::write(path, &t, None).unwrap();
}

/// A copy of the PEFT adapter with `config` as its adapter_config.json.
fn peft_copy(dir: &Path, config: &str) -> PathBuf {
    let d = dir.join("bad_peft");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(lora_dir().join("adapter/adapter_model.safetensors"), d.join("adapter_model.safetensors")).unwrap();
    std::fs::write(d.join("adapter_config.json"), config).unwrap();
    d
}

#[test]
fn lora_merged_at_compile_time() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("merged.omni");
    compile(&art, &["--lora", s(&lora_dir().join("adapter"))]);
    let exe = Executable::load(&art, &ExecOptions { threads: 2, ..Default::default() }).unwrap();
    let e = max_abs(&forward(&exe, &[]), "output.sample_lora");
    eprintln!("merged (PEFT adapter, -O2): max abs {e:.3e} vs output.sample_lora");
    assert!(e <= TOL, "merged: {e:e}");

    // Run-time adapters need slots: a clear error from the API and omnirt.
    let mut rt = LoraRuntime::new(&exe, 2).unwrap();
    assert!(rt.slots().is_none());
    assert!(rt.inputs(&[]).unwrap().is_empty());
    let e = rt.inputs(&[AdapterSpec::parse(s(&lora_dir().join("adapter"))).unwrap()]).unwrap_err().to_string();
    assert!(e.contains("the program has no LoRA slots"), "{e}");
    let out = dir.path().join("out.safetensors");
    let o =
        run(&omnirt(), &["run", s(&art), "--inputs", s(&lora_dir().join("io.safetensors")), "--outputs", s(&out), "--lora", s(&lora_dir().join("adapter"))]);
    assert!(!o.status.success() && text(&o).contains("the program has no LoRA slots"), "{}", text(&o));
}

#[test]
fn lora_slots_swap_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("slots.omni");
    let dump = dir.path().join("dump");
    compile(&art, &["--lora-slots", "2", "--lora-rank", "8", "--dump-dir", s(&dump)]);
    // qkv-fusion (in -O2) still fused the base projections next to the slots.
    let ir = std::fs::read_to_string(dump.join("program.omir")).unwrap();
    assert!(ir.contains("to_q+to_k+to_v"), "qkv-fusion did not fire on the slotted program");
    assert!(ir.contains("input \"lora.transformer_blocks.0.attn.to_q.A\""), "no slot inputs in the program");

    let exe = Executable::load(&art, &ExecOptions { threads: 2, ..Default::default() }).unwrap();
    let mut rt = LoraRuntime::new(&exe, 2).unwrap();
    let slots = rt.slots().unwrap().clone();
    assert_eq!((slots.slots, slots.rank), (2, 8));
    let peft = AdapterSpec::parse(s(&lora_dir().join("adapter"))).unwrap();
    let diffusers = AdapterSpec::parse(s(&lora_dir().join("adapter_diffusers"))).unwrap();

    // A → none → A in one process: lora, base, lora again, bit for bit.
    let a1 = forward(&exe, &rt.inputs(std::slice::from_ref(&peft)).unwrap());
    let none = forward(&exe, &rt.inputs(&[]).unwrap());
    let a2 = forward(&exe, &rt.inputs(std::slice::from_ref(&peft)).unwrap());
    let (e1, e0) = (max_abs(&a1, "output.sample_lora"), max_abs(&none, "output.sample_base"));
    eprintln!("slots: adapter {e1:.3e} vs output.sample_lora, none {e0:.3e} vs output.sample_base");
    assert!(e1 <= TOL && e0 <= TOL, "{e1:e} {e0:e}");
    assert_eq!(a1, a2, "A → none → A changed the output");
    assert_eq!(rt.cache().loads(), 1, "the adapter was read again although resident");

    // The diffusers layout gives the same result; two half adapters add up to one.
    let d = forward(&exe, &rt.inputs(std::slice::from_ref(&diffusers)).unwrap());
    assert!(d.compare(&a1).unwrap().0 <= 1e-6, "diffusers layout vs PEFT");
    let half = AdapterSpec { scale: 0.5, ..peft.clone() };
    let halves = forward(&exe, &rt.inputs(&[half.clone(), half]).unwrap());
    let e2 = max_abs(&halves, "output.sample_lora");
    assert!(e2 <= TOL, "two halves: {e2:e}");
    // Both layouts stay resident (capacity 2); the cache test in the runtime covers eviction.
    assert_eq!(rt.cache().resident().len(), 2);

    // The command line: omnirt run --lora ADAPTER:SCALE.
    let out = dir.path().join("out.safetensors");
    let io_path = lora_dir().join("io.safetensors");
    let spec = format!("{}:1.0", lora_dir().join("adapter").display());
    let o = run(&omnirt(), &["run", s(&art), "--inputs", s(&io_path), "--outputs", s(&out), "--lora", &spec]);
    assert!(o.status.success(), "{}", text(&o));
    let got = omnic_runtime::io::read_all(&out).unwrap().into_iter().find(|(n, _)| n == "output.sample").unwrap().1;
    assert!(max_abs(&got, "output.sample_lora") <= TOL);
    let o = run(&omnirt(), &["run", s(&art), "--inputs", s(&io_path), "--outputs", s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    let got = omnic_runtime::io::read_all(&out).unwrap().into_iter().find(|(n, _)| n == "output.sample").unwrap().1;
    assert!(max_abs(&got, "output.sample_base") <= TOL);

    // Errors, each naming what is wrong.
    let bad = |spec: &str, want: &[&str]| {
        let o = run(&omnirt(), &["run", s(&art), "--inputs", s(&io_path), "--outputs", s(&out), "--lora", spec]);
        let t = text(&o);
        assert!(!o.status.success() && want.iter().all(|w| t.contains(w)), "{spec}: {t}");
        assert!(!t.contains("panicked"), "{t}");
    };
    let f = dir.path().join("unknown.safetensors");
    write_adapter(&f, "transformer_blocks.5.attn.to_q", 2, 32, 32);
    bad(s(&f), &["target module `transformer_blocks.5.attn.to_q` is not in the model"]);
    let f = dir.path().join("rank.safetensors");
    write_adapter(&f, "transformer_blocks.0.attn.to_q", 9, 32, 32);
    bad(s(&f), &["module `transformer_blocks.0.attn.to_q` has rank 9, above the program's slot rank 8"]);
    let f = dir.path().join("shape.safetensors");
    write_adapter(&f, "transformer_blocks.0.attn.to_q", 2, 16, 32);
    bad(s(&f), &["module `transformer_blocks.0.attn.to_q`", "[32, 16]", "the model's weight is [32, 32]"]);
    let p = peft_copy(dir.path(), r#"{"peft_type": "LORA", "r": -4, "lora_alpha": 8}"#);
    bad(s(&p), &["adapter_config.json: malformed adapter config: `r` is -4, expected a positive integer"]);
    let a = s(&lora_dir().join("adapter")).to_string();
    let o = run(&omnirt(), &["run", s(&art), "--inputs", s(&io_path), "--outputs", s(&out), "--lora", &a, "--lora", &a, "--lora", &a]);
    assert!(!o.status.success() && text(&o).contains("3 adapters given but the program has 2 LoRA slot(s)"), "{}", text(&o));
}

#[test]
fn lora_compile_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("x.omni");
    let bad = |extra: &[&str], want: &[&str]| {
        let base = lora_dir().join("base");
        let mut args = vec!["compile", s(&base), "-o", s(&art)];
        args.extend_from_slice(extra);
        let o = run(&omnic(), &args);
        let t = text(&o);
        assert!(!o.status.success() && want.iter().all(|w| t.contains(w)), "{extra:?}: {t}");
        assert!(!t.contains("panicked"), "{t}");
    };
    let f = dir.path().join("unknown.safetensors");
    write_adapter(&f, "transformer_blocks.5.attn.to_q", 2, 32, 32);
    bad(&["--lora", s(&f)], &["target module `transformer_blocks.5.attn.to_q` is not in the model"]);
    let f = dir.path().join("shape.safetensors");
    write_adapter(&f, "transformer_blocks.0.attn.to_q", 2, 16, 32);
    bad(&["--lora", s(&f)], &["module `transformer_blocks.0.attn.to_q`: the update lora_B·lora_A is [32, 16]", "the model's weight is [32, 32]"]);
    let p = peft_copy(dir.path(), "{\"r\": 4, \"lora_alpha\": 8, \"target_modules\": 12}");
    bad(&["--lora", s(&p)], &["malformed adapter config: `target_modules` is 12"]);
    bad(&["--lora", s(&dir.path().join("nowhere"))], &["not a LoRA adapter"]);
    bad(&["--lora", s(&lora_dir().join("adapter")), "--external-weights"], &["--lora merges adapters into the weights"]);
    bad(&["--lora-slots", "1"], &["--lora-rank"]);
    bad(&["--lora-slots", "0", "--lora-rank", "4"], &["--lora-slots 0"]);
}

/// A denoise pipeline (`tests/fixtures/denoise`: FLUX transformer + scheduler,
/// the same module names and shapes as the lora fixture's base) compiled
/// with slots: without an adapter the loop reproduces the fixture's
/// reference latents (diffusers); with the adapter bound at run time it
/// equals the loop compiled with the adapter merged. Both with CFG batching.
#[test]
fn lora_slots_in_a_denoise_loop() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = root().join("tests/fixtures/denoise");
    let io_path = pipe.join("io.safetensors");
    let adapter = lora_dir().join("adapter");
    let build = |name: &str, extra: &[&str]| {
        let art = dir.path().join(name);
        let mut args = vec!["compile", s(&pipe), "-o", s(&art)];
        args.extend_from_slice(extra);
        let o = run(&omnic(), &args);
        assert!(o.status.success(), "{}", text(&o));
        art
    };
    let slotted = build("slots.omni", &["--lora-slots", "1", "--lora-rank", "4"]);
    let merged = build("merged.omni", &["--lora", s(&adapter)]);
    let run_loop = |art: &Path, tag: &str, extra: &[&str]| -> HostTensor {
        let out = dir.path().join(format!("{tag}.safetensors"));
        let mut args = vec!["run", s(art), "--inputs", s(&io_path), "--outputs", s(&out), "--steps", "8", "--true-cfg-scale", "4.0", "--threads", "2"];
        args.extend_from_slice(extra);
        let o = run(&omnirt(), &args);
        let t = text(&o);
        assert!(o.status.success() && t.contains("(batched)"), "{tag}: {t}");
        omnic_runtime::io::read_all(&out).unwrap().into_iter().find(|(n, _)| n == "output.latents").unwrap().1
    };
    let reference = omnic_runtime::io::read_all(&io_path).unwrap().into_iter().find(|(n, _)| n == "output.latents").unwrap().1;
    let base = run_loop(&slotted, "base", &[]);
    let e0 = base.compare(&reference).unwrap().0;
    let with = run_loop(&slotted, "slot", &["--lora", s(&adapter)]);
    let m = run_loop(&merged, "merged", &[]);
    let e1 = with.compare(&m).unwrap().0;
    let moved = with.compare(&base).unwrap().0;
    eprintln!("denoise loop with slots: no adapter {e0:.3e} vs diffusers; bound adapter {e1:.3e} vs merged; adapter moves latents by {moved:.3}");
    assert!(e0 <= TOL && e1 <= TOL && moved > 1e-2, "{e0:e} {e1:e} {moved}");
}

/// `omnirt generate` on an artifact compiled with slots: without an adapter
/// it is the base model — the same picture as the artifact without slots
/// (the slot path adds exact zeros).
#[test]
fn lora_slots_generate_without_adapter_is_the_base_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("models/zoo/digits-dit");
    let build = |name: &str, extra: &[&str]| {
        let art = dir.path().join(name);
        let mut args = vec!["compile", s(&model), "-o", s(&art)];
        args.extend_from_slice(extra);
        let o = run(&omnic(), &args);
        assert!(o.status.success(), "{}", text(&o));
        art
    };
    let plain = build("plain.omni", &[]);
    let slotted = build("slots.omni", &["--lora-slots", "1", "--lora-rank", "4"]);
    let draw = |art: &Path, png: &str| -> Vec<u8> {
        let out = dir.path().join(png);
        let o = run(&omnirt(), &["generate", s(art), "--class", "3,7", "--steps", "6", "--seed", "1", "-o", s(&out)]);
        assert!(o.status.success(), "{png}: {}", text(&o));
        std::fs::read(&out).unwrap()
    };
    let (a, b) = (draw(&plain, "plain.png"), draw(&slotted, "slots.png"));
    assert!(!a.is_empty() && a == b, "slotted artifact without adapter drew a different picture ({} vs {} bytes)", a.len(), b.len());
}
