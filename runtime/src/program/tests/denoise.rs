//! The loop driver on a toy model whose stages are closed-form functions,
//! so guidance, batching and TeaCache can be checked exactly.

use super::*;

/// Toy model over `[B, 4]` latents: `pre` gives the modulated input
/// `m = x + c` and the stream `h = 2x`; `blocks` gives `h' = 3h + c·t`;
/// `post` gives `sample = h'/10 + t`. `body` is the composition.
struct Toy {
    calls: Vec<String>,
}

fn f(t: &HostTensor) -> Vec<f32> {
    t.to_f32_vec()
}

fn get<'a>(env: &'a Tensors, n: &str) -> Result<&'a HostTensor, RtError> {
    env.get(n).ok_or_else(|| RtError::Tensor { name: n.into(), message: "missing".into() })
}

impl Toy {
    fn pre(env: &Tensors) -> Result<Tensors, RtError> {
        let (x, c) = (get(env, "x")?, get(env, "c")?);
        let m: Vec<f32> = f(x).iter().zip(f(c)).map(|(a, b)| a + b).collect();
        let h: Vec<f32> = f(x).iter().map(|a| 2.0 * a).collect();
        Ok([("m".to_string(), HostTensor::from_f32(&x.shape, &m)), ("h".to_string(), HostTensor::from_f32(&x.shape, &h))].into())
    }
    fn blocks(env: &Tensors) -> Result<Tensors, RtError> {
        let (h, c, t) = (get(env, "h")?, get(env, "c")?, get(env, "t")?);
        let per = h.numel() / h.shape[0];
        let tv = f(t);
        let o: Vec<f32> = f(h).iter().zip(f(c)).enumerate().map(|(i, (a, b))| 3.0 * a + b * tv[i / per]).collect();
        Ok([("h_out".to_string(), HostTensor::from_f32(&h.shape, &o))].into())
    }
    fn post(env: &Tensors) -> Result<Tensors, RtError> {
        let (h, t) = (get(env, "h_out")?, get(env, "t")?);
        let per = h.numel() / h.shape[0];
        let tv = f(t);
        let o: Vec<f32> = f(h).iter().enumerate().map(|(i, a)| a / 10.0 + tv[i / per]).collect();
        Ok([("sample".to_string(), HostTensor::from_f32(&h.shape, &o))].into())
    }
}

impl StageRunner for Toy {
    fn run_stage(&mut self, stage: &str, inputs: &Tensors) -> Result<Tensors, RtError> {
        self.calls.push(stage.to_string());
        match stage {
            "pre" => Toy::pre(inputs),
            "blocks" => Toy::blocks(inputs),
            "post" => Toy::post(inputs),
            "body" => {
                let mut env = inputs.clone();
                env.extend(Toy::pre(inputs)?);
                env.extend(Toy::blocks(&env)?);
                Toy::post(&env)
            }
            other => Err(RtError::Tensor { name: other.into(), message: "no such stage".into() }),
        }
    }
}

const SCHED: &str = r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0, "use_dynamic_shifting": true}"#;

fn spec() -> DenoiseSpec {
    DenoiseSpec {
        body: "body".into(),
        scheduler_config: SCHED.into(),
        steps: 6,
        sigmas: SigmaSchedule::FlowLinspace,
        latents: "latents".into(),
        latent_input: "x".into(),
        timestep_input: "t".into(),
        timestep_div: 1000.0,
        timestep_i64: false,
        prediction_output: "sample".into(),
        inputs: vec![("pos".into(), "c".into())],
        guidance: Guidance::TrueCfg { scale: 4.0, negative: vec![("neg".into(), "c".into())] },
        cfg_batch: None,
        cache: None,
    }
}

fn teacache(threshold: f64) -> Option<CachePolicy> {
    Some(CachePolicy::TeaCache(TeaCacheSpec {
        threshold,
        coefficients: vec![1.0, 0.0],
        pre: "pre".into(),
        blocks: "blocks".into(),
        post: "post".into(),
        modulated: "m".into(),
        residuals: vec![("h".into(), "h_out".into())],
    }))
}

