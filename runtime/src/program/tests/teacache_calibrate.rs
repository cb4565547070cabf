//! Calibration: the least-squares fit against known polynomials, the
//! recorder against a toy model whose modulated input is known in closed
//! form, the predicted compute share, and the calibration file.

use super::*;
use crate::program::denoise::{CachePolicy, Guidance, SigmaSchedule};
use crate::tensor::HostTensor;

/// The published FLUX.1 polynomial (highest power first) as a realistic target.
const FLUX: [f64; 5] = [498.651651, -283.781631, 55.8554382, -3.82021401, 0.264230861];

fn eval(c: &[f64], x: f64) -> f64 {
    crate::program::denoise::poly(c, x)
}

/// Deterministic noise in [-1, 1] (a 64-bit LCG).
fn noise(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn polyfit_recovers_a_known_quartic_from_exact_samples() {
    // 40 points over the range TeaCache sees (relative changes 0.01 .. 0.4).
    let x: Vec<f64> = (0..40).map(|i| 0.01 + 0.01 * i as f64).collect();
    let y: Vec<f64> = x.iter().map(|&v| eval(&FLUX, v)).collect();
    let c = polyfit(&x, &y, 4).unwrap();
    assert_eq!(c.len(), 5);
    for (got, want) in c.iter().zip(FLUX) {
        assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "coefficients {c:?} vs {FLUX:?}");
    }
    // A quadratic fitted with degree 4: the extra coefficients vanish.
    let q = [2.0, -1.0, 0.5];
    let y: Vec<f64> = x.iter().map(|&v| eval(&q, v)).collect();
    let c = polyfit(&x, &y, 4).unwrap();
    for (got, want) in c.iter().zip([0.0, 0.0, 2.0, -1.0, 0.5]) {
        assert!((got - want).abs() <= 1e-7, "{c:?}");
    }
}

#[test]
fn polyfit_on_noisy_samples_has_the_noise_as_residual() {
    let x: Vec<f64> = (0..400).map(|i| 0.02 + 0.3 * i as f64 / 400.0).collect();
    let sigma = 0.01;
    let e = noise(x.len(), 7);
    let y: Vec<f64> = x.iter().zip(&e).map(|(&v, n)| eval(&FLUX, v) + sigma * n).collect();
    let c = polyfit(&x, &y, 4).unwrap();
    let samples: Vec<Sample> = x.iter().zip(&y).enumerate().map(|(i, (&x, &y))| Sample { trajectory: 0, branch: 0, step: i, x, y }).collect();
    let st = fit_stats(&samples, &c);
    // Uniform noise of half-width sigma has rms sigma/sqrt(3) ≈ 0.0058; the
    // least-squares residual cannot exceed that of the true polynomial.
    let true_rms = (e.iter().map(|n| (sigma * n).powi(2)).sum::<f64>() / e.len() as f64).sqrt();
    assert!(st.rms_residual <= true_rms + 1e-12, "{st:?} vs {true_rms}");
    assert!(st.rms_residual >= 0.8 * true_rms, "{st:?} vs {true_rms}");
    assert!(st.r2 > 0.99, "{st:?}");
    // The fitted curve stays within 0.005 of the true one over the data range.
    for &v in &x {
        assert!((eval(&c, v) - eval(&FLUX, v)).abs() < 5e-3, "at {v}: {} vs {}", eval(&c, v), eval(&FLUX, v));
    }
}

#[test]
fn polyfit_refuses_what_it_cannot_fit() {
    let e = polyfit(&[0.1, 0.2, 0.2, 0.1], &[1.0, 2.0, 2.0, 1.0], 4).unwrap_err();
    assert!(e.contains("at least 5 distinct x values, got 2"), "{e}");
    let e = polyfit(&[0.1, 0.2], &[1.0], 1).unwrap_err();
    assert!(e.contains("2 x values but 1 y values"), "{e}");
    let e = polyfit(&[0.1, f64::NAN, 0.3], &[1.0, 2.0, 3.0], 1).unwrap_err();
    assert!(e.contains("non-finite"), "{e}");
    // A straight line through two points is exact.
    let c = polyfit(&[1.0, 3.0], &[2.0, 6.0], 1).unwrap();
    assert!((c[0] - 2.0).abs() < 1e-12 && c[1].abs() < 1e-12, "{c:?}");
}

