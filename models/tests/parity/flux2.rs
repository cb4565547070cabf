use crate::common::{check_fixture, fixture};
use omnic_ir::{Dim, Graph, Op, Role};
use omnic_models::{import, ImportError};
use std::path::Path;

#[test]
fn flux2_matches_diffusers() {
    check_fixture("flux2", 1e-4);
}

#[test]
fn flux2_klein_matches_diffusers() {
    check_fixture("flux2_klein", 1e-4);
}

/// Copy fixture `name` (config + weights) into `dir`, editing its config.
pub fn edited_copy(name: &str, dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let src = fixture(name);
    std::fs::copy(src.join("diffusion_pytorch_model.safetensors"), dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

/// Import an edited copy of `name`; the error it must give.
pub fn import_error(name: &str, edit: impl Fn(&mut serde_json::Value)) -> ImportError {
    let tmp = tempfile::tempdir().unwrap();
    edited_copy(name, tmp.path(), edit);
    import(tmp.path()).err().expect("import must fail")
}

/// Number of nodes carrying each role, and the highest block index.
pub fn roles_and_blocks(g: &Graph) -> (Vec<(Role, usize)>, u32) {
    let ids = g.topo_order().expect("topological order");
    let max_block = ids.iter().filter_map(|&n| g.node(n).block()).max().unwrap_or(0);
    let roles = [Role::ModulatedInput, Role::TimestepEmbedding, Role::ResidualIn, Role::ResidualOut];
    (
        roles
            .into_iter()
            .map(|r| {
                let c = ids.iter().filter(|&&n| g.node(n).has_role(&r)).count();
                (r, c)
            })
            .collect(),
        max_block,
    )
}

pub fn input_shape(g: &Graph, name: &str) -> Vec<Dim> {
    let (_, n) = g.inputs().into_iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no input {name}"));
    match &g.node(n).op {
        Op::Input { ty, .. } => ty.shape.clone(),
        _ => unreachable!(),
    }
}

#[test]
fn flux2_klein_with_guidance_names_the_missing_tensor() {
    let err = import_error("flux2_klein", |c| c["guidance_embeds"] = true.into()).to_string();
    assert!(err.contains("time_guidance_embed.guidance_embedder.linear_1.weight"), "{err}");
}

#[test]
fn flux2_wrong_mlp_ratio_names_the_tensor() {
    let err = import_error("flux2", |c| c["mlp_ratio"] = 4.0.into()).to_string();
    assert!(err.contains("transformer_blocks.0.ff.linear_in.weight"), "{err}");
}

#[test]
fn flux2_rope_axes_not_covering_head_names_the_field() {
    let err = import_error("flux2", |c| c["axes_dims_rope"] = serde_json::json!([4, 4, 4, 6]));
    assert!(matches!(&err, ImportError::Config { field, .. } if field == "axes_dims_rope"), "{err}");
}

#[test]
fn flux2_program_is_annotated() {
    let imp = import(&fixture("flux2")).expect("import flux2");
    let g = &imp.program.stages[0].graph;
    let (b, img, txt) = (Dim::sym("batch"), Dim::sym("img_seq"), Dim::sym("txt_seq"));
    assert_eq!(input_shape(g, "hidden_states"), vec![b.clone(), img.clone(), Dim::from(16usize)]);
    assert_eq!(input_shape(g, "encoder_hidden_states"), vec![b.clone(), txt.clone(), Dim::from(32usize)]);
    assert_eq!(input_shape(g, "img_ids"), vec![img, Dim::from(4usize)]);
    assert_eq!(input_shape(g, "txt_ids"), vec![txt, Dim::from(4usize)]);
    assert_eq!(input_shape(g, "guidance"), vec![b]);
    let (roles, max_block) = roles_and_blocks(g);
    for (r, c) in roles {
        assert_eq!(c, 1, "{r:?}");
    }
    assert_eq!(max_block, 3, "2 double + 2 single blocks numbered 0..=3");
    let klein = import(&fixture("flux2_klein")).expect("import flux2_klein");
    assert!(!klein.program.stages[0].graph.inputs().iter().any(|(n, _)| n == "guidance"));
}
