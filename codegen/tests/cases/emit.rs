//! Kernel text at every level, dump directories and target descriptions.

use super::elementwise::shape;
use super::support::{stage, TempDir};
use omnic_codegen::cpu::aot;
use omnic_codegen::{schedule_stage, target, AotOptions, Emit, KernelCache, TARGETS};
use omnic_ir::{Builder, DType, Program, UnaryOp};

fn sample() -> omnic_ir::Stage {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![omnic_ir::Dim::sym("n"), 8.into()]).unwrap();
    let y = b.unary(UnaryOp::Erf, x).unwrap();
    let y = b.add_scalar(y, 1.0).unwrap();
    let s = b.softmax(y, -1).unwrap();
    b.output("y", s);
    stage("text.encoder/block-0", b.finish().unwrap())
}

#[test]
fn registry_has_cpu() {
    assert_eq!(TARGETS, &["cpu"]);
    assert_eq!(target("cpu").unwrap().name(), "cpu");
}

#[test]
fn emits_every_level() {
    let mut cache = KernelCache::new();
    schedule_stage(&sample(), &mut cache).unwrap();
    let opts = AotOptions::default();
    for k in &cache.kernels {
        let name = &k.symbol;
        assert!(name.starts_with("omnic_k"), "{name}");
        let mlir = aot::emit(k, Emit::Mlir, &opts).unwrap();
        assert!(mlir.contains(&format!("func.func @{name}(")) && mlir.contains("llvm.emit_c_interface") && mlir.contains("linalg.generic"), "{mlir}");
        assert!(mlir.contains("memref<?x8xf32>") && mlir.contains("materialize_in_destination"), "{mlir}");
        let dialect = aot::emit(k, Emit::LlvmDialect, &opts).unwrap();
        assert!(dialect.contains(&format!("llvm.func @_mlir_ciface_{name}(")) && !dialect.contains("linalg."), "{dialect}");
        let ir = aot::emit(k, Emit::Llvm, &opts).unwrap();
        assert!(ir.contains(&format!("define void @_mlir_ciface_{name}(")), "{ir}");
        let asm = aot::emit(k, Emit::Asm, &opts).unwrap();
        assert!(asm.contains(&format!("_mlir_ciface_{name}:")), "{asm}");
    }
    assert!(cache.kernels.iter().any(|k| k.mlir.contains("math.erf")));
    for e in Emit::ALL {
        assert_eq!(Emit::from_name(e.name()), Some(e));
    }
}

#[test]
fn dump_dir_and_target_info() {
    let p = Program::single("s", sample().graph);
    let opts = AotOptions::default();
    let compiled = target("cpu").unwrap().compile(&p, &opts).unwrap();
    let t = &compiled.object.target;
    eprintln!("host target: {} {} features {:?}", t.triple, t.cpu, t.features);
    assert!(t.triple.contains("x86_64") || t.triple.contains("aarch64"), "{t:?}");
    assert!(!t.cpu.is_empty() && !t.features.is_empty());
    omnic_runtime::artifact::host::check_host(&t.triple, &t.features).expect("the host runs its own code");
    assert!(compiled.object.bytes.starts_with(b"\x7fELF"));
    assert_eq!(compiled.object.symbols.len(), compiled.schedule.kernels.len());

    let dir = TempDir::new("dump");
    let files = aot::dump(&dir.0, &compiled.schedule.kernels, &opts).unwrap();
    assert_eq!(files.len(), 4 * compiled.schedule.kernels.len() + 1);
    let index = std::fs::read_to_string(dir.0.join("kernels.txt")).unwrap();
    assert!(index.contains("stage `s`") && index.contains("softmax"), "{index}");
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() > 0, "{}", f.display());
    }

    if cfg!(target_arch = "x86_64") {
        let v3 = AotOptions { cpu: Some("x86-64-v3".into()), ..AotOptions::default() };
        let c = target("cpu").unwrap().compile(&p, &v3).unwrap();
        assert_eq!(c.object.target.cpu, "x86-64-v3");
        assert!(c.object.target.features.iter().any(|f| f == "avx2") && !c.object.target.features.iter().any(|f| f.starts_with("avx512")));
    }
}

#[test]
fn shape_of_tensor_types() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Bool, shape(&[3])).unwrap();
    let y = b.cast(x, DType::BF16).unwrap();
    b.output("y", y);
    let mut cache = KernelCache::new();
    schedule_stage(&stage("bool", b.finish().unwrap()), &mut cache).unwrap();
    let t = &cache.kernels[0].mlir;
    assert!(t.contains("memref<3xi8>") && t.contains("memref<3xbf16>"), "{t}");
}