/// Toy model over `[B, 4]` latents: `pre` gives `m = x + c` and `h = x`;
/// `blocks` gives `h' = 2h + c`; `post` gives `sample = h' · t`.
struct Toy;

fn get<'a>(env: &'a Tensors, n: &str) -> Result<&'a HostTensor, RtError> {
    env.get(n).ok_or_else(|| RtError::Tensor { name: n.into(), message: "missing".into() })
}

impl StageRunner for Toy {
    fn run_stage(&mut self, stage: &str, env: &Tensors) -> Result<Tensors, RtError> {
        let f = |n: &str| get(env, n).map(|t| t.to_f32_vec());
        let shape = get(env, "x")?.shape.clone();
        let out = |name: &str, v: Vec<f32>| -> Tensors { [(name.to_string(), HostTensor::from_f32(&shape, &v))].into() };
        match stage {
            "pre" => {
                let (x, c) = (f("x")?, f("c")?);
                let mut o = out("m", x.iter().zip(&c).map(|(a, b)| a + b).collect());
                o.extend(out("h", x));
                Ok(o)
            }
            "blocks" => Ok(out("h_out", f("h")?.iter().zip(f("c")?).map(|(a, b)| 2.0 * a + b).collect())),
            "post" => {
                let t = f("t")?[0];
                Ok(out("sample", f("h_out")?.iter().map(|a| a * t).collect()))
            }
            other => Err(RtError::Tensor { name: other.into(), message: "no such stage".into() }),
        }
    }
}

fn spec() -> DenoiseSpec {
    DenoiseSpec {
        body: "body".into(),
        scheduler_config: r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0, "use_dynamic_shifting": true}"#.into(),
        steps: 6,
        sigmas: SigmaSchedule::FlowLinspace,
        latents: "latents".into(),
        latent_input: "x".into(),
        timestep_input: "t".into(),
        timestep_div: 1000.0,
        timestep_i64: false,
        prediction_output: "sample".into(),
        inputs: vec![("pos".into(), "c".into())],
        guidance: Guidance::TrueCfg { scale: 3.0, negative: vec![("neg".into(), "c".into())] },
        cfg_batch: Some(vec!["x".into(), "t".into(), "c".into()]),
        cache: Some(CachePolicy::TeaCache(TeaCacheSpec {
            threshold: 0.5,
            coefficients: vec![1.0, 0.0],
            pre: "pre".into(),
            blocks: "blocks".into(),
            post: "post".into(),
            modulated: "m".into(),
            residuals: vec![("h".into(), "h_out".into())],
        })),
    }
}

fn inputs() -> Tensors {
    let v = |s: f32| (0..4).map(|i| s * (i as f32 + 1.0)).collect::<Vec<f32>>();
    [
        ("latents".to_string(), HostTensor::from_f32(&[1, 4], &v(1.0))),
        ("pos".to_string(), HostTensor::from_f32(&[1, 4], &v(0.5))),
        ("neg".to_string(), HostTensor::from_f32(&[1, 4], &v(-0.25))),
    ]
    .into()
}

