use super::*;
use omnic_runtime::{io, HostTensor};

fn t(shape: &[usize]) -> HostTensor {
    let n: usize = shape.iter().product();
    HostTensor::from_f32(shape, &(0..n).map(|i| i as f32 * 0.5).collect::<Vec<_>>())
}

#[test]
fn single_file_and_dtype_widening() {
    let d = tempfile::tempdir().unwrap();
    let h = HostTensor { dtype: ElemType::F16, shape: vec![2], data: [half::f16::from_f32(0.1), half::f16::from_f32(-3.0)].iter().flat_map(|x| x.to_le_bytes()).collect() };
    io::write(&d.path().join("model.safetensors"), &[("a.weight".into(), t(&[2, 3])), ("h".into(), h)], None).unwrap();
    let c = Checkpoint::open(d.path()).unwrap();
    assert_eq!(c.names(), vec!["a.weight", "h"]);
    assert_eq!(c.f32("a.weight").unwrap().1, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    assert_eq!(c.f32("h").unwrap().1, vec![half::f16::from_f32(0.1).to_f32(), -3.0]);
    assert_eq!(c.param_count().unwrap(), 8);
}

#[test]
fn sharded_checkpoints_follow_the_index() {
    let d = tempfile::tempdir().unwrap();
    io::write(&d.path().join("m-00001-of-00002.safetensors"), &[("a".into(), t(&[2]))], None).unwrap();
    io::write(&d.path().join("m-00002-of-00002.safetensors"), &[("b".into(), t(&[3]))], None).unwrap();
    std::fs::write(
        d.path().join("m.safetensors.index.json"),
        r#"{"metadata": {}, "weight_map": {"a": "m-00001-of-00002.safetensors", "b": "m-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let c = Checkpoint::open(d.path()).unwrap();
    assert_eq!(c.f32("b").unwrap().0, vec![3]);
    std::fs::write(d.path().join("m.safetensors.index.json"), r#"{"weight_map": {"a": "gone.safetensors"}}"#).unwrap();
    let e = Checkpoint::open(d.path()).err().unwrap().to_string();
    assert!(e.contains("gone.safetensors"), "{e}");
}

#[test]
fn errors_name_tensor_shapes_and_dtype() {
    let d = tempfile::tempdir().unwrap();
    io::write(
        &d.path().join("model.safetensors"),
        &[("blocks.0.attn.to_q.weight".into(), t(&[4, 4])), ("ids".into(), HostTensor::from_i64(&[2], &[1, 2]))],
        None,
    )
    .unwrap();
    let c = Checkpoint::open(d.path()).unwrap();
    let e = c.expect("blocks.0.attn.to_k.weight", &[4, 4]).unwrap_err().to_string();
    assert!(e.contains("`blocks.0.attn.to_k.weight` is missing"), "{e}");
    let e = c.expect("blocks.0.attn.to_q.weight", &[4, 8]).unwrap_err().to_string();
    assert!(e.contains("[4, 4]") && e.contains("expected [4, 8]"), "{e}");
    let e = c.expect("ids", &[2]).unwrap_err().to_string();
    assert!(e.contains("`ids`") && e.contains("unsupported dtype"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = Checkpoint::open(empty.path()).err().unwrap().to_string();
    assert!(e.contains("*.safetensors"), "{e}");
}

#[test]
fn overlays_replace_values_in_memory() {
    let d = tempfile::tempdir().unwrap();
    let h = HostTensor { dtype: ElemType::BF16, shape: vec![2], data: [half::bf16::from_f32(1.0), half::bf16::from_f32(2.0)].iter().flat_map(|x| x.to_le_bytes()).collect() };
    io::write(&d.path().join("model.safetensors"), &[("a.weight".into(), t(&[2, 3])), ("h".into(), h)], None).unwrap();
    let mut c = Checkpoint::open(d.path()).unwrap();
    c.set_overlay("h", &[2], vec![1.25, -7.5]).unwrap();
    assert!(c.is_overlaid("h") && !c.is_overlaid("a.weight"));
    assert_eq!(c.f32("h").unwrap().1, vec![1.25, -7.5]);
    assert_eq!(c.info("h").unwrap(), TensorInfo { dtype: ElemType::F32, shape: vec![2] });
    assert_eq!(WeightStore::weight(&c, "h").unwrap().to_f64_vec(), vec![1.25, -7.5]);
    let e = c.set_overlay("a.weight", &[3, 2], vec![0.0; 6]).unwrap_err().to_string();
    assert!(e.contains("tensor `a.weight` has shape [3, 2], expected [2, 3]"), "{e}");
    assert!(c.set_overlay("missing", &[1], vec![0.0]).unwrap_err().to_string().contains("tensor `missing` is missing"));
    assert_eq!(c.f32("a.weight").unwrap().1, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
}
