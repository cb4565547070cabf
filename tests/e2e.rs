//! End to end: `omnic compile` each single-forward fixture to a `.omni`
//! artifact, run it with the runtime executor (`omnic_runtime::exec`) on
//! the fixture's inputs, and require every output the program produces
//! within max abs 1e-4 of the reference library's `output.*`.

use crate::support::{fixture, omnic, omnirt, run, text};
use omnic_runtime::exec::{ExecOptions, Executable};
use omnic_runtime::HostTensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-4;

/// `omnic compile tests/fixtures/<name> -o <dir>/<name>.omni [extra…]`.
fn compile(name: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    let art = dir.join(format!("{name}.omni"));
    let src = fixture(name);
    let mut args = vec!["compile", src.to_str().unwrap(), "-o", art.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(&omnic(), &args);
    assert!(o.status.success(), "omnic compile {name}: {}", text(&o));
    eprintln!("{name}: {}", text(&o).trim());
    art
}

fn io(name: &str) -> Vec<(String, HostTensor)> {
    omnic_runtime::io::read_all(&fixture(name).join("io.safetensors")).unwrap()
}

fn max_abs(a: &HostTensor, r: &HostTensor, what: &str) -> f64 {
    match a.compare(r) {
        Some((m, _)) => m,
        None => panic!("{what}: shape {:?} vs reference {:?}", a.shape, r.shape),
    }
}

/// Compile `name`, run it on `io.safetensors`, compare every output that
/// has an `output.<name>` reference; returns the largest max abs error.
fn check(name: &str, extra: &[&str]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let art = compile(name, dir.path(), extra);
    let exe = Executable::load(&art, &ExecOptions { threads: 2, ..Default::default() }).unwrap_or_else(|e| panic!("{name}: load: {e}"));
    let io = io(name);
    let refs: HashMap<&str, &HostTensor> = io.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let t0 = std::time::Instant::now();
    let outs = exe.run_forward(io.iter().map(|(n, t)| (n.as_str(), t))).unwrap_or_else(|e| panic!("{name}: run: {e}"));
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut worst = 0.0f64;
    let mut report = String::new();
    let mut compared = 0;
    for (o, t) in &outs {
        let rname = format!("output.{o}");
        let Some(r) = refs.get(rname.as_str()) else { continue };
        let m = max_abs(t, r, &rname);
        report += &format!("  {rname:<32} max_abs {m:.3e}\n");
        worst = worst.max(m);
        compared += 1;
    }
    assert!(compared > 0, "{name}: no output has a reference (outputs: {:?})", outs.iter().map(|(n, _)| n).collect::<Vec<_>>());
    eprintln!("{name}: run {ms:.1} ms, worst max_abs {worst:.3e}\n{report}");
    assert!(worst <= TOL, "{name}: exceeds max abs {TOL:e}\n{report}");
    worst
}

macro_rules! e2e {
    ($($test:ident => $fixture:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            check($fixture, &[]);
        }
    )*};
}

e2e! {
    e2e_dit => "dit",
    e2e_flux => "flux",
    e2e_flux_noguid => "flux_noguid",
    e2e_flux2 => "flux2",
    e2e_flux2_klein => "flux2_klein",
    e2e_sd3 => "sd3",
    e2e_sd3_dual => "sd3_dual",
    e2e_sd3_noqk => "sd3_noqk",
    e2e_qwenimage => "qwenimage",
    e2e_qwenimage_edit => "qwenimage_edit",
    e2e_qwenimage_layered => "qwenimage_layered",
    e2e_longcat => "longcat",
    e2e_glmimage => "glmimage",
    e2e_wan => "wan",
    e2e_vae => "vae",
    e2e_vae_flux => "vae_flux",
    e2e_qwen2 => "qwen2",
    e2e_qwen3 => "qwen3",
    e2e_qwen3moe => "qwen3moe",
}

