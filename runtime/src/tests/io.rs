use super::*;

#[test]
fn write_then_read_round_trips_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.safetensors");
    let a = HostTensor::from_f32(&[2, 3], &[1.0, -2.5, 3.25, 0.0, 1e-8, 7.0]);
    let b = HostTensor::from_i64(&[3], &[-1, 0, 1 << 40]);
    let c = HostTensor::from_bool(&[2], &[true, false]);
    let h = HostTensor { dtype: ElemType::BF16, shape: vec![2], data: [half::bf16::from_f32(1.5), half::bf16::from_f32(-0.25)].iter().flat_map(|x| x.to_le_bytes()).collect() };
    let ts = vec![("a".to_string(), a.clone()), ("b".into(), b.clone()), ("c".into(), c.clone()), ("h".into(), h.clone())];
    write(&p, &ts, None).unwrap();
    let back: HashMap<String, HostTensor> = read_all(&p).unwrap().into_iter().collect();
    assert_eq!(back["a"], a);
    assert_eq!(back["b"], b);
    assert_eq!(back["c"], c);
    assert_eq!(back["h"].to_f32_vec(), vec![1.5, -0.25]);
}

#[test]
fn bad_files_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.safetensors");
    std::fs::write(&p, b"not a safetensors file at all").unwrap();
    let e = MappedFile::open(&p).err().unwrap().to_string();
    assert!(e.contains("junk.safetensors") && e.contains("not a valid safetensors"), "{e}");
    let missing = dir.path().join("missing.safetensors");
    let e = MappedFile::open(&missing).err().unwrap().to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.safetensors");
    write(&p, &[("x".into(), HostTensor::from_f32(&[1], &[1.0]))], None).unwrap();
    let e = MappedFile::open(&p).unwrap().tensor("y").unwrap_err().to_string();
    assert!(e.contains("`y`") && e.contains("t.safetensors"), "{e}");
}
