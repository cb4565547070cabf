//! Layer, RMS and group normalisation (with and without affine parameters,
//! static and symbolic sizes), against the reference evaluator.

use super::elementwise::{f32t, shape};
use super::support::{check, stage, TOL};
use omnic_ir::eval::Tensor;
use omnic_ir::{Builder, DType, Dim};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

#[test]
fn layer_and_rms_norm() {
    let mut rng = StdRng::seed_from_u64(21);
    let d = 24;
    for (weight, bias, rms) in
        [(false, false, false), (true, false, false), (true, true, false), (false, true, false), (false, false, true), (true, false, true)]
    {
        let mut b = Builder::new();
        let x = b.input("x", DType::F32, vec![Dim::sym("batch"), Dim::sym("seq"), d.into()]).unwrap();
        let w = if weight { Some(b.param("w", DType::F32, shape(&[d])).unwrap()) } else { None };
        let bb = if bias { Some(b.param("b", DType::F32, shape(&[d])).unwrap()) } else { None };
        let y = if rms { b.rms_norm(x, w, 1e-6).unwrap() } else { b.layer_norm(x, w, bb, 1e-5).unwrap() };
        // adaLN-style epilogue: y · (1 + scale) + shift
        let scale = b.input("scale", DType::F32, vec![Dim::sym("batch"), 1.into(), d.into()]).unwrap();
        let one = b.add_scalar(scale, 1.0).unwrap();
        let z = b.mul(y, one).unwrap();
        b.output("y", y);
        b.output("z", z);
        let st = stage(&format!("norm_{weight}_{bias}_{rms}"), b.finish().unwrap());
        for (nb, ns) in [(2, 5), (1, 1)] {
            let inputs =
                HashMap::from([("x".to_string(), f32t(&mut rng, &[nb, ns, d], -3.0, 3.0)), ("scale".to_string(), f32t(&mut rng, &[nb, 1, d], -0.5, 0.5))]);
            let mut weights = HashMap::new();
            if weight {
                weights.insert("w".to_string(), f32t(&mut rng, &[d], 0.5, 1.5));
            }
            if bias {
                weights.insert("b".to_string(), f32t(&mut rng, &[d], -0.5, 0.5));
            }
            check(&st, &inputs, &weights, TOL);
        }
    }
}

#[test]
fn group_norm_2d_3d_symbolic() {
    let mut rng = StdRng::seed_from_u64(22);
    for (dims, groups, affine) in
        [(vec![2usize, 8, 3, 5], 4usize, true), (vec![1, 6, 4, 4], 3, false), (vec![1, 4, 2, 3, 3], 2, true), (vec![2, 4, 7], 1, true)]
    {
        let rank = dims.len();
        let c = dims[1];
        let mut b = Builder::new();
        // Symbolic batch and spatial sizes, static channels.
        let sym: Vec<Dim> = (0..rank).map(|i| if i == 1 { Dim::Const(c as i64) } else { Dim::sym(&format!("s{i}")) }).collect();
        let x = b.input("x", DType::F32, sym).unwrap();
        let wb = if affine { Some((b.param("w", DType::F32, shape(&[c])).unwrap(), b.param("b", DType::F32, shape(&[c])).unwrap())) } else { None };
        let y = b.group_norm(x, wb, groups, 1e-6).unwrap();
        let y = b.unary(omnic_ir::UnaryOp::Silu, y).unwrap();
        b.output("y", y);
        let st = stage(&format!("group_norm_{rank}_{groups}_{affine}"), b.finish().unwrap());
        let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &dims, -2.0, 3.0))]);
        let mut weights = HashMap::new();
        if affine {
            weights.insert("w".to_string(), f32t(&mut rng, &[c], 0.5, 1.5));
            weights.insert("b".to_string(), f32t(&mut rng, &[c], -0.5, 0.5));
        }
        check(&st, &inputs, &weights, TOL);
    }
}

#[test]
fn half_layer_norm() {
    let mut b = Builder::new();
    let x = b.input("x", DType::BF16, shape(&[3, 16])).unwrap();
    let w = b.param("w", DType::BF16, shape(&[16])).unwrap();
    let y = b.layer_norm(x, Some(w), None, 1e-6).unwrap();
    b.output("y", y);
    let xs: Vec<f64> = (0..48).map(|i| ((i * 5) % 13) as f64 * 0.25 - 1.0).collect();
    let ws: Vec<f64> = (0..16).map(|i| 0.5 + i as f64 * 0.05).collect();
    let inputs = HashMap::from([("x".to_string(), Tensor::from_f64(DType::BF16, &[3, 16], xs))]);
    let weights = HashMap::from([("w".to_string(), Tensor::from_f64(DType::BF16, &[16], ws))]);
    check(&stage("ln_bf16", b.finish().unwrap()), &inputs, &weights, TOL);
}
