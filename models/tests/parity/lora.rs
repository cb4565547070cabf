//! LoRA on the `lora` fixture (FluxTransformer2DModel + a PEFT adapter made
//! by peft; references `output.sample_lora` / `output.sample_base` from
//! PyTorch), on the reference evaluator: merged into the weights, and as
//! run-time slots bound by the runtime's adapter reader.

use super::common::fixture;
use omnic_frontend::lora::merge;
use omnic_ir::eval::{evaluate, Precision, Tensor};
use omnic_models::lora::{program_slots, SlotOptions, SlotTargets};
use omnic_models::parity::{read_io, select_inputs};
use omnic_models::{import, import_with, ImportOptions, Imported};
use omnic_runtime::lora::{Adapter, LoraModule};

fn run(imp: &Imported, extra: &[(String, omnic_runtime::HostTensor)]) -> Tensor {
    let g = &imp.program.stages[0].graph;
    let mut io = read_io(&fixture("lora").join("io.safetensors")).unwrap();
    for (n, t) in extra {
        io.insert(n.clone(), omnic_frontend::convert::to_ir(t));
    }
    let inputs = select_inputs(g, &io).unwrap();
    let out = evaluate(g, &inputs, &imp.checkpoint, Precision::F32).unwrap();
    out["sample"].clone()
}

fn reference(name: &str) -> Tensor {
    read_io(&fixture("lora").join("io.safetensors")).unwrap()[name].clone()
}

fn max_abs(a: &Tensor, r: &str) -> f64 {
    a.max_abs_diff(&reference(r)).unwrap()
}

fn peft() -> Adapter {
    Adapter::load(&fixture("lora").join("adapter")).unwrap()
}

#[test]
fn merged_adapter_matches_peft() {
    let mut imp = import(&fixture("lora").join("base")).unwrap();
    let base = run(&imp, &[]);
    let e = max_abs(&base, "output.sample_base");
    assert!(e < 1e-4, "base: {e}");
    let a = peft();
    let rep = merge(&mut imp.checkpoint, &[(&a, 1.0)]).unwrap();
    assert_eq!((rep.weights, rep.updates), (14, 14));
    let merged = run(&imp, &[]);
    let e = max_abs(&merged, "output.sample_lora");
    eprintln!("merged vs sample_lora: max abs {e:.3e}; base vs sample_base ok");
    assert!(e < 1e-4, "merged: {e}");
    assert!(max_abs(&merged, "output.sample_base") > 0.1, "the adapter changed nothing");
}

#[test]
fn adapters_add_up_when_merged() {
    // Two halves of the adapter are the adapter.
    let mut imp = import(&fixture("lora").join("base")).unwrap();
    let a = peft();
    merge(&mut imp.checkpoint, &[(&a, 0.5), (&a, 0.5)]).unwrap();
    let e = max_abs(&run(&imp, &[]), "output.sample_lora");
    assert!(e < 1e-4, "{e}");
}

#[test]
fn merge_errors_name_the_module() {
    let mut imp = import(&fixture("lora").join("base")).unwrap();
    let mut a = peft();
    let m: LoraModule = a.modules["transformer_blocks.0.attn.to_q"].clone();
    a.modules.insert("transformer_blocks.7.attn.to_q".into(), m.clone());
    let e = merge(&mut imp.checkpoint, &[(&a, 1.0)]).unwrap_err().to_string();
    assert!(e.contains("target module `transformer_blocks.7.attn.to_q` is not in the model"), "{e}");
    let mut a = peft();
    a.modules.insert("transformer_blocks.0.attn.to_add_out".into(), LoraModule { in_features: 5, a: vec![0.0; 4 * 5], ..m });
    let e = merge(&mut imp.checkpoint, &[(&a, 1.0)]).unwrap_err().to_string();
    assert!(
        e.contains("module `transformer_blocks.0.attn.to_add_out`: the update lora_B·lora_A is [32, 5]") && e.contains("the model's weight is [32, 32]"),
        "{e}"
    );
    // Nothing was merged by the failed calls.
    assert!(max_abs(&run(&imp, &[]), "output.sample_base") < 1e-4);
}

fn slotted(slots: usize, rank: usize, targets: SlotTargets) -> Imported {
    let opts = ImportOptions { lora: Some(SlotOptions { slots, rank, targets }), ..Default::default() };
    import_with(&fixture("lora").join("base"), &opts).unwrap()
}

#[test]
fn slots_reproduce_lora_and_base() {
    let imp = slotted(2, 8, SlotTargets::All);
    let slots = program_slots(&imp.program).unwrap().unwrap();
    assert_eq!((slots.slots, slots.rank), (2, 8));
    let a = peft();
    let with = run(&imp, &slots.bind(&[(&a, 1.0)]).unwrap());
    let without = run(&imp, &slots.bind(&[]).unwrap());
    let halves = run(&imp, &slots.bind(&[(&a, 0.5), (&a, 0.5)]).unwrap());
    let (e1, e0, e2) = (max_abs(&with, "output.sample_lora"), max_abs(&without, "output.sample_base"), max_abs(&halves, "output.sample_lora"));
    eprintln!("slots: lora {e1:.3e}, base {e0:.3e}, two half adapters {e2:.3e}");
    assert!(e1 < 1e-4 && e0 < 1e-4 && e2 < 1e-4, "{e1} {e0} {e2}");
}

#[test]
fn slot_targets_restrict_and_rank_is_checked() {
    let imp = slotted(1, 2, SlotTargets::Names(vec!["to_q".into(), "to_k".into()]));
    let slots = program_slots(&imp.program).unwrap().unwrap();
    assert!(slots.modules.keys().all(|m| m.ends_with(".to_q") || m.ends_with(".to_k")));
    assert_eq!(slots.modules.len(), 8);
    let e = slots.bind(&[(&peft(), 1.0)]).unwrap_err().to_string();
    assert!(e.contains("is not in the model") || e.contains("above the program's slot rank 2"), "{e}");
    let imp = slotted(1, 2, SlotTargets::All);
    let e = program_slots(&imp.program).unwrap().unwrap().bind(&[(&peft(), 1.0)]).unwrap_err().to_string();
    assert!(e.contains("has rank 4, above the program's slot rank 2"), "{e}");
}

#[test]
fn diffusers_layout_equals_peft() {
    let d = Adapter::load(&fixture("lora").join("adapter_diffusers")).unwrap();
    let p = peft();
    assert_eq!(d.modules.len(), p.modules.len());
    for (name, m) in &p.modules {
        let n = &d.modules[name];
        assert_eq!((n.rank, n.in_features, n.out_features, &n.a, &n.b, n.scaling), (m.rank, m.in_features, m.out_features, &m.a, &m.b, m.scaling), "{name}");
    }
    let mut imp = import(&fixture("lora").join("base")).unwrap();
    merge(&mut imp.checkpoint, &[(&d, 1.0)]).unwrap();
    let e = max_abs(&run(&imp, &[]), "output.sample_lora");
    assert!(e < 1e-4, "{e}");
}
