use super::*;

#[test]
fn round_trips_each_dtype() {
    let f = Tensor::from_f32(&[2], &[1.5, -2.0]);
    assert_eq!(to_ir(&to_host(&f)), f);
    let i = Tensor::from_i64(DType::I32, &[3], vec![-1, 0, 7]);
    assert_eq!(to_ir(&to_host(&i)), i);
    let b = Tensor::from_bool(&[2], vec![true, false]);
    assert_eq!(to_ir(&to_host(&b)), b);
    let h = Tensor::from_f64(DType::BF16, &[2], vec![0.1, 3.0]);
    assert_eq!(to_ir(&to_host(&h)), h);
}
