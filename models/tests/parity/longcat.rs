use crate::common::check_fixture;
use crate::flux::edited_copy;
use omnic_models::{import, ImportError};

#[test]
fn longcat_matches_diffusers() {
    check_fixture("longcat", 1e-4);
}

#[test]
fn longcat_wrong_in_channels_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    edited_copy("longcat", tmp.path(), |c| c["in_channels"] = 64.into());
    let err = import(tmp.path()).err().expect("import must fail").to_string();
    assert!(err.contains("x_embedder.weight"), "{err}");
}

#[test]
fn longcat_odd_rope_axis_names_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    edited_copy("longcat", tmp.path(), |c| c["axes_dims_rope"] = serde_json::json!([5, 5, 6]));
    let err = import(tmp.path()).err().expect("import must fail");
    assert!(matches!(&err, ImportError::Config { field, .. } if field == "axes_dims_rope"), "{err}");
}
