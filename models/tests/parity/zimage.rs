//! Z-Image takes lists (one latent and one caption per sample); the program
//! describes one sample, so each sample `b` runs on its own: `x` ←
//! `input.x.{b}`, `cap_feats` ← `input.cap_feats.{b}`, `t` ← `input.t[b]`,
//! compared with `output.sample.{b}`. The intermediates come in the
//! program's slot layout (see `omnic_models::zimage`): their valid rows are
//! compared with the fixture's padded sequences.

use crate::common::fixture;
use crate::flux2::{import_error, input_shape, roles_and_blocks};
use omnic_ir::eval::{evaluate, Precision, Tensor};
use omnic_ir::{DType, Dim};
use omnic_models::parity::read_io;
use omnic_models::zimage::SEQ_MULTI_OF;
use omnic_models::{import, import_with, ImportError, ImportOptions};
use std::collections::HashMap;

const TOL: f64 = 1e-4;

fn round_up(n: usize) -> usize {
    n.div_ceil(SEQ_MULTI_OF) * SEQ_MULTI_OF
}

/// Rows `ranges` of `t` (`[.., S, D]`, leading dims of size 1 or indexed by `batch`).
fn rows(t: &Tensor, batch: usize, ranges: &[(usize, usize)]) -> Vec<f64> {
    let r = t.shape.len();
    let (s, d) = (t.shape[r - 2], t.shape[r - 1]);
    let v = t.to_f64_vec();
    let base = batch * s * d;
    ranges.iter().flat_map(|&(a, b)| v[base + a * d..base + b * d].iter().copied()).collect()
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn zimage_matches_diffusers_per_sample() {
    let dir = fixture("zimage");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let (p, pf) = (cfg["all_patch_size"][0].as_u64().unwrap() as usize, cfg["all_f_patch_size"][0].as_u64().unwrap() as usize);
    let imp = import_with(&dir, &ImportOptions { intermediates: true, ..Default::default() }).unwrap_or_else(|e| panic!("import zimage: {e}"));
    let g = &imp.program.stages[0].graph;
    let io = read_io(&dir.join("io.safetensors")).unwrap();
    let t_all = io["input.t"].to_f64_vec();
    let mut worst = 0.0f64;
    let mut report = String::new();
    for b in 0..t_all.len() {
        let x = io[&format!("input.x.{b}")].clone();
        let cap = io[&format!("input.cap_feats.{b}")].clone();
        let (f, h, w) = (x.shape[1], x.shape[2], x.shape[3]);
        let (n_img, n_cap) = ((f / pf) * (h / p) * (w / p), cap.shape[0]);
        let (np, lp) = (round_up(n_img), round_up(n_cap));
        let img_slots = n_img + SEQ_MULTI_OF - 1;
        let inputs: HashMap<String, Tensor> =
            [("x".to_string(), x), ("cap_feats".to_string(), cap), ("t".to_string(), Tensor::from_f64(DType::F32, &[1], vec![t_all[b]]))].into_iter().collect();
        let out = evaluate(g, &inputs, &imp.checkpoint, Precision::F32).unwrap_or_else(|e| panic!("sample {b}: {e}"));
        let mut names: Vec<&String> = out.keys().collect();
        names.sort();
        for name in names {
            let ours = &out[name];
            let (d, what) = if name == "sample" {
                let r = &io[&format!("output.sample.{b}")];
                assert_eq!(ours.shape, r.shape, "sample {b}");
                (max_abs(&ours.to_f64_vec(), &r.to_f64_vec()), format!("output.sample.{b}"))
            } else {
                let r = &io[name];
                let (mine, theirs) = if name.starts_with("inter.noise_refiner.") {
                    (rows(ours, 0, &[(0, np)]), rows(r, b, &[(0, np)]))
                } else if name.starts_with("inter.context_refiner.") {
                    (rows(ours, 0, &[(0, lp)]), rows(r, b, &[(0, lp)]))
                } else {
                    (rows(ours, 0, &[(0, np), (img_slots, img_slots + lp)]), rows(r, b, &[(0, np + lp)]))
                };
                (max_abs(&mine, &theirs), format!("{name}[{b}]"))
            };
            report += &format!("  {what:<44} max_abs {d:.3e}\n");
            worst = worst.max(d);
        }
    }
    eprintln!("zimage:\n{report}");
    assert!(worst <= TOL, "zimage exceeds max abs {TOL:e}:\n{report}");
}

#[test]
fn zimage_program_is_one_symbolic_sample() {
    let imp = import(&fixture("zimage")).expect("import zimage");
    let g = &imp.program.stages[0].graph;
    let s = |n: &str| Dim::sym(n);
    assert_eq!(input_shape(g, "x"), vec![Dim::from(16usize), s("frames"), s("height"), s("width")]);
    assert_eq!(input_shape(g, "cap_feats"), vec![s("cap_seq"), Dim::from(24usize)]);
    assert_eq!(input_shape(g, "t"), vec![Dim::from(1usize)]);
    let (roles, max_block) = roles_and_blocks(g);
    for (r, c) in roles {
        assert_eq!(c, 1, "{r:?}");
    }
    assert_eq!(max_block, 3, "noise refiner 0, context refiner 1, layers 2..=3");
}

/// Other image sizes and caption lengths (including an exact multiple of
/// 32) run through the same program and give `[C, F, H, W]` back.
#[test]
fn zimage_runs_other_sizes() {
    let imp = import(&fixture("zimage")).expect("import zimage");
    let g = &imp.program.stages[0].graph;
    for (h, w, l) in [(6usize, 10usize, 40usize), (16, 16, 32), (8, 4, 1)] {
        let x = Tensor::from_f64(DType::F32, &[16, 1, h, w], (0..16 * h * w).map(|i| ((i % 13) as f64 - 6.0) / 7.0).collect());
        let cap = Tensor::from_f64(DType::F32, &[l, 24], (0..l * 24).map(|i| ((i % 11) as f64 - 5.0) / 5.0).collect());
        let t = Tensor::from_f64(DType::F32, &[1], vec![0.5]);
        let inputs: HashMap<String, Tensor> = [("x".into(), x), ("cap_feats".into(), cap), ("t".into(), t)].into_iter().collect();
        let out = evaluate(g, &inputs, &imp.checkpoint, Precision::F32).unwrap_or_else(|e| panic!("{h}x{w}, L={l}: {e}"));
        let s = &out["sample"];
        assert_eq!(s.shape, vec![16, 1, h, w]);
        assert!(s.to_f64_vec().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn zimage_wrong_cap_feat_dim_names_the_tensor() {
    let err = import_error("zimage", |c| c["cap_feat_dim"] = 16.into()).to_string();
    assert!(err.contains("cap_embedder.0.weight"), "{err}");
}

#[test]
fn zimage_rope_axes_not_covering_head_names_the_field() {
    let err = import_error("zimage", |c| c["axes_dims"] = serde_json::json!([8, 4, 6]));
    assert!(matches!(&err, ImportError::Config { field, .. } if field == "axes_dims"), "{err}");
}
