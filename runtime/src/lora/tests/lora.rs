//! Adapter reading, slot binding and the adapter cache.

use super::*;
use crate::io;
use crate::tensor::HostTensor;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lora/adapter")
}

/// A PEFT directory with `config` and the fixture's tensors.
fn peft_dir(config: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("adapter_config.json"), config).unwrap();
    std::fs::copy(fixture().join("adapter_model.safetensors"), d.path().join("adapter_model.safetensors")).unwrap();
    d
}

fn small_module(rank: usize, i: usize, o: usize) -> LoraModule {
    LoraModule {
        rank,
        in_features: i,
        out_features: o,
        a: (0..rank * i).map(|k| k as f32 + 1.0).collect(),
        b: (0..o * rank).map(|k| 0.5 * k as f32 - 1.0).collect(),
        scaling: 2.0,
    }
}

fn adapter(modules: &[(&str, LoraModule)]) -> Adapter {
    Adapter { source: "test".into(), format: AdapterFormat::Peft, modules: modules.iter().map(|(n, m)| (n.to_string(), m.clone())).collect() }
}

#[test]
fn reads_the_peft_fixture() {
    let a = Adapter::load(&fixture()).unwrap();
    assert_eq!(a.format, AdapterFormat::Peft);
    assert_eq!(a.modules.len(), 14);
    let m = &a.modules["transformer_blocks.0.attn.to_q"];
    assert_eq!((m.rank, m.scaling), (4, 2.0));
    assert_eq!(m.a.len(), 4 * m.in_features);
    assert!(a.modules.contains_key("transformer_blocks.1.attn.to_out.0"));
    // The weights file itself and the config file name the same adapter.
    assert_eq!(Adapter::load(&fixture().join("adapter_model.safetensors")).unwrap().modules, a.modules);
}

#[test]
fn rslora_and_patterns_change_the_scaling() {
    let base = std::fs::read_to_string(fixture().join("adapter_config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
    v["use_rslora"] = true.into();
    let d = peft_dir(&v.to_string());
    let a = Adapter::load(d.path()).unwrap();
    assert_eq!(a.modules["transformer_blocks.0.attn.to_q"].scaling, 4.0); // 8 / sqrt(4)
    v["use_rslora"] = false.into();
    v["alpha_pattern"] = serde_json::json!({"to_k": 2});
    let d = peft_dir(&v.to_string());
    let a = Adapter::load(d.path()).unwrap();
    assert_eq!(a.modules["transformer_blocks.0.attn.to_k"].scaling, 0.5);
    assert_eq!(a.modules["transformer_blocks.0.attn.to_q"].scaling, 2.0);
}

#[test]
fn malformed_configs_are_named() {
    let base: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("adapter_config.json")).unwrap()).unwrap();
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (serde_json::json!({"r": 0}), "`r` is 0, expected a positive integer"),
        (serde_json::json!({"r": "four"}), "`r` is \"four\""),
        (serde_json::json!({"lora_alpha": "x"}), "`lora_alpha` is \"x\""),
        (serde_json::json!({"target_modules": 3}), "`target_modules` is 3"),
        (serde_json::json!({"use_dora": true}), "`use_dora: true` is not supported"),
        (serde_json::json!({"peft_type": "LOHA"}), "`peft_type` is \"LOHA\""),
        (serde_json::json!({"r": 8}), "lora_A has rank 4 but the config says r = 8"),
        (serde_json::json!({"target_modules": ["to_q", "to_k", "to_v"]}), "`target_modules` does not name it"),
    ];
    for (patch, want) in cases {
        let mut v = base.clone();
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        let d = peft_dir(&v.to_string());
        let e = Adapter::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("adapter_config.json: malformed adapter config") && e.contains(want), "{patch}: {e}");
    }
    let d = peft_dir("{\"r\": 4,\n \"lora_alpha\": }");
    let e = Adapter::load(d.path()).unwrap_err().to_string();
    assert!(e.contains("malformed adapter config: invalid JSON at line 2"), "{e}");
}

