//! Stages the cpu target cannot compile yet give errors naming the op, never
//! a panic or a crash inside MLIR.

use super::support::stage;
use omnic_codegen::{cpu, target, CodegenError};
use omnic_ir::{Builder, DType, Dim, Shape, UnaryOp};

fn shape(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| d.into()).collect()
}

#[test]
fn unsupported_op_is_named() {
    let mut b = Builder::new();
    b.set_scope(Some("blocks.0.attn"));
    let x = b.input("x", DType::F32, shape(&[4, 8])).unwrap();
    let w = b.input("w", DType::F32, shape(&[8, 2])).unwrap();
    let e = b.unary(UnaryOp::Exp, x).unwrap();
    let y = b.matmul(e, w).unwrap();
    b.output("y", y);
    let st = stage("mm", b.finish().unwrap());
    for err in [cpu::jit(&st).err().unwrap(), target("cpu").unwrap().lower(&st).unwrap_err()] {
        assert!(matches!(&err, CodegenError::Unsupported { op, .. } if op == "matmul"), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("unsupported op `matmul`"), "{msg}");
        assert!(msg.contains("%3 (blocks.0.attn)"), "{msg}");
    }
}

#[test]
fn unsupported_dtype_and_symbolic_shape_are_named() {
    let mut b = Builder::new();
    let x = b.input("x", DType::F16, shape(&[4])).unwrap();
    let y = b.unary(UnaryOp::Exp, x).unwrap();
    b.output("y", y);
    let msg = cpu::jit(&stage("half", b.finish().unwrap())).err().unwrap().to_string();
    assert!(msg.contains("`input`") && msg.contains("f16[4]") && msg.contains("only f32"), "{msg}");

    let mut b = Builder::new();
    let x = b.input("x", DType::F32, Shape::from(vec![Dim::sym("batch"), 8.into()])).unwrap();
    let y = b.unary(UnaryOp::Tanh, x).unwrap();
    b.output("y", y);
    let msg = cpu::jit(&stage("sym", b.finish().unwrap())).err().unwrap().to_string();
    assert!(msg.contains("batch") && msg.contains("only static shapes"), "{msg}");
}

#[test]
fn other_bad_requests() {
    let msg = target("tpu").err().unwrap().to_string();
    assert!(msg.contains("unknown target `tpu`") && msg.contains("cpu"), "{msg}");

    let mut b = Builder::new();
    b.input("x", DType::F32, shape(&[4])).unwrap();
    let msg = cpu::jit(&stage("empty", b.graph)).err().unwrap().to_string();
    assert!(msg.contains("no outputs"), "{msg}");
}
