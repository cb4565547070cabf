//! Checkpoint formats and directory-level errors: f16/bf16 checkpoints
//! import and run, sharded checkpoints import, an unknown architecture is
//! refused with the supported list.

use crate::common::fixture;
use omnic_ir::eval::{evaluate, Precision};
use omnic_models::parity::{read_io, select_inputs};
use omnic_runtime::{io, ElemType, HostTensor};
use std::path::Path;

/// Copy a fixture directory, converting every weight to `dtype`.
fn convert_copy(src: &Path, dst: &Path, dtype: ElemType) {
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let ts: Vec<(String, HostTensor)> = io::read_all(&src.join("diffusion_pytorch_model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            let v = t.to_f32_vec();
            let data: Vec<u8> = match dtype {
                ElemType::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
                ElemType::BF16 => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
                _ => panic!("unsupported in this test"),
            };
            (n, HostTensor { dtype, shape: t.shape.clone(), data })
        })
        .collect();
    io::write(&dst.join("diffusion_pytorch_model.safetensors"), &ts, None).unwrap();
}

fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    num / b.iter().map(|y| y * y).sum::<f64>().sqrt()
}

#[test]
fn half_precision_checkpoints_import_and_run() {
    // bf16/f16 weights are widened to f32 on load; the result is judged with
    // the relative-L2 bound the fixture README gives for reduced precision
    // (the DiT fixture lists rel_l2 0.0065 for a full bf16 run; weights-only
    // rounding must stay well inside 2x that).
    let src = fixture("dit");
    let io_t = read_io(&src.join("io.safetensors")).unwrap();
    let want = io_t["output.sample"].to_f64_vec();
    for (dtype, bound) in [(ElemType::BF16, 0.013), (ElemType::F16, 0.002)] {
        let d = tempfile::tempdir().unwrap();
        convert_copy(&src, d.path(), dtype);
        let imp = omnic_models::import(d.path()).unwrap_or_else(|e| panic!("{dtype}: {e}"));
        let g = &imp.program.stages[0].graph;
        let out = evaluate(g, &select_inputs(g, &io_t).unwrap(), &imp.checkpoint, Precision::F32).unwrap();
        let got = out["sample"].to_f64_vec();
        let r = rel_l2(&got, &want);
        assert!(r <= bound, "{dtype}: rel_l2 {r} > {bound}");
        assert!(r > 0.0, "{dtype}: weights were not actually converted");
    }
}

#[test]
fn sharded_checkpoint_imports_to_the_same_program_outputs() {
    let src = fixture("dit");
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), d.path().join("config.json")).unwrap();
    let all = io::read_all(&src.join("diffusion_pytorch_model.safetensors")).unwrap();
    let (a, b): (Vec<_>, Vec<_>) = all.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let a: Vec<(String, HostTensor)> = a.into_iter().map(|(_, t)| t).collect();
    let b: Vec<(String, HostTensor)> = b.into_iter().map(|(_, t)| t).collect();
    io::write(&d.path().join("m-1.safetensors"), &a, None).unwrap();
    io::write(&d.path().join("m-2.safetensors"), &b, None).unwrap();
    let mut map = serde_json::Map::new();
    for (n, _) in &a {
        map.insert(n.clone(), "m-1.safetensors".into());
    }
    for (n, _) in &b {
        map.insert(n.clone(), "m-2.safetensors".into());
    }
    std::fs::write(d.path().join("diffusion_pytorch_model.safetensors.index.json"), serde_json::json!({ "weight_map": map }).to_string()).unwrap();
    let imp = omnic_models::import(d.path()).unwrap();
    let io_t = read_io(&src.join("io.safetensors")).unwrap();
    let g = &imp.program.stages[0].graph;
    let out = evaluate(g, &select_inputs(g, &io_t).unwrap(), &imp.checkpoint, Precision::F32).unwrap();
    assert!(out["sample"].max_abs_diff(&io_t["output.sample"]).unwrap() < 1e-4);
}

#[test]
fn unknown_architecture_lists_the_supported_ones() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("config.json"), r#"{"_class_name": "UNet2DConditionModel"}"#).unwrap();
    let e = omnic_models::import(d.path()).err().unwrap().to_string();
    assert!(e.contains("unknown architecture `UNet2DConditionModel`"), "{e}");
    for class in ["DiTTransformer2DModel", "FluxTransformer2DModel", "WanTransformer3DModel", "AutoencoderKL", "Qwen3ForCausalLM"] {
        assert!(e.contains(class), "{class} missing from: {e}");
    }
    assert!(e.contains("config.json"), "{e}");
}