#[test]
fn diffusers_layout_with_alpha_tensors() {
    let d = tempfile::tempdir().unwrap();
    let m = small_module(2, 3, 4);
    let f = d.path().join("pytorch_lora_weights.safetensors");
    let t = vec![
        ("transformer.blocks.0.to_q.lora_A.weight".to_string(), HostTensor::from_f32(&[2, 3], &m.a)),
        ("transformer.blocks.0.to_q.lora_B.weight".to_string(), HostTensor::from_f32(&[4, 2], &m.b)),
        ("transformer.blocks.0.to_q.alpha".to_string(), HostTensor::from_f32(&[], &[8.0])),
        ("transformer.blocks.0.to_k.lora_A.weight".to_string(), HostTensor::from_f32(&[2, 3], &m.a)),
        ("transformer.blocks.0.to_k.lora_B.weight".to_string(), HostTensor::from_f32(&[4, 2], &m.b)),
    ];
    io::write(&f, &t, None).unwrap();
    let a = Adapter::load(d.path()).unwrap();
    assert_eq!(a.format, AdapterFormat::Diffusers);
    assert_eq!(a.modules["blocks.0.to_q"].scaling, 4.0);
    assert_eq!(a.modules["blocks.0.to_k"].scaling, 1.0); // no alpha: alpha = r
                                                         // diffusers' header metadata gives the scaling when there is no alpha tensor.
    let meta = [("lora_adapter_metadata".to_string(), r#"{"transformer.r": 2, "transformer.lora_alpha": 6}"#.to_string())].into_iter().collect();
    io::write(&f, &t[3..], Some(meta)).unwrap();
    assert_eq!(Adapter::load(&f).unwrap().modules["blocks.0.to_k"].scaling, 3.0);
    // Layout errors name the key.
    io::write(&f, &t[..1], None).unwrap();
    assert!(Adapter::load(&f).unwrap_err().to_string().contains("module `blocks.0.to_q`: lora_A.weight without lora_B.weight"));
    io::write(&f, &[("lora_unet_blocks_0.lora_down.weight".to_string(), HostTensor::from_f32(&[1], &[0.0]))], None).unwrap();
    assert!(Adapter::load(&f).unwrap_err().to_string().contains("original kohya-ss layout"));
    io::write(&f, &[("text_encoder.x.lora_A.weight".to_string(), HostTensor::from_f32(&[1, 1], &[0.0]))], None).unwrap();
    assert!(Adapter::load(&f).unwrap_err().to_string().contains("targets another pipeline component"));
    let e = Adapter::load(&d.path().join("missing")).unwrap_err().to_string();
    assert!(e.contains("not a LoRA adapter"), "{e}");
}

#[test]
fn spec_parsing() {
    assert_eq!(AdapterSpec::parse("a/b").unwrap(), AdapterSpec { path: "a/b".into(), scale: 1.0 });
    assert_eq!(AdapterSpec::parse("a/b:0.5").unwrap(), AdapterSpec { path: "a/b".into(), scale: 0.5 });
    assert_eq!(AdapterSpec::parse("a:b").unwrap().path, PathBuf::from("a:b"));
    assert!(AdapterSpec::parse(":2").is_err());
    assert!(AdapterSpec::parse("x:inf").unwrap_err().to_string().contains("not a finite number"));
}

fn slots() -> LoraSlots {
    let mut modules = std::collections::BTreeMap::new();
    modules.insert("blocks.0.to_q".to_string(), SlotModule { in_features: 3, out_features: 4 });
    modules.insert("blocks.0.to_k".to_string(), SlotModule { in_features: 3, out_features: 4 });
    LoraSlots { slots: 2, rank: 3, modules }
}

#[test]
fn binding_pads_ranks_and_scales_b() {
    let s = slots();
    let m = small_module(2, 3, 4);
    let a = adapter(&[("blocks.0.to_q", m.clone())]);
    let t: std::collections::HashMap<String, HostTensor> = s.bind(&[(&a, 0.5), (&a, 1.0)]).unwrap().into_iter().collect();
    let at = t["lora.blocks.0.to_q.A"].to_f32_vec();
    let bt = t["lora.blocks.0.to_q.B"].to_f32_vec();
    assert_eq!(t["lora.blocks.0.to_q.A"].shape, vec![6, 3]);
    assert_eq!(t["lora.blocks.0.to_q.B"].shape, vec![4, 6]);
    // (x·Aᵀ)·Bᵀ over both slots equals Σ scale·scaling·B·A.
    let want: Vec<f64> = m.delta(0.5).iter().zip(m.delta(1.0)).map(|(x, y)| x + y).collect();
    for o in 0..4 {
        for i in 0..3 {
            let got: f64 = (0..6).map(|k| bt[o * 6 + k] as f64 * at[k * 3 + i] as f64).sum();
            assert!((got - want[o * 3 + i]).abs() < 1e-4, "{got} vs {}", want[o * 3 + i]);
        }
    }
    // Rows of the unused rank are zero; untouched modules are all zero.
    assert!(at[2 * 3..3 * 3].iter().all(|&x| x == 0.0));
    assert!(t["lora.blocks.0.to_k.A"].to_f32_vec().iter().all(|&x| x == 0.0));
    assert!(s.bind(&[]).unwrap().iter().all(|(_, t)| t.to_f32_vec().iter().all(|&x| x == 0.0)));
}

#[test]
fn binding_errors_name_module_and_shapes() {
    let s = slots();
    let e = s.bind(&[(&adapter(&[("blocks.0.to_v", small_module(2, 3, 4))]), 1.0)]).unwrap_err().to_string();
    assert!(e.contains("target module `blocks.0.to_v` is not in the model") && e.contains("blocks.0.to_k, blocks.0.to_q"), "{e}");
    let e = s.bind(&[(&adapter(&[("blocks.0.to_q", small_module(4, 3, 4))]), 1.0)]).unwrap_err().to_string();
    assert!(e.contains("module `blocks.0.to_q` has rank 4, above the program's slot rank 3"), "{e}");
    let e = s.bind(&[(&adapter(&[("blocks.0.to_q", small_module(2, 5, 4))]), 1.0)]).unwrap_err().to_string();
    assert!(e.contains("module `blocks.0.to_q`: the update lora_B·lora_A is [4, 5]") && e.contains("the model's weight is [4, 3]"), "{e}");
    let a = adapter(&[]);
    assert!(s.bind(&[(&a, 1.0), (&a, 1.0), (&a, 1.0)]).unwrap_err().to_string().contains("3 adapters given but the program has 2 LoRA slot(s)"));
}

#[test]
fn slots_from_program_inputs() {
    let meta = [(slots::META_SLOTS.to_string(), "2".to_string()), (slots::META_RANK.to_string(), "3".to_string())].into_iter().collect();
    let inputs = vec![("x", Some(vec![1, 3])), ("lora.m.A", Some(vec![6, 3])), ("lora.m.B", Some(vec![4, 6]))];
    let s = LoraSlots::from_program(&meta, inputs.clone()).unwrap().unwrap().with_outputs(inputs).unwrap();
    assert_eq!(s.modules["m"], SlotModule { in_features: 3, out_features: 4 });
    assert!(LoraSlots::from_program(&Default::default(), vec![]).unwrap().is_none());
    assert!(LoraSlots::from_program(&meta, vec![("lora.m.A", Some(vec![5, 3]))]).unwrap_err().contains("expected [6, in]"));
}

#[test]
fn cache_evicts_least_recently_used() {
    let d = tempfile::tempdir().unwrap();
    let mk = |n: &str| {
        let p = d.path().join(format!("{n}.safetensors"));
        let m = small_module(1, 2, 2);
        io::write(
            &p,
            &[
                ("transformer.m.lora_A.weight".to_string(), HostTensor::from_f32(&[1, 2], &m.a)),
                ("transformer.m.lora_B.weight".to_string(), HostTensor::from_f32(&[2, 1], &m.b)),
            ],
            None,
        )
        .unwrap();
        p
    };
    let (a, b, c) = (mk("a"), mk("b"), mk("c"));
    let mut cache = AdapterCache::new(2);
    cache.get(&a).unwrap();
    cache.get(&b).unwrap();
    cache.get(&a).unwrap(); // a is now the most recent
    assert_eq!(cache.loads(), 2);
    cache.get(&c).unwrap(); // evicts b
    assert_eq!(cache.resident().len(), 2);
    cache.get(&a).unwrap();
    assert_eq!(cache.loads(), 3);
    cache.get(&b).unwrap();
    assert_eq!(cache.loads(), 4);
}