#[test]
fn record_measures_the_modulated_input_and_output_changes() {
    let (spec, ins) = (spec(), inputs());
    let (samples, report) = record(&spec, &mut Toy, &ins, &DenoiseOptions::default(), 3).unwrap();
    assert!(report.true_cfg && !report.cfg_batched, "{}", report.summary());
    assert_eq!(report.skipped, 0);
    // Steps 1..4 of 6 per branch (the last step is left out).
    assert_eq!(samples.len(), 2 * 4);
    assert!(samples.iter().all(|s| (1..5).contains(&s.step)));
    // The latents of each step from a plain run: m = x + c, sample = (2x + c) · t/1000.
    let full = run_denoise(&spec, &mut Toy, &ins, &DenoiseOptions { teacache_threshold: Some(0.0), dump_steps: true, ..Default::default() }).unwrap();
    let lat = full.dumps.iter().find(|(n, _)| n == "step.latents").unwrap().1.to_f32_vec();
    let ts = full.dumps.iter().find(|(n, _)| n == "schedule.timesteps").unwrap().1.to_f32_vec();
    let at = |i: usize| &lat[4 * i..4 * i + 4];
    for s in &samples {
        assert_eq!(s.trajectory, 3);
        let c = ins[if s.branch == 0 { "pos" } else { "neg" }].to_f32_vec();
        let m = |i: usize| at(i).iter().zip(&c).map(|(a, b)| a + b).collect::<Vec<f32>>();
        let o = |i: usize| at(i).iter().zip(&c).map(|(a, b)| (2.0 * a + b) * (ts[i] / 1000.0)).collect::<Vec<f32>>();
        let (x, y) = (rel_l1(&m(s.step), &m(s.step - 1)).unwrap(), rel_l1(&o(s.step), &o(s.step - 1)).unwrap());
        assert!((s.x - x).abs() <= 1e-12 && (s.y - y).abs() <= 1e-6 * y, "{s:?} vs x {x}, y {y}");
    }
    // Without a split there is nothing to record.
    let mut plain = spec.clone();
    plain.cache = None;
    assert!(matches!(record(&plain, &mut Toy, &ins, &DenoiseOptions::default(), 0), Err(CalibrateError::NoSplit)));
}

#[test]
fn predicted_compute_follows_the_loop_rule() {
    let s = |step: usize, x: f64| Sample { trajectory: 0, branch: 0, step, x, y: x };
    // Steps 1..7 of an 8-step run, each adding 0.1 to the estimate.
    let samples: Vec<Sample> = (1..8).map(|i| s(i, 0.1)).collect();
    let lin = [1.0, 0.0];
    let steps = |_t: usize| 8;
    assert_eq!(predicted_compute(&samples, &lin, 0.0, &steps), 1.0);
    // Threshold 0.25: steps 0, 3, 6 and the last (7) compute.
    assert_eq!(predicted_compute(&samples, &lin, 0.25, &steps), 4.0 / 8.0);
    // A huge threshold: only the first and the last step.
    assert_eq!(predicted_compute(&samples, &lin, 1e9, &steps), 2.0 / 8.0);
}

#[test]
fn calibration_file_round_trips_and_is_checked() {
    let c = TeaCacheCalibration {
        format: CALIBRATION_FORMAT.into(),
        family: "dit".into(),
        architecture: "DiTTransformer2DModel".into(),
        coefficients: FLUX.to_vec(),
        threshold: 0.3,
        trajectories: 4,
        steps: vec![20],
        guidance_scale: Some(4.0),
        samples: 152,
        fit: FitStats { rms_residual: 0.01, max_abs_residual: 0.05, r2: 0.98, x_min: 0.01, x_max: 0.4, y_mean: 0.1 },
        predicted_compute: vec![(0.1, 0.8), (0.2, 0.6)],
    };
    let text = serde_json::to_string_pretty(&c).unwrap();
    assert_eq!(TeaCacheCalibration::from_json(&text, "c.json").unwrap(), c);
    let bad = text.replace(CALIBRATION_FORMAT, "something-else");
    assert!(TeaCacheCalibration::from_json(&bad, "c.json").unwrap_err().contains("field `format`"));
    let e = TeaCacheCalibration::from_json(r#"{"format": "omnic-teacache-calibration-1"}"#, "c.json").unwrap_err();
    assert!(e.starts_with("c.json: not a TeaCache calibration file") && e.contains("family"), "{e}");
}

#[test]
fn non_monotone_finds_where_the_polynomial_falls_or_is_negative() {
    // p(x) = x − 0.1: negative below 0.1.
    let (a, b) = non_monotone(&[1.0, -0.1], 0.0, 0.3).unwrap();
    assert!(a > 0.0 && a < 0.01 && (b - 0.1).abs() < 0.01, "{a} {b}");
    assert_eq!(non_monotone(&[1.0, 0.0], 0.0, 0.3), None);
    // −10x³ + x turns down after x = 1/√30 ≈ 0.183.
    let (a, _) = non_monotone(&[-10.0, 0.0, 1.0, 0.0], 0.0, 0.5).unwrap();
    assert!(a > 0.15 && a < 0.2, "{a}");
}