/// Z-Image takes one latent and one caption per sample: each sample `b`
/// runs alone (`x` ← `input.x.{b}`, `cap_feats` ← `input.cap_feats.{b}`,
/// `t` ← `[input.t[b]]`) and is compared with `output.sample.{b}` (see
/// models/tests/parity/zimage.rs).
#[test]
fn e2e_zimage_per_sample() {
    let dir = tempfile::tempdir().unwrap();
    let art = compile("zimage", dir.path(), &[]);
    let exe = Executable::load(&art, &ExecOptions { threads: 2, ..Default::default() }).unwrap_or_else(|e| panic!("zimage: load: {e}"));
    let io: HashMap<String, HostTensor> = io("zimage").into_iter().collect();
    let t_all = io["input.t"].to_f32_vec();
    let mut worst = 0.0f64;
    for (b, t) in t_all.iter().enumerate() {
        let x = &io[&format!("input.x.{b}")];
        let cap = &io[&format!("input.cap_feats.{b}")];
        let tb = HostTensor::from_f32(&[1], &[*t]);
        let outs = exe.run_forward([("x", x), ("cap_feats", cap), ("t", &tb)]).unwrap_or_else(|e| panic!("zimage sample {b}: {e}"));
        let (_, sample) = outs.iter().find(|(n, _)| n == "sample").expect("a `sample` output");
        let m = max_abs(sample, &io[&format!("output.sample.{b}")], &format!("output.sample.{b}"));
        eprintln!("zimage sample {b}: max_abs {m:.3e}");
        worst = worst.max(m);
    }
    assert!(worst <= TOL, "zimage: max abs {worst:e} exceeds {TOL:e}");
}

/// Weights left in the checkpoint's safetensors files: the artifact embeds
/// only the weights derived at compile time (fused QKV projections here),
/// records the files, and runs the same; `weights_dir` finds the files
/// elsewhere.
#[test]
fn e2e_external_weights() {
    use omnic_runtime::artifact::{WeightOrigin, WeightSource};
    let name = "qwenimage";
    let dir = tempfile::tempdir().unwrap();
    let embedded = compile(name, dir.path(), &[]);
    let ext_dir = dir.path().join("ext");
    std::fs::create_dir_all(&ext_dir).unwrap();
    let external = compile(name, &ext_dir, &["--external-weights"]);
    let (se, sx) = (std::fs::metadata(&embedded).unwrap().len(), std::fs::metadata(&external).unwrap().len());
    assert!(sx < se, "external-weights artifact ({sx} B) should be smaller than the embedded one ({se} B)");
    let io = io(name);
    let refs: HashMap<&str, &HostTensor> = io.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let check_run = |exe: &Executable| {
        let outs = exe.run_forward(io.iter().map(|(n, t)| (n.as_str(), t))).unwrap();
        let (_, s) = outs.iter().find(|(n, _)| n == "sample").unwrap();
        let m = max_abs(s, refs["output.sample"], "output.sample");
        assert!(m <= TOL, "{name} (external weights): max abs {m:e}");
    };
    let exe = Executable::load(&external, &ExecOptions { threads: 2, ..Default::default() }).unwrap();
    match &exe.artifact().manifest().weights {
        WeightSource::External { files } => assert!(files.iter().any(|f| f.ends_with("diffusion_pytorch_model.safetensors")), "{files:?}"),
        w => panic!("expected external weights, got {w:?}"),
    }
    let derived = exe.artifact().weights().filter(|w| w.origin == WeightOrigin::Embedded).count();
    let from_files = exe.artifact().weights().filter(|w| matches!(w.origin, WeightOrigin::External(_))).count();
    assert!(derived > 0 && from_files > 0, "{derived} embedded, {from_files} external");
    check_run(&exe);

    // The checkpoint moved: point the runtime at its new directory.
    let moved = dir.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::copy(fixture(name).join("diffusion_pytorch_model.safetensors"), moved.join("diffusion_pytorch_model.safetensors")).unwrap();
    let exe = Executable::load(&external, &ExecOptions { threads: 1, weights_dir: Some(moved.clone()) }).unwrap();
    assert!(exe.artifact().external_files().iter().all(|f| f.starts_with(&moved)));
    check_run(&exe);
}

