use crate::common::{check_fixture, fixture};
use crate::wan::{edited_fixture, input_shape};
use omnic_ir::eval::{evaluate, Precision, Tensor};
use omnic_ir::{DType, Dim, Role};
use omnic_models::parity::read_io;
use omnic_models::{import, ImportError};
use std::collections::HashMap;

#[test]
fn glmimage_matches_diffusers() {
    check_fixture("glmimage", 1e-4);
}

#[test]
fn glmimage_wrong_text_dim_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    edited_fixture("glmimage", tmp.path(), vec![], |c| c["text_embed_dim"] = 32.into());
    let err = import(tmp.path()).err().expect("import must fail").to_string();
    assert!(err.contains("glyph_projector.net.0.proj.weight"), "{err}");
}

#[test]
fn glmimage_head_dim_not_multiple_of_4_names_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    edited_fixture("glmimage", tmp.path(), vec![], |c| c["attention_head_dim"] = 18.into());
    let err = import(tmp.path()).err().expect("import must fail");
    assert!(matches!(&err, ImportError::Config { field, .. } if field == "attention_head_dim"), "{err}");
}

/// Symbolic batch / height / width / txt_seq (prior tokens follow the
/// patch grid), one node per role, and a smaller latent runs.
#[test]
fn glmimage_program_is_symbolic_and_annotated() {
    let imp = import(&fixture("glmimage")).expect("import glmimage");
    let g = &imp.program.stages[0].graph;
    let s = |n: &str| Dim::sym(n);
    assert_eq!(input_shape(g, "hidden_states"), vec![s("batch"), 4usize.into(), s("height"), s("width")]);
    assert_eq!(input_shape(g, "encoder_hidden_states"), vec![s("batch"), s("txt_seq"), 24usize.into()]);
    assert_eq!(input_shape(g, "target_size"), vec![s("batch"), 2usize.into()]);
    let prior = input_shape(g, "prior_token_id");
    assert_eq!(prior[0], s("batch"));
    let mut syms = Vec::new();
    prior[1].symbols(&mut syms);
    syms.sort();
    assert_eq!(syms, vec!["height".to_string(), "width".to_string()]);
    for r in [Role::ModulatedInput, Role::TimestepEmbedding, Role::ResidualIn, Role::ResidualOut] {
        let n = g.g.node_indices().filter(|&n| g.node(n).has_role(&r)).count();
        assert_eq!(n, 1, "{r:?} on {n} nodes");
    }

    // A 4×8 latent (2×4 patches) with 3 text tokens.
    let io = read_io(&fixture("glmimage").join("io.safetensors")).unwrap();
    let mut inputs: HashMap<String, Tensor> =
        ["timestep", "target_size", "crop_coords"].iter().map(|k| (k.to_string(), io[&format!("input.{k}")].clone())).collect();
    let x = io["input.hidden_states"].to_f32_vec();
    let crop: Vec<f32> = (0..2 * 4 * 4 * 8)
        .map(|i| {
            let (b, c, h, w) = (i / 128, (i / 32) % 4, (i / 8) % 4, i % 8);
            x[((b * 4 + c) * 8 + h) * 12 + w]
        })
        .collect();
    inputs.insert("hidden_states".into(), Tensor::from_f32(&[2, 4, 4, 8], &crop));
    let ehs = io["input.encoder_hidden_states"].to_f32_vec();
    let ehs: Vec<f32> = (0..2 * 3 * 24).map(|i| ehs[(i / 72) * 7 * 24 + i % 72]).collect();
    inputs.insert("encoder_hidden_states".into(), Tensor::from_f32(&[2, 3, 24], &ehs));
    inputs.insert("prior_token_id".into(), Tensor::from_i64(DType::I64, &[2, 8], (0..16).map(|i| (i * 5) % 64).collect()));
    inputs.insert("prior_token_drop".into(), Tensor::from_bool(&[2, 8], (0..16).map(|i| i % 3 == 0).collect()));
    let out = evaluate(g, &inputs, &imp.checkpoint, Precision::F32).unwrap();
    assert_eq!(out["sample"].shape, vec![2, 4, 4, 8]);
    // Prior tokens that do not match the latent's patch grid are refused.
    inputs.insert("prior_token_id".into(), Tensor::from_i64(DType::I64, &[2, 9], vec![0; 18]));
    assert!(evaluate(g, &inputs, &imp.checkpoint, Precision::F32).is_err());
}
