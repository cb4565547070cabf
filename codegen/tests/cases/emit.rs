//! The cpu target through the `Target` interface: MLIR, LLVM dialect and
//! LLVM IR text.

use super::support::stage;
use omnic_codegen::{target, Emit, TARGETS};
use omnic_ir::{Builder, DType, Shape, UnaryOp};

fn sample() -> omnic_ir::Stage {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, Shape::from(vec![4.into(), 8.into()])).unwrap();
    let y = b.unary(UnaryOp::Erf, x).unwrap();
    let y = b.add_scalar(y, 1.0).unwrap();
    b.output("y", y);
    stage("text.encoder/block-0", b.finish().unwrap())
}

#[test]
fn registry_has_cpu() {
    assert_eq!(TARGETS, &["cpu"]);
    assert_eq!(target("cpu").unwrap().name(), "cpu");
}

#[test]
fn emits_mlir_llvm_dialect_and_llvm_ir() {
    let lowered = target("cpu").unwrap().lower(&sample()).unwrap();
    // The stage name is made a C-friendly symbol that cannot clash with C
    // library functions the kernel calls (malloc, erff, ...).
    let name = &lowered.signature.name;
    assert_eq!(name, "omnic_text_encoder_block_0");

    let mlir = lowered.emit(Emit::Mlir);
    assert!(mlir.contains(&format!("func.func @{name}(")), "{mlir}");
    assert!(mlir.contains("linalg.generic"), "{mlir}");
    assert!(mlir.contains("math.erf"), "{mlir}");
    assert!(mlir.contains("llvm.emit_c_interface"), "{mlir}");

    let dialect = lowered.emit(Emit::LlvmDialect);
    assert!(dialect.contains(&format!("llvm.func @_mlir_ciface_{name}(")), "{dialect}");
    assert!(!dialect.contains("linalg."), "{dialect}");

    let ir = lowered.emit(Emit::Llvm);
    assert!(ir.contains(&format!(" @{name}(")), "{ir}");
    assert!(ir.contains(&format!("define void @_mlir_ciface_{name}(")), "{ir}");
    // math.erf has no LLVM intrinsic: it became a libm call.
    assert!(ir.contains("@erff("), "{ir}");

    for e in Emit::ALL {
        assert_eq!(Emit::from_name(e.name()), Some(e));
    }
}
