use crate::common::{check_fixture, fixture};
use omnic_ir::eval::{evaluate, Precision};
use omnic_models::parity::{read_io, select_inputs};
use omnic_models::{import, ImportError};
use std::path::Path;

#[test]
fn flux_matches_diffusers() {
    check_fixture("flux", 1e-4);
}

#[test]
fn flux_noguid_matches_diffusers() {
    check_fixture("flux_noguid", 1e-4);
}

/// `lora/base` is the `flux` model; its `output.sample_base` is the plain
/// forward on the `lora` inputs.
#[test]
fn flux_lora_base_matches_sample_base() {
    let dir = fixture("lora");
    let imp = import(&dir.join("base")).expect("import lora/base");
    let g = &imp.program.stages[0].graph;
    let io = read_io(&dir.join("io.safetensors")).unwrap();
    let inputs = select_inputs(g, &io).unwrap();
    let out = evaluate(g, &inputs, &imp.checkpoint, Precision::F32).unwrap();
    let d = out["sample"].max_abs_diff(&io["output.sample_base"]).unwrap();
    eprintln!("lora/base sample vs output.sample_base: max_abs {d:.3e}");
    assert!(d <= 1e-4, "max abs {d}");
}

/// A copy of fixture `name` (config + weights) with `edit` applied to its config.
pub fn edited_copy(name: &str, dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let src = fixture(name);
    std::fs::copy(src.join("diffusion_pytorch_model.safetensors"), dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

#[test]
fn flux_guidance_without_weights_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    edited_copy("flux_noguid", tmp.path(), |c| c["guidance_embeds"] = true.into());
    let err = import(tmp.path()).err().expect("import must fail").to_string();
    assert!(err.contains("time_text_embed.guidance_embedder.linear_1.weight"), "{err}");
}

#[test]
fn flux_wrong_heads_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    edited_copy("flux", tmp.path(), |c| c["num_attention_heads"] = 4.into());
    let err = import(tmp.path()).err().expect("import must fail").to_string();
    assert!(err.contains("x_embedder.weight"), "{err}");
}

#[test]
fn flux_rope_axes_not_covering_head_names_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    edited_copy("flux", tmp.path(), |c| c["axes_dims_rope"] = serde_json::json!([4, 6, 8]));
    let err = import(tmp.path()).err().expect("import must fail");
    assert!(matches!(&err, ImportError::Config { field, .. } if field == "axes_dims_rope"), "{err}");
}

/// Inputs carry symbolic `batch` / `img_seq` / `txt_seq`; blocks are
/// numbered across both stacks; each role is placed once.
#[test]
fn flux_program_is_annotated() {
    use omnic_ir::{Dim, Op, Role};
    let imp = import(&fixture("flux")).expect("import flux");
    let g = &imp.program.stages[0].graph;
    let ty = |name: &str| {
        let (_, n) = g.inputs().into_iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no input {name}"));
        match &g.node(n).op {
            Op::Input { ty, .. } => ty.shape.clone(),
            _ => unreachable!(),
        }
    };
    let (b, img, txt) = (Dim::sym("batch"), Dim::sym("img_seq"), Dim::sym("txt_seq"));
    assert_eq!(ty("hidden_states"), vec![b.clone(), img.clone(), Dim::from(16usize)]);
    assert_eq!(ty("encoder_hidden_states"), vec![b.clone(), txt.clone(), Dim::from(32usize)]);
    assert_eq!(ty("img_ids"), vec![img, Dim::from(3usize)]);
    assert_eq!(ty("txt_ids"), vec![txt, Dim::from(3usize)]);
    assert_eq!(ty("guidance"), vec![b]);
    let mut blocks: Vec<u32> = g.g.node_indices().filter_map(|n| g.node(n).block()).collect();
    blocks.sort();
    blocks.dedup();
    assert_eq!(blocks, vec![0, 1, 2, 3]);
    // Residual streams: image and text enter the stack (two nodes) and
    // leave it as the two results of the last single block's split.
    for (r, want) in [(Role::ModulatedInput, 1), (Role::TimestepEmbedding, 1), (Role::ResidualIn, 2), (Role::ResidualOut, 1)] {
        let n = g.g.node_indices().filter(|&n| g.node(n).has_role(&r)).count();
        assert_eq!(n, want, "{r:?} on {n} nodes");
    }
    let noguid = import(&fixture("flux_noguid")).expect("import flux_noguid");
    assert!(noguid.program.stages[0].graph.inputs().iter().all(|(k, _)| k != "guidance"));
}