/// The whole deployment path through the command lines: `omnic compile`,
/// `omnirt run`, `omnirt compare`.
#[test]
fn cli_compile_run_compare() {
    let dir = tempfile::tempdir().unwrap();
    let art = compile("dit", dir.path(), &[]);
    let t = {
        let o = run(&omnic(), &["compile", "tests/fixtures/dit", "-o", dir.path().join("again.omni").to_str().unwrap()]);
        text(&o)
    };
    assert!(t.contains("compiled") && t.contains("ms") && t.contains("B"), "{t}");
    let out = dir.path().join("out.safetensors");
    let io = fixture("dit").join("io.safetensors");
    let o = run(&omnirt(), &["run", art.to_str().unwrap(), "--inputs", io.to_str().unwrap(), "--outputs", out.to_str().unwrap(), "--verbose"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("ms") && t.contains("output.sample") && t.contains("ignored"), "{t}");
    let o = run(&omnirt(), &["compare", out.to_str().unwrap(), io.to_str().unwrap(), "--prefix", "output.", "--atol", "1e-4"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("output.sample"), "{}", text(&o));
    let o = run(&omnirt(), &["inspect", art.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

/// `--emit`, `--dump-dir`, `--cpu` and errors of `omnic compile`.
#[test]
fn compile_emits_dumps_and_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("qwen2");
    let src = src.to_str().unwrap();
    let o = run(&omnic(), &["compile", src, "--emit", "ir"]);
    assert!(o.status.success(), "{}", text(&o));
    let ir = String::from_utf8_lossy(&o.stdout);
    assert!(ir.contains("stage \"forward\"") && ir.contains("#dispatch("), "{ir}");
    let o = run(&omnic(), &["compile", src, "--emit", "mlir"]);
    assert!(o.status.success(), "{}", text(&o));
    let mlir = String::from_utf8_lossy(&o.stdout);
    assert!(mlir.contains("func.func @omnic_k0") && mlir.contains("llvm.emit_c_interface"), "{mlir}");
    let dump = dir.path().join("dump");
    let art = dir.path().join("q.omni");
    let o = run(&omnic(), &["compile", src, "-o", art.to_str().unwrap(), "--cpu", "x86-64-v3", "--dump-dir", dump.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["program.omir", "manifest.json", "kernels.txt", "omnic_k0_gather.mlir", "omnic_k0_gather.ll", "omnic_k0_gather.s"] {
        assert!(dump.join(f).is_file(), "{f} missing from the dump directory");
    }
    let exe = Executable::load(&art, &ExecOptions::default()).unwrap();
    assert_eq!(exe.artifact().manifest().target.cpu, "x86-64-v3");
    let io = io("qwen2");
    let outs = exe.run_forward(io.iter().map(|(n, t)| (n.as_str(), t))).unwrap();
    let refs: HashMap<&str, &HostTensor> = io.iter().map(|(n, t)| (n.as_str(), t)).collect();
    assert!(max_abs(&outs[0].1, refs["output.logits"], "output.logits") <= TOL);

    let out = art.to_str().unwrap();
    for (args, needle) in [
        (vec!["compile", src, "-o", out, "--target", "gpu"], "unknown target `gpu`"),
        (vec!["compile", "no/such/dir", "-o", out], "no/such/dir"),
        (vec!["compile", src, "-o", out, "--passes", "no-such-pass"], "no-such-pass"),
    ] {
        let o = run(&omnic(), &args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
        assert!(t.contains("error") && t.contains(needle) && !t.contains("panicked"), "{args:?}: {t}");
    }
}

/// The `denoise` fixture (a FluxPipeline directory: true CFG, 8 steps,
/// scale 4) through the command lines: `omnic compile` writes the loop as
/// the manifest's control, `omnirt run` runs it over the compiled stages;
/// `output.latents` and every `step.*` within 1e-4 of diffusers, with
/// `cfg-batching` on (default) and off; TeaCache at threshold 0 equal to no
/// cache exactly.
#[test]
fn e2e_denoise_loop() {
    let dir = tempfile::tempdir().unwrap();
    let io_path = fixture("denoise").join("io.safetensors");
    let refs: HashMap<String, HostTensor> = io("denoise").into_iter().collect();
    let run_loop = |art: &Path, tag: &str, extra: &[&str]| -> (HashMap<String, HostTensor>, String) {
        let out = dir.path().join(format!("{tag}.out.safetensors"));
        let mut args = vec!["run", art.to_str().unwrap(), "--inputs", io_path.to_str().unwrap(), "--outputs", out.to_str().unwrap()];
        args.extend_from_slice(&["--steps", "8", "--true-cfg-scale", "4.0", "--dump-steps", "--threads", "2"]);
        args.extend_from_slice(extra);
        let o = run(&omnirt(), &args);
        let t = text(&o);
        assert!(o.status.success(), "{tag}: {t}");
        eprintln!("{tag}: {}", t.trim());
        (omnic_runtime::io::read_all(&out).unwrap().into_iter().collect(), t)
    };
    let check_fixture = |tag: &str, got: &HashMap<String, HostTensor>| {
        let mut worst = 0.0f64;
        let mut names = vec!["output.latents"];
        names.extend(["step.latents", "step.noise_pred", "step.noise_pred_cond", "step.noise_pred_uncond"]);
        for n in names {
            let g = got.get(n).unwrap_or_else(|| panic!("{tag}: no `{n}` in the outputs"));
            let m = max_abs(g, &refs[n], n);
            assert!(m <= TOL, "{tag}: {n} max abs {m:e}");
            worst = worst.max(m);
        }
        eprintln!("{tag}: output.latents and every step.* within {worst:.3e}");
    };

    let batched = dir.path().join("batched");
    std::fs::create_dir_all(&batched).unwrap();
    let art = compile("denoise", &batched, &[]);
    let exe = Executable::load(&art, &ExecOptions::default()).unwrap();
    let omnic_runtime::artifact::Control::Denoise(spec) = &exe.artifact().manifest().control else { panic!("expected a denoise control") };
    assert!(spec.cfg_batch.is_some(), "cfg-batching should fire on the FLUX body");
    let (a, t) = run_loop(&art, "cfg-batching", &[]);
    assert!(t.contains("8 steps") && t.contains("ms/step") && t.contains("(batched)"), "{t}");
    check_fixture("cfg-batching", &a);

    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let art = compile("denoise", &plain, &["--disable-pass", "cfg-batching"]);
    let (b, t) = run_loop(&art, "no cfg-batching", &[]);
    assert!(!t.contains("(batched)"), "{t}");
    check_fixture("no cfg-batching", &b);

    let cached = dir.path().join("teacache");
    std::fs::create_dir_all(&cached).unwrap();
    let art = compile("denoise", &cached, &["--teacache", "0"]);
    let exe = Executable::load(&art, &ExecOptions::default()).unwrap();
    let m = exe.artifact().manifest();
    assert!(m.pipeline.contains("cfg-batching,teacache{threshold=0}"), "{}", m.pipeline);
    let omnic_runtime::artifact::Control::Denoise(spec) = &m.control else { panic!("expected a denoise control") };
    assert!(spec.teacache().is_some(), "no teacache policy in the manifest");
    let (c, t) = run_loop(&art, "teacache 0", &[]);
    assert!(t.contains("0 skipped"), "{t}");
    check_fixture("teacache 0", &c);
    for (n, want) in &a {
        assert_eq!(c.get(n), Some(want), "teacache 0: `{n}` differs from the run without a cache");
    }
}

/// The bundled digits model (`models/zoo/digits-dit`, a DiTPipeline
/// directory) compiled and sampled by `omnirt run`: the stored noise as the
/// initial latents, classes 0..9, 20 DDIM steps, guidance 4 (the default)
/// reproduce `tests/fixtures/digits_loop`'s `output.images` within 1e-4.
#[test]
fn e2e_digits_dit_loop() {
    let dir = tempfile::tempdir().unwrap();
    let art = compile_digits(dir.path());
    let io: HashMap<String, HostTensor> = io("digits_loop").into_iter().collect();
    let inputs = dir.path().join("in.safetensors");
    let given = vec![("input.latents".to_string(), io["input.noise"].clone()), ("input.class_labels".to_string(), io["input.class_labels"].clone())];
    omnic_runtime::io::write(&inputs, &given, None).unwrap();
    let out = dir.path().join("out.safetensors");
    let o = run(
        &omnirt(),
        &["run", art.to_str().unwrap(), "--inputs", inputs.to_str().unwrap(), "--outputs", out.to_str().unwrap(), "--steps", "20", "--threads", "2"],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    eprintln!("digits-dit: {}", t.trim());
    assert!(t.contains("20 steps") && t.contains("true CFG on"), "{t}");
    let got: HashMap<String, HostTensor> = omnic_runtime::io::read_all(&out).unwrap().into_iter().collect();
    let m = max_abs(&got["output.latents"], &io["output.images"], "output.images");
    eprintln!("digits-dit: output.images max abs {m:.3e}");
    assert!(m <= TOL, "digits-dit: output.images max abs {m:e}");
}

/// `omnic compile models/zoo/digits-dit -o <dir>/digits.omni`.
fn compile_digits(dir: &Path) -> PathBuf {
    let art = dir.join("digits.omni");
    let o = run(&omnic(), &["compile", "models/zoo/digits-dit", "-o", art.to_str().unwrap()]);
    assert!(o.status.success(), "omnic compile digits-dit: {}", text(&o));
    art
}

/// Sample quality without Python: 50 samples of the compiled digits model
/// (classes 0..9, seeds 0..4, 20 DDIM steps, guidance 4) through
/// `program::generate`, each 16×16 sample 2×2-average-pooled to 8×8,
/// mapped to [0, 1] and classified by the logistic regression of
/// `tests/fixtures/digits_classifier.safetensors`. Returns (recognised,
/// per class, block-stack runs, skips) over the 50.
fn digits_quality(art: &Path, tag: &str) -> (usize, [usize; 10], usize, usize) {
    use omnic_runtime::program::generate::{generate, GenerateOptions};
    let mut exe = Executable::load(art, &ExecOptions { threads: 2, ..Default::default() }).unwrap();
    let clf: HashMap<String, HostTensor> = omnic_runtime::io::read_all(&fixture("digits_classifier.safetensors")).unwrap().into_iter().collect();
    let (coef, intercept) = (clf["coef"].to_f64_vec(), clf["intercept"].to_f64_vec());
    assert_eq!((coef.len(), intercept.len()), (640, 10));
    let classify = |x: &[f32]| -> usize {
        let v: Vec<f64> = (0..64)
            .map(|i| {
                let (r, c) = (i / 8, i % 8);
                let m = [(0, 0), (0, 1), (1, 0), (1, 1)].iter().map(|(dr, dc)| x[(2 * r + dr) * 16 + 2 * c + dc].clamp(-1.0, 1.0) as f64).sum::<f64>() / 4.0;
                (m + 1.0) / 2.0
            })
            .collect();
        let score = |k: usize| intercept[k] + (0..64).map(|i| coef[k * 64 + i] * v[i]).sum::<f64>();
        (0..10).max_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap()
    };
    let classes: Vec<i64> = (0..10).collect();
    let (mut correct, mut per_class, mut computed, mut skipped) = (0, [0usize; 10], 0, 0);
    for seed in 0..5u64 {
        let g = generate(&mut exe, &GenerateOptions { classes: classes.clone(), seed, steps: Some(20), guidance: Some(4.0), ..Default::default() }).unwrap();
        assert_eq!((g.samples.len(), g.height, g.width), (10, 16, 16));
        eprintln!("digits quality ({tag}): seed {seed}: {}", g.report.summary());
        computed += g.report.computed;
        skipped += g.report.skipped;
        for (k, s) in g.samples.iter().enumerate() {
            if classify(s) == k {
                correct += 1;
                per_class[k] += 1;
            }
        }
    }
    eprintln!("digits quality ({tag}): {correct}/50 = {:.1}% recognised as the requested digit; per class {per_class:?}", 2.0 * correct as f64);
    (correct, per_class, computed, skipped)
}

/// At least 80% of the 50 samples must be the requested digit. Measured:
/// 49/50 = 98% (one `1` missed; about 65–90 ms per batched step of 10 on 2
/// threads).
#[test]
fn e2e_digits_generate_quality() {
    let dir = tempfile::tempdir().unwrap();
    let art = compile_digits(dir.path());
    let (correct, per_class, _, skipped) = digits_quality(&art, "no cache");
    assert_eq!(skipped, 0);
    assert!(correct >= 40, "only {correct}/50 samples recognised as the requested digit (per class {per_class:?})");
}

/// The same at the model's default TeaCache threshold (`omnic compile
/// --teacache` takes the threshold and the calibrated coefficients of
/// `models/zoo/digits-dit/teacache.json`): at least 80% recognised, and the
/// cache must actually skip block-stack runs.
#[test]
fn e2e_digits_generate_quality_teacache() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("digits-tc.omni");
    let o = run(&omnic(), &["compile", "models/zoo/digits-dit", "--teacache", "-o", art.to_str().unwrap()]);
    assert!(o.status.success(), "omnic compile digits-dit --teacache: {}", text(&o));
    let (correct, per_class, computed, skipped) = digits_quality(&art, "teacache default");
    eprintln!("digits quality (teacache default): {computed} block-stack runs, {skipped} skipped");
    assert!(skipped > 0, "the default threshold skipped nothing ({computed} runs)");
    assert!(correct >= 40, "only {correct}/50 samples recognised at the default TeaCache threshold (per class {per_class:?})");
}

/// Width and height from a PNG's IHDR.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}: not a PNG", path.display());
    assert_eq!(&b[12..16], b"IHDR");
    (u32::from_be_bytes(b[16..20].try_into().unwrap()), u32::from_be_bytes(b[20..24].try_into().unwrap()))
}

/// `omnirt generate` writes a PNG row of 16×16 digits upscaled ×8, and
/// rejects a bad class and an unwritable output with exit 1.
#[test]
fn e2e_omnirt_generate_writes_png() {
    let dir = tempfile::tempdir().unwrap();
    let art = compile_digits(dir.path());
    let a = art.to_str().unwrap();
    for (classes, want) in [("0,1,2,3,4,5,6,7,8,9", (1280, 128)), ("3", (128, 128))] {
        let png = dir.path().join(format!("digits-{}.png", classes.len()));
        let o = run(
            &omnirt(),
            &["generate", a, "--class", classes, "--steps", "20", "--guidance", "4", "--seed", "0", "-o", png.to_str().unwrap(), "--threads", "2"],
        );
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains("20 steps computed") && t.contains("ms/step"), "{t}");
        assert_eq!(png_size(&png), want, "{t}");
    }
    let png = dir.path().join("bad.png");
    let o = run(&omnirt(), &["generate", a, "--class", "10", "-o", png.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("class 10 is out of range"), "{}", text(&o));
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let o = run(&omnirt(), &["generate", a, "--class", "1", "-o", dir.path().join("file/x.png").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}
