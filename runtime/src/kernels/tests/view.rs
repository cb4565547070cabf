use super::*;

#[test]
fn typed_access_checks_dtype_length_and_alignment() {
    let v = [1.0f32, 2.0, 3.0];
    let t = TensorRef::from_f32(&[3], &v);
    assert_eq!(t.f32s("op", "x").unwrap(), &v);
    let bad = TensorRef::from_f32(&[2, 2], &v);
    assert!(bad.f32s("op", "x").unwrap_err().to_string().contains("bytes for shape"));
    let bytes = [0u8; 20];
    let off = (4 - (bytes.as_ptr() as usize) % 4) % 4 + 1; // misaligned by one byte
    let mis = TensorRef::new(ElemType::F32, &[3], &bytes[off..off + 12]);
    assert!(mis.f32s("op", "x").unwrap_err().to_string().contains("aligned"));
    let i = TensorRef::new(ElemType::I32, &[3], as_bytes(&v));
    let e = i.f32s("matmul", "a").unwrap_err().to_string();
    assert!(e.contains("matmul") && e.contains("i32"), "{e}");
    let mut w = [0i64; 2];
    let mut m = TensorMut::from_i64(&[2], &mut w);
    m.i64s_mut("topk", "indices").unwrap()[1] = 7;
    assert_eq!(w, [0, 7]);
}
