//! The runtime schedulers against diffusers 0.42.1 reference values:
//! tests/fixtures/schedulers/*.json (written by
//! tests/fixtures/generators/schedulers.py) and the `denoise` fixture's
//! schedule and Euler steps.
//!
//! Tolerances: timesteps / sigmas / alphas_cumprod relative 1e-6, step
//! outputs absolute 1e-5 (the scheduler runs the whole chain on its own
//! samples and multistep state, fed the recorded model outputs).

use omnic_runtime::io::MappedFile;
use omnic_runtime::sched::config::ConfigReader;
use omnic_runtime::sched::{self, DdimConfig, DdimScheduler, DpmSolverConfig, DpmSolverMultistepScheduler, Scheduler, TimestepOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};

const REL_SCHEDULE: f64 = 1e-6;
const ABS_STEP: f64 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn f32_list(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

fn f64_list(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

/// Max relative error (exact equality required where the reference is 0).
fn max_rel(got: &[f32], want: &[f32], what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs reference {}\n got {got:?}\nwant {want:?}", got.len(), want.len());
    let mut m = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = if w == 0.0 {
            assert_eq!(g, 0.0, "{what}[{i}]: {g} vs reference 0");
            0.0
        } else {
            ((g as f64 - w as f64) / w as f64).abs()
        };
        assert!(e <= REL_SCHEDULE, "{what}[{i}]: {g} vs reference {w} (rel {e:.3e})\n got {got:?}\nwant {want:?}");
        m = m.max(e);
    }
    m
}

fn max_abs(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).abs()).fold(0.0, f64::max)
}

struct Report {
    name: String,
    steps: usize,
    sched_rel: f64,
    step_abs: f64,
    exact_steps: bool,
}

