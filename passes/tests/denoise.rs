//! The `denoise` fixture (FluxPipeline true-CFG loop, 8 steps, scale 4)
//! run end to end on the compiler side: the pipeline directory imported as
//! a `denoise` program, the runtime's loop driver executing its stages
//! through the reference evaluator. Checked: `output.latents` and every
//! `step.*` within 1e-4 of diffusers, with `cfg-batching` off and on, after
//! the `-O2` passes; TeaCache at threshold 0 equal to no cache bit for bit;
//! TeaCache at 0.2 skipping steps of a longer schedule.

use omnic_ir::eval::WeightStore;
use omnic_ir::{Control, Guidance, Program, SigmaSchedule};
use omnic_models::eval_runner::EvalRunner;
use omnic_passes::pass::Overlay;
use omnic_passes::{Instrumentation, PassContext, PassManager};
use omnic_runtime::program::denoise::{run_denoise, DenoiseOptions, DenoiseOutput, DenoiseSpec};
use omnic_runtime::program::Tensors;
use omnic_runtime::HostTensor;
use std::path::PathBuf;

const TOL: f64 = 1e-4;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/denoise")
}

fn io() -> Tensors {
    omnic_runtime::io::read_all(&fixture().join("io.safetensors")).expect("io.safetensors").into_iter().collect()
}

/// The IR spec as the runtime's manifest mirror (what `omnic compile` writes).
fn runtime_spec(p: &Program) -> DenoiseSpec {
    let Control::Denoise(d) = &p.control else { panic!("not a denoise program") };
    omnic_frontend::convert::denoise_spec(d)
}

struct Compiled {
    program: Program,
    derived: std::collections::BTreeMap<String, omnic_ir::eval::Tensor>,
}

fn compile(pipeline: &str) -> (Compiled, omnic_models::Imported) {
    let imp = omnic_models::import(&fixture()).expect("import denoise");
    let mut program = imp.program.clone();
    let pm = PassManager::parse(pipeline, Instrumentation { verify_each: true, ..Default::default() }).expect("pipeline");
    let mut cx = PassContext::with_weights(&imp.checkpoint);
    pm.run(&mut program, &mut cx, &mut std::io::sink()).unwrap_or_else(|e| panic!("{pipeline}: {e}"));
    (Compiled { program, derived: cx.derived }, imp)
}

fn run(c: &Compiled, weights: &dyn WeightStore, opts: &DenoiseOptions) -> DenoiseOutput {
    let w = Overlay { base: Some(weights), derived: &c.derived };
    let mut runner = EvalRunner::new(&c.program, &w);
    run_denoise(&runtime_spec(&c.program), &mut runner, &io(), opts).unwrap_or_else(|e| panic!("{e}"))
}

fn max_abs(a: &HostTensor, b: &HostTensor) -> f64 {
    a.compare(b).unwrap_or_else(|| panic!("shapes {:?} vs {:?}", a.shape, b.shape)).0
}

fn fixture_opts() -> DenoiseOptions {
    DenoiseOptions { steps: Some(8), true_cfg_scale: Some(4.0), dump_steps: true, ..Default::default() }
}

/// Every output and dump of `out` against the fixture; returns the worst.
fn check_against_fixture(what: &str, out: &DenoiseOutput) -> f64 {
    let io = io();
    let mut worst = max_abs(&out.latents, &io["output.latents"]);
    assert!(worst <= TOL, "{what}: output.latents max |Δ| {worst:e}");
    for name in ["step.latents", "step.noise_pred", "step.noise_pred_cond", "step.noise_pred_uncond", "schedule.sigmas", "schedule.timesteps"] {
        let got = &out.dumps.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{what}: no {name}")).1;
        let want = &io[name];
        assert_eq!(got.shape, want.shape, "{what}: {name}");
        // First diverging step, for the message.
        let per = want.numel() / want.shape[0];
        let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
        for k in 0..want.shape[0] {
            let e = g[k * per..(k + 1) * per].iter().zip(&w[k * per..(k + 1) * per]).map(|(a, b)| (a - b).abs() as f64).fold(0.0, f64::max);
            assert!(e <= TOL, "{what}: {name}[{k}] max |Δ| {e:e} (first diverging step)");
            worst = worst.max(e);
        }
    }
    eprintln!("{what}: output.latents and every step.* within {worst:.3e}; {}", out.report.summary());
    worst
}

