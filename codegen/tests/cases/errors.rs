//! What the cpu target cannot compile gives errors naming the op, never a
//! panic or a crash inside MLIR.

use super::elementwise::shape;
use super::support::stage;
use omnic_codegen::cpu::aot;
use omnic_codegen::{schedule_stage, target, AotOptions, CodegenError, KernelCache};
use omnic_ir::{Builder, DType, UnaryOp};

#[test]
fn ukernel_dtype_is_named() {
    let mut b = Builder::new();
    b.set_scope(Some("blocks.0.attn.to_q"));
    let x = b.input("x", DType::F16, shape(&[4, 8])).unwrap();
    let w = b.param("w", DType::F16, shape(&[2, 8])).unwrap();
    let e = b.unary(UnaryOp::Exp, x).unwrap();
    let y = b.linear(e, w, None).unwrap();
    b.output("y", y);
    let err = schedule_stage(&stage("half_linear", b.finish().unwrap()), &mut KernelCache::new()).unwrap_err();
    assert!(matches!(&err, CodegenError::Unsupported { op, .. } if op == "linear"), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("unsupported op `linear`") && msg.contains("(blocks.0.attn.to_q)") && msg.contains("f32 only"), "{msg}");
}

#[test]
fn other_bad_requests() {
    let msg = target("tpu").err().unwrap().to_string();
    assert!(msg.contains("unknown target `tpu`") && msg.contains("cpu"), "{msg}");

    let mut b = Builder::new();
    b.input("x", DType::F32, shape(&[4])).unwrap();
    let msg = schedule_stage(&stage("empty", b.graph), &mut KernelCache::new()).unwrap_err().to_string();
    assert!(msg.contains("no outputs"), "{msg}");

    let opts = AotOptions { cpu: Some("znver4".into()), ..AotOptions::default() };
    let msg = aot::compile(&[], &opts).unwrap_err().to_string();
    assert!(msg.contains("znver4") && msg.contains("features"), "{msg}");
}

/// A ukernel op handed to the kernel lowering directly is refused by name.
#[test]
fn ukernel_op_in_a_kernel_is_named() {
    let mut b = Builder::new();
    b.set_scope(Some("proj"));
    let x = b.input("x", DType::F32, shape(&[4, 8])).unwrap();
    let w = b.input("w", DType::F32, shape(&[8, 2])).unwrap();
    let y = b.matmul(x, w).unwrap();
    b.output("y", y);
    let g = b.finish().unwrap();
    let names = omnic_ir::verify::value_names(&g).unwrap();
    let plan = omnic_codegen::cpu::lower::KernelPlan { members: vec![y.node], args: vec![x, w], results: vec![y] };
    let err = omnic_codegen::cpu::lower::lower_kernel(&g, &plan, &names).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(&err, CodegenError::Unsupported { op, .. } if op == "matmul"), "{err:?}");
    assert!(msg.contains("%2 (proj)") && msg.contains("ukernels"), "{msg}");
}
