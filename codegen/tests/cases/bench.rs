//! Rough single-thread timings of generated kernels (`--ignored`; numbers
//! only printed): an elementwise epilogue, layer norm with a modulation
//! epilogue, softmax and a transpose at DiT-like sizes.

use super::elementwise::{f32t, shape};
use super::support::{compile, stage};
use omnic_ir::{Builder, DType, UnaryOp};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

fn time(name: &str, g: omnic_ir::Graph, inputs: &[(&str, &[usize])], bytes: f64) {
    let mut rng = StdRng::seed_from_u64(1);
    let st = stage(name, g);
    let c = compile(&st).unwrap();
    let ins: HashMap<String, omnic_ir::eval::Tensor> = inputs.iter().map(|(n, s)| (n.to_string(), f32t(&mut rng, s, -2.0, 2.0))).collect();
    c.run(&ins, &HashMap::new());
    let reps = 5;
    let mut s = f64::INFINITY;
    for _ in 0..reps {
        c.run(&ins, &HashMap::new());
        s = s.min(c.step_secs.get());
    }
    eprintln!("{name:<28} {:>8.2} ms per call (best of {reps}), {:>6.2} GB/s of tensor traffic", s * 1e3, bytes / s / 1e9);
}

#[test]
#[ignore]
fn kernel_timings() {
    let (m, n) = (4096usize, 3072usize);
    let mb = (m * n * 4) as f64;
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&[m, n])).unwrap();
    let bias = b.input("b", DType::F32, shape(&[n])).unwrap();
    let y = b.add(x, bias).unwrap();
    let y = b.unary(UnaryOp::GeluTanh, y).unwrap();
    b.output("y", y);
    time("bias+gelu_tanh", b.finish().unwrap(), &[("x", &[m, n]), ("b", &[n])], 2.0 * mb);

    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&[m, n])).unwrap();
    let bias = b.input("b", DType::F32, shape(&[n])).unwrap();
    let y = b.mul(x, bias).unwrap();
    let y = b.add(y, x).unwrap();
    b.output("y", y);
    time("x*b+x", b.finish().unwrap(), &[("x", &[m, n]), ("b", &[n])], 2.0 * mb);

    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&[m, n])).unwrap();
    let sc = b.input("scale", DType::F32, shape(&[1, n])).unwrap();
    let y = b.layer_norm(x, None, None, 1e-6).unwrap();
    let one = b.add_scalar(sc, 1.0).unwrap();
    let y = b.mul(y, one).unwrap();
    b.output("y", y);
    time("layer_norm+modulate", b.finish().unwrap(), &[("x", &[m, n]), ("scale", &[1, n])], 2.0 * mb);

    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&[m, n])).unwrap();
    let y = b.softmax(x, -1).unwrap();
    b.output("y", y);
    time("softmax", b.finish().unwrap(), &[("x", &[m, n])], 2.0 * mb);

    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&[16, 1024, 768])).unwrap();
    let y = b.transpose(x, &[1, 0, 2]).unwrap();
    b.output("y", y);
    time("transpose [16,1024,768]", b.finish().unwrap(), &[("x", &[16, 1024, 768])], 2.0 * (16 * 1024 * 768 * 4) as f64);
}
