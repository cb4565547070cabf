use crate::common::check_fixture;

#[test]
fn dit_matches_diffusers() {
    check_fixture("dit", 1e-4);
}

/// A learned-sigma DiT (`out_channels = 2·in_channels`, the `dit` fixture's
/// model) as a DiTPipeline directory (`tests/fixtures/dit_loop`): the
/// import adds the eps half as body output `eps` and the loop steps with
/// it, as DiTPipeline splits `model_output`; 6 DDIM steps with class CFG 4
/// reproduce `tests/fixtures/generators/dit_loop.py` within 1e-5 of the
/// final latents' magnitude (DDIM divides by sqrt(ᾱ) ≈ 0.006 at t = 999, so
/// an untrained model's latents reach ~10²).
#[test]
fn dit_learned_sigma_loop_matches_diffusers() {
    use omnic_ir::Control;
    use omnic_models::eval_runner::EvalRunner;
    use omnic_runtime::program::denoise::{run_denoise, DenoiseOptions};
    use omnic_runtime::program::Tensors;
    let dir = crate::common::fixture("dit_loop");
    let imp = omnic_models::import(&dir).expect("import dit_loop");
    let Control::Denoise(d) = &imp.program.control else { panic!("expected a denoise control") };
    assert_eq!(d.prediction_output, "eps");
    let g = &imp.program.stages[0].graph;
    let eps = g.output("eps").expect("body output `eps`");
    let ty = g.value_type(eps).expect("eps type");
    assert_eq!(ty.shape.len(), 4);
    assert_eq!(ty.shape[1], omnic_ir::shape::Dim::Const(4), "eps keeps in_channels: {ty}");
    let spec = omnic_frontend::convert::denoise_spec(d);
    let io: Tensors = omnic_runtime::io::read_all(&dir.join("io.safetensors")).expect("io").into_iter().collect();
    let inputs: Tensors =
        [("latents".to_string(), io["input.latents"].clone()), ("class_labels".to_string(), io["input.class_labels"].clone())].into_iter().collect();
    let mut runner = EvalRunner::new(&imp.program, &imp.checkpoint);
    let out = run_denoise(&spec, &mut runner, &inputs, &DenoiseOptions { steps: Some(6), dump_steps: true, ..Default::default() }).expect("loop");
    let ts = &out.dumps.iter().find(|(n, _)| n == "schedule.timesteps").expect("timesteps").1;
    assert_eq!(ts.to_f32_vec(), io["schedule.timesteps"].to_f32_vec());
    let want = &io["output.latents"];
    let (m, _) = out.latents.compare(want).expect("shape");
    let scale = want.to_f64_vec().iter().fold(0.0f64, |a, v| a.max(v.abs()));
    eprintln!("dit learned sigma loop: max |Δ| {m:.3e} (max |ref| {scale:.3e}); {}", out.report.summary());
    assert!(m <= 1e-5 * scale, "max |Δ| {m:e} vs max |ref| {scale:e}");
}