fn inputs(batch: usize) -> Tensors {
    let n = batch * 4;
    let v = |s: f32| (0..n).map(|i| s * (i as f32 + 1.0) / n as f32).collect::<Vec<f32>>();
    [
        ("input.latents".to_string(), HostTensor::from_f32(&[batch, 4], &v(1.0))),
        ("input.pos".to_string(), HostTensor::from_f32(&[batch, 4], &v(0.5))),
        ("input.neg".to_string(), HostTensor::from_f32(&[batch, 4], &v(-0.25))),
        ("output.latents".to_string(), HostTensor::from_f32(&[1], &[0.0])),
    ]
    .into()
}

fn run(spec: &DenoiseSpec, ins: &Tensors, opts: &DenoiseOptions) -> (DenoiseOutput, Vec<String>) {
    let mut toy = Toy { calls: Vec::new() };
    let out = run_denoise(spec, &mut toy, ins, opts).unwrap_or_else(|e| panic!("{e}"));
    (out, toy.calls)
}

/// The loop written out by hand: Euler steps on sigmas from the scheduler.
#[test]
fn true_cfg_loop_matches_a_hand_computation() {
    let ins = inputs(1);
    let (out, calls) = run(&spec(), &ins, &DenoiseOptions { dump_steps: true, ..Default::default() });
    assert_eq!(calls.len(), 12);
    let mut s = sched::from_config_value(&serde_json::from_str(SCHED).unwrap(), "x").unwrap();
    let mu = s.dynamic_shift_mu(4);
    s.set_timesteps(&TimestepOptions { sigmas: Some(sched::flux_sigmas(6)), mu, ..Default::default() }).unwrap();
    let sig = s.sigmas().unwrap().to_vec();
    let mut x = f(&ins["input.latents"]);
    let (pos, neg) = (f(&ins["input.pos"]), f(&ins["input.neg"]));
    let model = |x: &[f32], c: &[f32], t: f32| -> Vec<f32> { x.iter().zip(c).map(|(&a, &b)| (3.0 * (2.0 * a) + b * t) / 10.0 + t).collect() };
    for (i, &t) in s.timesteps().to_vec().iter().enumerate() {
        let tm = t / 1000.0;
        let (c, u) = (model(&x, &pos, tm), model(&x, &neg, tm));
        let v: Vec<f32> = c.iter().zip(&u).map(|(&c, &u)| u + 4.0 * (c - u)).collect();
        x = x.iter().zip(&v).map(|(&a, &b)| a + (sig[i + 1] - sig[i]) * b).collect();
    }
    assert_eq!(f(&out.latents), x);
    let names: Vec<&str> = out.dumps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["step.latents", "step.noise_pred", "step.noise_pred_cond", "step.noise_pred_uncond", "schedule.timesteps", "schedule.sigmas"]);
    assert_eq!(out.dumps[0].1.shape, vec![7, 4]);
    assert_eq!(out.tensors(&spec())[0].0, "output.latents");
    assert!(out.report.true_cfg && !out.report.cfg_batched);
}

#[test]
fn cfg_batching_gives_the_same_latents_with_half_the_calls() {
    let ins = inputs(2);
    let (a, ca) = run(&spec(), &ins, &DenoiseOptions::default());
    let mut sb = spec();
    sb.cfg_batch = Some(vec!["x".into(), "t".into(), "c".into()]);
    let (b, cb) = run(&sb, &ins, &DenoiseOptions::default());
    assert_eq!(a.latents, b.latents);
    assert_eq!((ca.len(), cb.len()), (12, 6));
    assert!(b.report.cfg_batched);
    // Forced off at run time.
    let (c, cc) = run(&sb, &ins, &DenoiseOptions { cfg_batch: Some(false), ..Default::default() });
    assert_eq!((c.latents == a.latents, cc.len()), (true, 12));
    // Different shapes for the two branches: falls back to two calls.
    let mut odd = ins.clone();
    odd.insert("input.neg".into(), HostTensor::from_f32(&[2, 2, 2], &[0.0; 8]));
    let (_, cd) = run(&sb, &odd, &DenoiseOptions { steps: Some(1), ..Default::default() });
    assert_eq!(cd.len(), 2);
}