#[test]
fn import_gives_a_flux_pipeline_loop() {
    let imp = omnic_models::import(&fixture()).expect("import");
    let Control::Denoise(d) = &imp.program.control else { panic!("expected a denoise control, got {:?}", imp.program.control) };
    assert_eq!((d.body.as_str(), d.steps, d.sigmas, d.timestep_div), ("transformer", 28, SigmaSchedule::FlowLinspace, 1000.0));
    assert!(matches!(&d.guidance, Guidance::TrueCfg { scale, negative } if *scale == 1.0 && negative.len() == 2));
    assert!(d.scheduler_config.contains("FlowMatchEulerDiscreteScheduler"));
    assert_eq!(imp.program.metadata.get("pipeline").map(String::as_str), Some("FluxPipeline"));
    // The text form carries the loop.
    let text = omnic_ir::text::print_program(&imp.program);
    let back = omnic_ir::text::parse_program(&text).expect("reparse");
    assert_eq!(back.control, imp.program.control);
}

#[test]
fn fixture_loop_with_and_without_cfg_batching() {
    let (plain, imp) = compile("");
    let a = run(&plain, &imp.checkpoint, &fixture_opts());
    assert!(a.report.true_cfg && !a.report.cfg_batched);
    assert_eq!(a.report.stage_calls, 16);
    check_against_fixture("no passes, two calls per step", &a);

    let (batched, _) = compile("cfg-batching");
    let Control::Denoise(d) = &batched.program.control else { unreachable!() };
    let names = d.cfg_batch.clone().expect("cfg-batching fires on the FLUX body");
    assert_eq!(names, ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep"]);
    let b = run(&batched, &imp.checkpoint, &fixture_opts());
    assert!(b.report.cfg_batched);
    assert_eq!(b.report.stage_calls, 8);
    check_against_fixture("cfg-batching", &b);
    eprintln!("batched vs two calls: output.latents max |Δ| {:.3e}", max_abs(&a.latents, &b.latents));

    // Batching forced off at run time gives the unbatched result exactly.
    let c = run(&batched, &imp.checkpoint, &DenoiseOptions { cfg_batch: Some(false), ..fixture_opts() });
    assert_eq!(c.latents, a.latents);
}

#[test]
fn fixture_loop_after_o2_with_teacache_split() {
    // The whole -O2 pipeline with the cache split right after cfg-batching:
    // the per-stage passes work on the three stages; threshold 0 computes
    // every step, so the fixture is reproduced.
    let pipeline = omnic_passes::manager::default_pipeline(2).replacen("cfg-batching,", "cfg-batching,teacache{threshold=0},", 1);
    let (c, imp) = compile(&pipeline);
    let names: Vec<&str> = c.program.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["transformer.pre", "transformer.blocks", "transformer.post"]);
    let out = run(&c, &imp.checkpoint, &fixture_opts());
    assert_eq!((out.report.computed, out.report.skipped), (16, 0));
    check_against_fixture(&format!("-O2 + teacache 0 ({pipeline})"), &out);
}

#[test]
fn teacache_threshold_zero_equals_no_cache_exactly() {
    for batch in [false, true] {
        let pre = if batch { "cfg-batching," } else { "" };
        let (plain, imp) = compile(pre.trim_end_matches(','));
        let (cached, _) = compile(&format!("{pre}teacache{{threshold=0}}"));
        let d = runtime_spec(&cached.program);
        let t = d.teacache().expect("teacache policy");
        assert_eq!(t.coefficients, omnic_passes::teacache::FLUX_COEFFICIENTS);
        assert_eq!(t.residuals.len(), 2, "image and text streams: {:?}", t.residuals);
        let a = run(&plain, &imp.checkpoint, &fixture_opts());
        let b = run(&cached, &imp.checkpoint, &fixture_opts());
        assert_eq!(a.latents, b.latents, "batched {batch}: threshold 0 must equal no cache bit for bit");
        assert_eq!(a.dumps, b.dumps);
        assert_eq!((b.report.computed, b.report.skipped), (16, 0));
        check_against_fixture(&format!("teacache 0 (cfg-batching {batch})"), &b);
    }
}

