//! `omnic calibrate teacache` and `omnic compile --teacache [T]
//! --teacache-coefficients`: calibrating the bundled digits model (a DiT
//! family without published coefficients), the calibration stored in the
//! artifact, the model's own `teacache.json`, and the errors.

use crate::support::{root, text};
use omnic_runtime::artifact::{Artifact, Control, OpenOptions};
use omnic_runtime::program::teacache_calibrate::TeaCacheCalibration;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn omnic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omnic")).args(args).current_dir(root()).output().expect("run omnic")
}

fn teacache_of(art: &Path) -> omnic_runtime::program::denoise::TeaCacheSpec {
    let a = Artifact::open_with(art, &OpenOptions::default()).expect("open artifact");
    let Control::Denoise(d) = &a.manifest().control else { panic!("no denoise control") };
    d.teacache().expect("no teacache policy").clone()
}

/// Calibrate the digits model on two trajectories of 12 steps; the fit
/// reproduces the samples it was fitted on (the residual the file states,
/// recomputed from the samples CSV), and compiling with the file stores its
/// coefficients and threshold in the artifact.
#[test]
fn calibrate_digits_and_store_in_the_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let cal = dir.path().join("cal.json");
    let csv = dir.path().join("samples.csv");
    let o = omnic(&[
        "calibrate",
        "teacache",
        "models/zoo/digits-dit",
        "-o",
        cal.to_str().unwrap(),
        "--seeds",
        "2",
        "--steps",
        "12",
        "--threshold",
        "0.3",
        "--threads",
        "2",
        "--samples",
        csv.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    eprintln!("{t}");
    let c = TeaCacheCalibration::from_json(&std::fs::read_to_string(&cal).unwrap(), "cal.json").unwrap();
    assert_eq!((c.family.as_str(), c.architecture.as_str()), ("dit", "DiTTransformer2DModel"));
    assert_eq!((c.coefficients.len(), c.trajectories, c.threshold), (5, 2, 0.3));
    // 2 trajectories × 2 branches (class CFG) × steps 1..=10 (the last step is left out).
    assert_eq!(c.samples, 40);
    assert_eq!(c.guidance_scale, Some(4.0));
    let rows: Vec<(f64, f64)> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let v: Vec<&str> = l.split(',').collect();
            (v[3].parse().unwrap(), v[4].parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 40);
    let res: Vec<f64> = rows.iter().map(|&(x, y)| y - omnic_runtime::program::denoise::poly(&c.coefficients, x)).collect();
    let rms = (res.iter().map(|r| r * r).sum::<f64>() / res.len() as f64).sqrt();
    assert!((rms - c.fit.rms_residual).abs() <= 1e-9 * rms.max(1e-12), "rms {rms} vs stated {}", c.fit.rms_residual);
    // The output change follows the input change: the fit explains most of its variance.
    assert!(c.fit.r2 >= 0.8, "R² {} (rms residual {})", c.fit.r2, c.fit.rms_residual);
    // Higher thresholds never predict more computation.
    assert!(c.predicted_compute.windows(2).all(|w| w[1].1 <= w[0].1), "{:?}", c.predicted_compute);

    let art = dir.path().join("digits-tc.omni");
    let o = omnic(&["compile", "models/zoo/digits-dit", "--teacache", "--teacache-coefficients", cal.to_str().unwrap(), "-o", art.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("teacache: threshold 0.3, coefficients from calibrated for DiTTransformer2DModel"), "{}", text(&o));
    let tc = teacache_of(&art);
    assert_eq!(tc.threshold, 0.3);
    for (a, b) in tc.coefficients.iter().zip(&c.coefficients) {
        assert!((a - b).abs() <= 1e-12 * b.abs(), "{:?} vs {:?}", tc.coefficients, c.coefficients);
    }
}

/// `omnic compile models/zoo/digits-dit --teacache` takes the calibration
/// shipped with the model (`models/zoo/digits-dit/teacache.json`): its
/// coefficients and recommended threshold; an explicit threshold wins.
#[test]
fn compile_uses_the_models_own_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = root().join("models/zoo/digits-dit/teacache.json");
    let c = TeaCacheCalibration::from_json(&std::fs::read_to_string(&shipped).unwrap(), "teacache.json").unwrap();
    let art = dir.path().join("a.omni");
    let o = omnic(&["compile", "models/zoo/digits-dit", "--teacache", "-o", art.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let tc = teacache_of(&art);
    assert_eq!(tc.threshold, c.threshold);
    assert_eq!(tc.coefficients.len(), c.coefficients.len());
    // `omnirt generate` reports steps, block-stack runs, skips and time per step; `--teacache` overrides the threshold.
    let rt = PathBuf::from(env!("CARGO_BIN_EXE_omnic")).with_file_name("omnirt");
    if !rt.exists() {
        let st = Command::new(env!("CARGO")).args(["build", "-q", "-p", "omnic-runtime", "--bin", "omnirt"]).status().expect("build omnirt");
        assert!(st.success());
    }
    let png = dir.path().join("d.png");
    for (t, zero_skips) in [("0", true), ("0.5", false)] {
        let o = Command::new(&rt)
            .args(["generate", art.to_str().unwrap(), "--steps", "20", "--teacache", t, "--threads", "2", "-o", png.to_str().unwrap()])
            .output()
            .expect("run omnirt");
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(out.contains("20 steps computed") && out.contains("ms/step") && out.contains(&format!("teacache {t}:")), "{out}");
        assert_eq!(out.contains(", 0 skipped"), zero_skips, "{out}");
    }
    let o = omnic(&["compile", "models/zoo/digits-dit", "--teacache", "0.15", "-o", art.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(teacache_of(&art).threshold, 0.15);
}

/// Bad input: exit 1 with an error naming the directory, file, flag or annotation.
#[test]
fn calibrate_and_teacache_flag_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.json");
    let o_s = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["calibrate", "teacache", "no/such/dir", "-o", o_s], "no/such/dir is not a directory"),
        (vec!["calibrate", "teacache", "tests/fixtures/dit", "-o", o_s], "has no denoise loop"),
        (vec!["calibrate", "teacache", "tests/fixtures/denoise", "-o", o_s], "needs --inputs with its conditioning"),
        (vec!["calibrate", "teacache", "models/zoo/digits-dit", "-o", o_s, "--classes", "12"], "class 12 is out of range"),
        (vec!["calibrate", "teacache", "models/zoo/digits-dit", "-o", o_s, "--steps", "2"], "at least 3 steps"),
        (vec!["compile", "models/zoo/digits-dit", "-o", o_s, "--teacache-coefficients", "1,2"], "--teacache-coefficients needs --teacache"),
        (vec!["compile", "models/zoo/digits-dit", "-o", o_s, "--teacache", "--teacache-coefficients", "1,x"], "neither a calibration file nor"),
        (vec!["compile", "models/zoo/digits-dit", "-o", o_s, "--teacache", "--teacache-coefficients", "missing.json"], "no such file missing.json"),
    ];
    for (args, needle) in cases {
        let o = omnic(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
        assert!(t.contains("error") && t.contains(needle) && !t.contains("panicked"), "{args:?}: {t}");
    }
    // A calibration file of the wrong kind names the file and the field.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"format": "something"}"#).unwrap();
    let o = omnic(&["compile", "models/zoo/digits-dit", "-o", o_s, "--teacache", "--teacache-coefficients", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("bad.json: not a TeaCache calibration file"), "{}", text(&o));
    // A model without the annotation the calibration measures: the teacache
    // pass (which calibrate runs) names the missing `role(modulated_input)`.
    let ir = dir.path().join("no_modulated.omir");
    std::fs::write(
        &ir,
        "stage \"t\" {\n  %0 = input \"hidden_states\" : f32[batch,4]\n  %1 = input \"timestep\" : f32[batch]\n  %2 = exp(%0) : f32[batch,4] #role(residual_in)\n  %3 = exp(%2) : f32[batch,4] #role(residual_out)\n  output \"sample\" = %3\n}\ncontrol denoise \"t\" {\n  scheduler \"{}\"\n  steps 4\n  sigmas flow_linspace\n  latents \"latents\" -> \"hidden_states\"\n  timestep \"timestep\" / 1000.0\n  prediction \"sample\"\n  guidance none\n}\n",
    )
    .unwrap();
    let o = omnic(&["opt", ir.to_str().unwrap(), "--passes", "teacache{threshold=0 coefficients=0}"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("role(modulated_input), found 0"), "{}", text(&o));
}