fn check_case(path: &Path) -> Report {
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let name = fx["name"].as_str().unwrap().to_string();
    let cfg = &fx["config"];
    let class = cfg["_class_name"].as_str().unwrap();
    let mut s = sched::from_config_value(cfg, &path.display().to_string()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(s.class_name(), class);

    let st = &fx["set_timesteps"];
    let mut opts = TimestepOptions { num_inference_steps: st["num_inference_steps"].as_u64().map(|n| n as usize), ..Default::default() };
    if let Some(mu) = st.get("mu").and_then(Value::as_f64) {
        if let Some(len) = st.get("image_seq_len").and_then(Value::as_u64) {
            if class == "FlowMatchEulerDiscreteScheduler" {
                let ours = s.dynamic_shift_mu(len as usize).expect("dynamic shifting");
                assert_eq!(ours, mu, "{name}: calculate_shift({len})");
            }
        }
        opts.mu = Some(mu);
    }
    if let Some(sig) = st.get("sigmas").filter(|v| !v.is_null()) {
        let sig = f64_list(sig);
        if st["sigmas_are_flux_linspace"].as_bool() == Some(true) {
            assert_eq!(sched::flux_sigmas(sig.len()), sig, "{name}: flux_sigmas");
        }
        opts.sigmas = Some(sig);
    }
    s.set_timesteps(&opts).unwrap_or_else(|e| panic!("{name}: {e}"));

    let mut sched_rel = max_rel(s.timesteps(), &f32_list(&fx["timesteps"]), &format!("{name}: timesteps"));
    match (&fx["sigmas"], s.sigmas()) {
        (Value::Null, None) => {}
        (want, Some(got)) if !want.is_null() => sched_rel = sched_rel.max(max_rel(got, &f32_list(want), &format!("{name}: sigmas"))),
        (want, got) => panic!("{name}: sigmas {got:?} vs reference {want}"),
    }
    if let Some(acp_want) = fx.get("alphas_cumprod_at_timesteps") {
        let reader = ConfigReader::new(cfg, "fixture").unwrap();
        let (acp, ts): (Vec<f32>, Vec<i64>) = if class == "DDIMScheduler" {
            let mut d = DdimScheduler::new(DdimConfig::from_reader(&reader).unwrap());
            d.set_timesteps(&opts).unwrap();
            (d.alphas_cumprod().to_vec(), d.timesteps_i64().to_vec())
        } else {
            let mut d = DpmSolverMultistepScheduler::new(DpmSolverConfig::from_reader(&reader).unwrap());
            d.set_timesteps(&opts).unwrap();
            (d.alphas_cumprod().to_vec(), d.timesteps_i64().to_vec())
        };
        let got: Vec<f32> = ts.iter().map(|&t| acp[t as usize]).collect();
        sched_rel = sched_rel.max(max_rel(&got, &f32_list(acp_want), &format!("{name}: alphas_cumprod")));
    }
    assert_eq!(s.init_noise_sigma() as f64, fx["init_noise_sigma"].as_f64().unwrap());

    let steps = &fx["steps"];
    let mut sample = f32_list(&steps["sample0"]);
    let mos = steps["model_outputs"].as_array().unwrap();
    let want = steps["samples"].as_array().unwrap();
    assert_eq!(mos.len(), s.timesteps().len());
    let mut step_abs = 0.0f64;
    let mut exact = true;
    for (k, (mo, w)) in mos.iter().zip(want).enumerate() {
        assert_eq!(s.step_index(), k);
        let mut scaled = sample.clone();
        s.scale_model_input(&mut scaled);
        assert_eq!(scaled, sample, "scale_model_input is a no-op");
        let next = s.step_vec(&f32_list(mo), &sample).unwrap();
        let w = f32_list(w);
        let e = max_abs(&next, &w);
        assert!(e <= ABS_STEP, "{name}: step {k}: max |Δ| {e:.3e}\n got {next:?}\nwant {w:?}");
        exact &= next == w;
        step_abs = step_abs.max(e);
        sample = next;
    }
    let e = s.step_vec(&sample, &sample).unwrap_err().to_string();
    assert!(e.contains("steps of the schedule have been taken"), "{e}");
    Report { name, steps: mos.len(), sched_rel, step_abs, exact_steps: exact }
}

#[test]
fn schedulers_match_diffusers() {
    let dir = fixtures().join("schedulers");
    let index: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["cases"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(names.len() >= 20, "{names:?}");
    let mut classes = std::collections::BTreeSet::new();
    eprintln!("{:<32} {:>5} {:>14} {:>12} exact", "case", "steps", "max rel sched", "max |Δ| step");
    for n in &names {
        let r = check_case(&dir.join(format!("{n}.json")));
        classes.insert(r.name.split('_').next().unwrap().to_string());
        eprintln!("{:<32} {:>5} {:>14.3e} {:>12.3e} {}", r.name, r.steps, r.sched_rel, r.step_abs, r.exact_steps);
    }
    assert_eq!(classes.into_iter().collect::<Vec<_>>(), ["ddim", "dpm", "flow"]);
}

#[test]
fn denoise_fixture_schedule_and_euler_steps() {
    let dir = fixtures().join("denoise");
    let mut s = sched::from_config_file(&dir.join("scheduler/scheduler_config.json")).unwrap();
    let io = MappedFile::open(&dir.join("io.safetensors")).unwrap();
    let latents = io.tensor("step.latents").unwrap();
    let noise_pred = io.tensor("step.noise_pred").unwrap();
    let want_sigmas = io.tensor("schedule.sigmas").unwrap().to_f32_vec();
    let want_ts = io.tensor("schedule.timesteps").unwrap().to_f32_vec();
    let (n_steps, seq, ch) = (noise_pred.shape[0], latents.shape[1], latents.shape[2]);
    assert_eq!(want_ts.len(), n_steps);

    // FluxPipeline: image_seq_len = packed latent tokens; mu from the config.
    let mu = s.dynamic_shift_mu(seq).expect("use_dynamic_shifting");
    assert!((mu - 0.460729).abs() < 1e-6, "mu {mu}");
    s.set_timesteps(&TimestepOptions::flux(n_steps, mu)).unwrap();
    let rel_s = max_rel(s.sigmas().unwrap(), &want_sigmas, "denoise: sigmas");
    let rel_t = max_rel(s.timesteps(), &want_ts, "denoise: timesteps");

    let lat = latents.to_f32_vec();
    let np = noise_pred.to_f32_vec();
    let per = seq * ch;
    let mut x = lat[..per].to_vec();
    let mut worst = 0.0f64;
    for k in 0..n_steps {
        x = s.step_vec(&np[k * per..(k + 1) * per], &x).unwrap();
        let e = max_abs(&x, &lat[(k + 1) * per..(k + 2) * per]);
        assert!(e <= ABS_STEP, "denoise: step {k}: max |Δ| {e:.3e}");
        worst = worst.max(e);
    }
    eprintln!("denoise: sigmas rel {rel_s:.3e}, timesteps rel {rel_t:.3e}, latents after 8 Euler steps max |Δ| {worst:.3e}");
}

#[test]
fn usage_errors_are_reported() {
    let cfg: Value = serde_json::json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": true});
    let mut s = sched::from_config_value(&cfg, "cfg.json").unwrap();
    let e = s.step_vec(&[0.0], &[0.0]).unwrap_err().to_string();
    assert!(e.contains("before set_timesteps"), "{e}");
    let e = s.set_timesteps(&TimestepOptions::steps(4)).unwrap_err().to_string();
    assert!(e.contains("`mu`"), "{e}");
    s.set_timesteps(&TimestepOptions::steps(4).with_mu(0.5)).unwrap();
    let mut out = [0.0f32; 2];
    let e = s.step(&[0.0; 3], &[0.0; 2], &mut out).unwrap_err().to_string();
    assert!(e.contains("must match"), "{e}");

    let mut d = sched::from_config_value(&serde_json::json!({"_class_name": "DDIMScheduler"}), "cfg.json").unwrap();
    assert!(d.sigmas().is_none());
    let e = d.set_timesteps(&TimestepOptions::steps(1001)).unwrap_err().to_string();
    assert!(e.contains("between 1 and num_train_timesteps"), "{e}");
    let e = d.set_timesteps(&TimestepOptions::flux(4, 0.5)).unwrap_err().to_string();
    assert!(e.contains("only num_inference_steps"), "{e}");

    let mut p = sched::from_config_value(&serde_json::json!({"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true}), "cfg.json").unwrap();
    let e = p.set_timesteps(&TimestepOptions { timesteps: Some(vec![999.0, 500.0]), ..Default::default() }).unwrap_err().to_string();
    assert!(e.contains("custom timesteps"), "{e}");
}

#[test]
fn dpm_custom_timesteps_use_training_sigmas() {
    let mut p = sched::from_config_value(&serde_json::json!({"_class_name": "DPMSolverMultistepScheduler"}), "cfg.json").unwrap();
    p.set_timesteps(&TimestepOptions::steps(10)).unwrap();
    let (ts, sig) = (p.timesteps().to_vec(), p.sigmas().unwrap().to_vec());
    p.set_timesteps(&TimestepOptions { timesteps: Some(ts.iter().map(|&t| t as f64).collect()), ..Default::default() }).unwrap();
    assert_eq!(p.timesteps(), &ts[..]);
    assert_eq!(p.sigmas().unwrap(), &sig[..]);
}