#[test]
fn teacache_skips_steps_of_a_longer_schedule() {
    let steps = 28;
    let opts = |t: Option<f64>, cfg_batch: Option<bool>| DenoiseOptions {
        steps: Some(steps),
        true_cfg_scale: Some(4.0),
        teacache_threshold: t,
        cfg_batch,
        ..Default::default()
    };
    let (plain, imp) = compile("");
    let reference = run(&plain, &imp.checkpoint, &opts(None, None));
    let (cached, _) = compile("cfg-batching,teacache{threshold=0.2}");
    let rms = (reference.latents.to_f64_vec().iter().map(|x| x * x).sum::<f64>() / reference.latents.numel() as f64).sqrt();
    let mut results = Vec::new();
    for (t, batch) in [(0.2, Some(true)), (0.2, Some(false)), (0.4, Some(true))] {
        let out = run(&cached, &imp.checkpoint, &opts(Some(t), batch));
        let r = &out.report;
        let err = max_abs(&out.latents, &reference.latents);
        eprintln!(
            "teacache {t} (cfg-batching {batch:?}), {steps} steps: {} of {} branch-steps computed, {} skipped; {} stage calls; \
             final latents max |Δ| {err:.3e} vs no cache (latents rms {rms:.3})",
            r.computed,
            r.computed + r.skipped,
            r.skipped,
            r.stage_calls
        );
        assert_eq!(r.computed + r.skipped, 2 * steps);
        assert!(r.skipped > 0, "threshold {t} skipped nothing");
        assert_eq!((r.steps[0].skipped, r.steps[steps - 1].skipped), (0, 0), "first and last steps compute");
        assert!(err < 0.5 * rms, "threshold {t}: error {err} too large");
        results.push((t, batch, out.latents.clone(), r.skipped));
    }
    // Per-branch decisions do not depend on batching.
    assert_eq!(results[0].3, results[1].3);
    assert!(max_abs(&results[0].2, &results[1].2) < 1e-5);
    assert!(results[2].3 >= results[0].3);
}

#[test]
fn teacache_refuses_families_without_coefficients() {
    let imp = omnic_models::import(&fixture()).expect("import");
    let mut p = imp.program.clone();
    p.metadata.insert("family".into(), "wan".into());
    let pm = PassManager::parse("teacache", Instrumentation::default()).unwrap();
    let e = pm.run(&mut p, &mut PassContext::default(), &mut std::io::sink()).unwrap_err().to_string();
    assert!(e.contains("family `wan` has no published TeaCache coefficients") && e.contains("coefficients="), "{e}");
    let pm = PassManager::parse("teacache{threshold=0.1 coefficients=1,0}", Instrumentation::default()).unwrap();
    pm.run(&mut p, &mut PassContext::default(), &mut std::io::sink()).expect("explicit coefficients");
    assert_eq!(runtime_spec(&p).teacache().map(|t| t.coefficients.clone()), Some(vec![1.0, 0.0]));
    // Bad options are reported.
    let e = PassManager::parse("teacache{thresh=1}", Instrumentation::default()).err().expect("unknown option").to_string();
    assert!(e.contains("unknown option `thresh`"), "{e}");
    let e = PassManager::parse("cse{x=1}", Instrumentation::default()).err().expect("options on cse").to_string();
    assert!(e.contains("takes no options"), "{e}");
}

#[test]
fn cfg_batching_also_analyses_a_split_body() {
    let (a, _) = compile("cfg-batching,teacache");
    let (b, _) = compile("teacache,cfg-batching");
    let names = |p: &Program| {
        let mut v = runtime_spec(p).cfg_batch.expect("batched");
        v.sort();
        v
    };
    assert_eq!(names(&a.program), names(&b.program));
}
