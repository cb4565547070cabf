use crate::common::{check_fixture, fixture};
use omnic_models::{import, ImportError};
use std::path::Path;

#[test]
fn vae_matches_diffusers() {
    check_fixture("vae", 1e-4);
}

#[test]
fn vae_flux_matches_diffusers() {
    check_fixture("vae_flux", 1e-4);
}

#[test]
fn vae_metadata_has_latent_factors() {
    let sd = import(&fixture("vae")).expect("import vae");
    assert_eq!(sd.program.metadata.get("scaling_factor").map(String::as_str), Some("0.18215"));
    assert!(!sd.program.metadata.contains_key("shift_factor"));
    let flux = import(&fixture("vae_flux")).expect("import vae_flux");
    assert_eq!(flux.program.metadata.get("scaling_factor").map(String::as_str), Some("0.3611"));
    assert_eq!(flux.program.metadata.get("shift_factor").map(String::as_str), Some("0.1159"));
}

/// A copy of the `vae` fixture with `edit` applied to its config.
fn edited_copy(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let src = fixture("vae");
    std::fs::copy(src.join("diffusion_pytorch_model.safetensors"), dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

#[test]
fn vae_wrong_latent_channels_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    edited_copy(tmp.path(), |c| c["latent_channels"] = 8.into());
    let err = import(tmp.path()).err().expect("import must fail").to_string();
    assert!(err.contains("post_quant_conv.weight"), "{err}");
}

#[test]
fn vae_unsupported_up_block_names_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    edited_copy(tmp.path(), |c| c["up_block_types"][1] = "AttnUpDecoderBlock2D".into());
    let err = import(tmp.path()).err().expect("import must fail");
    assert!(matches!(&err, ImportError::Config { field, .. } if field == "up_block_types"), "{err}");
}

#[test]
fn vae_spatial_dims_are_symbolic() {
    use omnic_ir::Dim;
    let imp = import(&fixture("vae")).expect("import vae");
    let g = &imp.program.stages[0].graph;
    let (h, w) = (Dim::sym("h"), Dim::sym("w"));
    let (_, z) = g.inputs().into_iter().find(|(n, _)| n == "z").expect("input z");
    let zt = g.value_type(omnic_ir::ValueRef::new(z, 0)).unwrap();
    assert_eq!(zt.shape, vec![Dim::sym("batch"), Dim::from(4usize), h.clone(), w.clone()]);
    let (_, out) = g.outputs.iter().find(|(n, _)| n == "sample").expect("output sample");
    let ot = g.value_type(*out).unwrap();
    let two = Dim::from(2usize);
    assert_eq!(ot.shape, vec![Dim::sym("batch"), Dim::from(3usize), h.mul(&two), w.mul(&two)]);
}
