use crate::common::{check_fixture, fixture};
use omnic_ir::eval::{evaluate, Precision, Tensor};
use omnic_ir::{Dim, Graph, Op, Role};
use omnic_models::parity::read_io;
use omnic_models::{import, ImportError};
use omnic_runtime::tensor::HostTensor;
use std::collections::HashMap;
use std::path::Path;

#[test]
fn wan_matches_diffusers() {
    check_fixture("wan", 1e-4);
}

/// Copy fixture `name` into `dir`: its weights plus `extra` tensors, and
/// its config with `edit` applied.
pub fn edited_fixture(name: &str, dir: &Path, extra: Vec<(String, HostTensor)>, edit: impl Fn(&mut serde_json::Value)) {
    let src = fixture(name);
    let weights = src.join("diffusion_pytorch_model.safetensors");
    if extra.is_empty() {
        std::fs::copy(&weights, dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    } else {
        let mut all = omnic_runtime::io::read_all(&weights).unwrap();
        all.extend(extra);
        omnic_runtime::io::write(&dir.join("diffusion_pytorch_model.safetensors"), &all, None).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

/// Deterministic values in [-0.5, 0.5).
pub fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

pub fn input_shape(g: &Graph, name: &str) -> Vec<Dim> {
    let (_, n) = g.inputs().into_iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no input {name}"));
    match &g.node(n).op {
        Op::Input { ty, .. } => ty.shape.clone(),
        _ => unreachable!(),
    }
}

/// `x[:, :, :f, :h, :w]` of a `[B, C, F, H, W]` f32 tensor.
fn crop5(x: &Tensor, f: usize, h: usize, w: usize) -> Tensor {
    let s = &x.shape;
    let v = x.to_f32_vec();
    let mut out = Vec::new();
    for b in 0..s[0] {
        for c in 0..s[1] {
            for i in 0..f {
                for j in 0..h {
                    for k in 0..w {
                        out.push(v[(((b * s[1] + c) * s[2] + i) * s[3] + j) * s[4] + k]);
                    }
                }
            }
        }
    }
    Tensor::from_f32(&[s[0], s[1], f, h, w], &out)
}

#[test]
fn wan_wrong_heads_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    edited_fixture("wan", tmp.path(), vec![], |c| c["num_attention_heads"] = 4.into());
    let err = import(tmp.path()).err().expect("import must fail").to_string();
    assert!(err.contains("patch_embedding.weight"), "{err}");
}

#[test]
fn wan_unsupported_fields_are_named() {
    for (field, value) in
        [("pos_embed_seq_len", serde_json::json!(514)), ("patch_size", serde_json::json!([2, 2])), ("attention_head_dim", serde_json::json!(13))]
    {
        let tmp = tempfile::tempdir().unwrap();
        edited_fixture("wan", tmp.path(), vec![], |c| c[field] = value.clone());
        let err = import(tmp.path()).err().expect("import must fail");
        assert!(matches!(&err, ImportError::Config { field: f, .. } if f == field), "{field}: {err}");
    }
}

/// Symbolic batch / frames / height / width / txt_seq, one node per role,
/// blocks numbered, and a differently sized video runs.
#[test]
fn wan_program_is_symbolic_and_annotated() {
    let imp = import(&fixture("wan")).expect("import wan");
    let g = &imp.program.stages[0].graph;
    let s = |n: &str| Dim::sym(n);
    assert_eq!(input_shape(g, "hidden_states"), vec![s("batch"), 4usize.into(), s("frames"), s("height"), s("width")]);
    assert_eq!(input_shape(g, "encoder_hidden_states"), vec![s("batch"), s("txt_seq"), 16usize.into()]);
    assert_eq!(input_shape(g, "timestep"), vec![s("batch")]);
    let mut blocks: Vec<u32> = g.g.node_indices().filter_map(|n| g.node(n).block()).collect();
    blocks.sort();
    blocks.dedup();
    assert_eq!(blocks, vec![0, 1]);
    for r in [Role::ModulatedInput, Role::TimestepEmbedding, Role::ResidualIn, Role::ResidualOut] {
        let n = g.g.node_indices().filter(|&n| g.node(n).has_role(&r)).count();
        assert_eq!(n, 1, "{r:?} on {n} nodes");
    }
    let io = read_io(&fixture("wan").join("io.safetensors")).unwrap();
    let mut inputs: HashMap<String, Tensor> =
        ["timestep", "encoder_hidden_states"].iter().map(|k| (k.to_string(), io[&format!("input.{k}")].clone())).collect();
    inputs.insert("hidden_states".into(), crop5(&io["input.hidden_states"], 2, 4, 6));
    let out = evaluate(g, &inputs, &imp.checkpoint, Precision::F32).unwrap();
    assert_eq!(out["sample"].shape, vec![2, 4, 2, 4, 6]);
    // A height the 2×2 patch does not divide is refused, not cropped.
    inputs.insert("hidden_states".into(), crop5(&io["input.hidden_states"], 2, 5, 6));
    assert!(evaluate(g, &inputs, &imp.checkpoint, Precision::F32).is_err());
}

/// Wan2.1 I2V: image tokens through `image_embedder` and `add_k_proj` /
/// `add_v_proj`. With `add_v_proj` zero the image branch adds exactly
/// nothing, so the output equals the T2V model's; with it non-zero it differs.
#[test]
fn wan_i2v_image_branch_is_wired() {
    let (dim, image_dim, txt, img) = (24usize, 8usize, 512usize, 5usize);
    let mut seed = 0u64;
    let mut t = |name: String, shape: &[usize], zero: bool| {
        seed += 1;
        let n = shape.iter().product();
        let v = if zero { vec![0.0; n] } else { noise(n, seed) };
        (name, HostTensor::from_f32(shape, &v))
    };
    let mut base = Vec::new();
    let ie = "condition_embedder.image_embedder";
    for (n, s) in [
        ("norm1.weight", vec![image_dim]),
        ("norm1.bias", vec![image_dim]),
        ("ff.net.0.proj.weight", vec![image_dim, image_dim]),
        ("ff.net.0.proj.bias", vec![image_dim]),
        ("ff.net.2.weight", vec![dim, image_dim]),
        ("ff.net.2.bias", vec![dim]),
        ("norm2.weight", vec![dim]),
        ("norm2.bias", vec![dim]),
    ] {
        base.push(t(format!("{ie}.{n}"), &s, false));
    }
    for i in 0..2 {
        base.push(t(format!("blocks.{i}.attn2.add_k_proj.weight"), &[dim, dim], false));
        base.push(t(format!("blocks.{i}.attn2.add_k_proj.bias"), &[dim], false));
        base.push(t(format!("blocks.{i}.attn2.norm_added_k.weight"), &[dim], false));
    }
    let (mut zero_v, mut rand_v) = (Vec::new(), Vec::new());
    for i in 0..2 {
        for (n, shape) in [("weight", vec![dim, dim]), ("bias", vec![dim])] {
            zero_v.push(t(format!("blocks.{i}.attn2.add_v_proj.{n}"), &shape, true));
            rand_v.push(t(format!("blocks.{i}.attn2.add_v_proj.{n}"), &shape, false));
        }
    }
    let i2v = |extra: Vec<(String, HostTensor)>, dir: &Path| {
        edited_fixture("wan", dir, extra, |c| {
            c["image_dim"] = image_dim.into();
            c["added_kv_proj_dim"] = dim.into();
        })
    };
    let (tz, tr) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    i2v(base.iter().cloned().chain(zero_v).collect(), tz.path());
    i2v(base.into_iter().chain(rand_v).collect(), tr.path());

    let io = read_io(&fixture("wan").join("io.safetensors")).unwrap();
    let mut inputs: HashMap<String, Tensor> = ["timestep", "hidden_states"].iter().map(|k| (k.to_string(), io[&format!("input.{k}")].clone())).collect();
    inputs.insert("encoder_hidden_states".into(), Tensor::from_f32(&[2, txt, 16], &noise(2 * txt * 16, 99)));
    let t2v = import(&fixture("wan")).expect("import wan");
    let reference = evaluate(&t2v.program.stages[0].graph, &inputs, &t2v.checkpoint, Precision::F32).unwrap();
    inputs.insert("encoder_hidden_states_image".into(), Tensor::from_f32(&[2, img, image_dim], &noise(2 * img * image_dim, 7)));
    let run = |dir: &Path| {
        let imp = import(dir).expect("import i2v");
        let g = &imp.program.stages[0].graph;
        assert_eq!(input_shape(g, "encoder_hidden_states_image"), vec![Dim::sym("batch"), Dim::sym("img_seq"), image_dim.into()]);
        evaluate(g, &inputs, &imp.checkpoint, Precision::F32).unwrap()["sample"].max_abs_diff(&reference["sample"]).unwrap()
    };
    let (dz, dr) = (run(tz.path()), run(tr.path()));
    eprintln!("i2v vs t2v: zero add_v_proj {dz:.3e}, random add_v_proj {dr:.3e}");
    assert!(dz <= 1e-6, "zero image values changed the output by {dz}");
    assert!(dr > 1e-3, "the image branch had no effect ({dr})");
}
