//! The bundled digits model (`models/zoo/digits-dit`, a DiTPipeline
//! directory) as a `denoise` program: class-conditional CFG with the null
//! class, DDIM's own schedule, int64 timesteps. The runtime's loop driver,
//! executing the stages through the reference evaluator, reproduces the
//! diffusers loop of `tests/fixtures/digits_loop` (stored noise as the
//! initial latents, classes 0..9, 20 DDIM steps, guidance 4) within 1e-4,
//! without passes (two calls per step) and after `-O2` (CFG-batched).

use omnic_ir::{Control, Guidance, Program, SigmaSchedule};
use omnic_models::eval_runner::EvalRunner;
use omnic_passes::pass::Overlay;
use omnic_passes::{Instrumentation, PassContext, PassManager};
use omnic_runtime::program::denoise::{run_denoise, DenoiseOptions, DenoiseOutput};
use omnic_runtime::program::Tensors;
use omnic_runtime::HostTensor;
use std::path::PathBuf;

const TOL: f64 = 1e-4;

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/digits-dit")
}

fn io() -> Tensors {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/digits_loop/io.safetensors");
    omnic_runtime::io::read_all(&p).expect("digits_loop/io.safetensors").into_iter().collect()
}

fn run(pipeline: &str) -> (Program, DenoiseOutput) {
    let imp = omnic_models::import(&model()).expect("import digits-dit");
    let mut program = imp.program.clone();
    let pm = PassManager::parse(pipeline, Instrumentation { verify_each: true, ..Default::default() }).expect("pipeline");
    let mut cx = PassContext::with_weights(&imp.checkpoint);
    pm.run(&mut program, &mut cx, &mut std::io::sink()).unwrap_or_else(|e| panic!("{pipeline}: {e}"));
    let w = Overlay { base: Some(&imp.checkpoint), derived: &cx.derived };
    let Control::Denoise(d) = &program.control else { panic!("not a denoise program") };
    let spec = omnic_frontend::convert::denoise_spec(d);
    let io = io();
    let inputs: Tensors =
        [("latents".to_string(), io["input.noise"].clone()), ("class_labels".to_string(), io["input.class_labels"].clone())].into_iter().collect();
    let mut runner = EvalRunner::new(&program, &w);
    let out =
        run_denoise(&spec, &mut runner, &inputs, &DenoiseOptions { steps: Some(20), dump_steps: true, ..Default::default() }).unwrap_or_else(|e| panic!("{e}"));
    (program, out)
}

fn check(what: &str, out: &DenoiseOutput) -> f64 {
    let io = io();
    let ts = &out.dumps.iter().find(|(n, _)| n == "schedule.timesteps").expect("schedule.timesteps").1;
    let want: Vec<f32> = io["schedule.timesteps"].to_f32_vec();
    assert_eq!(ts.to_f32_vec(), want, "{what}: DDIM timesteps");
    let want: &HostTensor = &io["output.images"];
    let m = out.latents.compare(want).unwrap_or_else(|| panic!("{what}: shape {:?} vs {:?}", out.latents.shape, want.shape)).0;
    eprintln!("{what}: output.images max |Δ| {m:.3e}; {}", out.report.summary());
    assert!(m <= TOL, "{what}: output.images max |Δ| {m:e}");
    m
}

#[test]
fn import_gives_a_dit_pipeline_loop() {
    let imp = omnic_models::import(&model()).expect("import");
    let Control::Denoise(d) = &imp.program.control else { panic!("expected a denoise control, got {:?}", imp.program.control) };
    assert_eq!((d.steps, d.sigmas, d.timestep_div, d.timestep_i64), (50, SigmaSchedule::Scheduler, 1.0, true));
    assert!(matches!(&d.guidance, Guidance::ClassCfg { scale, labels, null_class } if *scale == 4.0 && labels == "class_labels" && *null_class == 10));
    assert!(d.scheduler_config.contains("DDIMScheduler"));
    assert_eq!(imp.program.metadata.get("pipeline").map(String::as_str), Some("DiTPipeline"));
    let text = omnic_ir::text::print_program(&imp.program);
    let back = omnic_ir::text::parse_program(&text).expect("reparse");
    assert_eq!(back.control, imp.program.control);
}

#[test]
fn digits_loop_matches_diffusers() {
    let (_, a) = run("");
    assert!(a.report.true_cfg && !a.report.cfg_batched);
    assert_eq!(a.report.stage_calls, 40);
    check("no passes, two calls per step", &a);

    let (p, b) = run(omnic_passes::manager::default_pipeline(2));
    let Control::Denoise(d) = &p.control else { unreachable!() };
    let names = d.cfg_batch.clone().expect("cfg-batching fires on the DiT body");
    assert!(names.iter().any(|n| n == "class_labels"), "{names:?}");
    assert!(b.report.cfg_batched);
    assert_eq!(b.report.stage_calls, 20);
    check("-O2 (cfg-batched)", &b);
}