#[test]
fn guidance_off_when_scale_is_one_or_negatives_are_missing() {
    let mut ins = inputs(1);
    let (out, calls) = run(&spec(), &ins, &DenoiseOptions { true_cfg_scale: Some(1.0), ..Default::default() });
    assert_eq!(calls.len(), 6);
    assert!(!out.report.true_cfg && out.report.notes[0].contains("scale 1"), "{:?}", out.report.notes);
    ins.remove("input.neg");
    let (out, calls) = run(&spec(), &ins, &DenoiseOptions::default());
    assert_eq!(calls.len(), 6);
    assert!(out.report.notes[0].contains("no negative inputs"));
}

#[test]
fn teacache_threshold_zero_is_exact_and_a_threshold_skips() {
    for batched in [false, true] {
        let ins = inputs(1);
        let mut base = spec();
        base.steps = 12;
        if batched {
            base.cfg_batch = Some(vec!["x".into(), "t".into(), "c".into()]);
        }
        let (plain, _) = run(&base, &ins, &DenoiseOptions::default());
        let mut tc = base.clone();
        tc.cache = teacache(0.0);
        let (zero, calls) = run(&tc, &ins, &DenoiseOptions::default());
        assert_eq!(plain.latents, zero.latents, "threshold 0 must equal no cache exactly");
        assert_eq!((zero.report.computed, zero.report.skipped), (24, 0));
        assert_eq!(calls.iter().filter(|c| *c == "blocks").count(), if batched { 12 } else { 24 });
        let (skip, _) = run(&tc, &ins, &DenoiseOptions { teacache_threshold: Some(0.5), ..Default::default() });
        let r = &skip.report;
        assert!(r.skipped > 0 && r.computed + r.skipped == 24, "{}", r.summary());
        assert_eq!((r.steps[0].skipped, r.steps[11].skipped), (0, 0));
        let err = f(&skip.latents).iter().zip(f(&plain.latents)).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err > 0.0 && err < 1.0, "{err}");
        eprintln!("batched {batched}: {} (max |Δ| {err:.3e})", r.summary());
    }
}

#[test]
fn errors_name_what_is_missing() {
    let mut ins = inputs(1);
    ins.remove("input.latents");
    let mut toy = Toy { calls: Vec::new() };
    let e = run_denoise(&spec(), &mut toy, &ins, &DenoiseOptions::default()).unwrap_err().to_string();
    assert!(e.contains("missing input `latents`"), "{e}");
    let mut s = spec();
    s.body = "nope".into();
    let e = run_denoise(&s, &mut toy, &inputs(1), &DenoiseOptions::default()).unwrap_err().to_string();
    assert!(e.contains("step 0: stage `nope`"), "{e}");
    s.scheduler_config = "{".into();
    let e = run_denoise(&s, &mut toy, &inputs(1), &DenoiseOptions::default()).unwrap_err().to_string();
    assert!(e.contains("not valid JSON"), "{e}");
}

#[test]
fn spec_serialises_as_json() {
    let mut s = spec();
    s.cache = teacache(0.25);
    s.cfg_batch = Some(vec!["x".into()]);
    let j = serde_json::to_string(&s).unwrap();
    let back: DenoiseSpec = serde_json::from_str(&j).unwrap();
    assert_eq!(back, s);
    assert_eq!(poly(&[2.0, -1.0, 0.5], 3.0), 15.5);
}

#[test]
fn manifest_control_carries_the_loop() {
    use crate::artifact::Control;
    let mut s = spec();
    s.cache = teacache(0.1);
    let c = Control::Denoise(s);
    let j = serde_json::to_string(&c).unwrap();
    assert!(j.starts_with("{\"denoise\":{\"body\":\"body\""), "{j}");
    assert_eq!(serde_json::from_str::<Control>(&j).unwrap(), c);
    let f: Control = serde_json::from_str("{\"forward\":{\"stage\":\"s\"}}").unwrap();
    assert_eq!(f, Control::Forward { stage: "s".into() });
}
