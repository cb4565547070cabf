//! The decode program of the Qwen causal LMs on the reference evaluator:
//! the runtime's decode loop (prefill + one KV-cache step per token) against
//! transformers' `generate` (greedy ids, per-step logits) and the
//! teacher-forced `sequence_logits`; the cached step against the full
//! forward (also with sliding windows); text form and verifier.

use crate::common::fixture;
use omnic_ir::eval::{evaluate, Precision, Tensor};
use omnic_ir::{Control, DType, DecodeSpec};
use omnic_models::eval_runner::EvalRunner;
use omnic_models::parity::read_io;
use omnic_models::{import, Imported};
use omnic_runtime::program::decode::{run_decode, DecodeOptions, DecodeSpec as RtSpec, StopReason};
use omnic_runtime::program::sample::Sampling;
use omnic_runtime::program::{StageRunner, Tensors};
use omnic_runtime::HostTensor;
use std::collections::HashMap;

fn spec_of(imp: &Imported) -> DecodeSpec {
    match &imp.program.control {
        Control::Decode(d) => d.clone(),
        other => panic!("expected a decode control, got {other:?}"),
    }
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.ints().expect("int tensor").to_vec()
}

fn max_abs(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max)
}

/// Greedy decode through prefill + cached steps: ids exact, step logits within 1e-4, one stage call per token.
fn check_decode(name: &str) {
    let dir = fixture(name);
    let imp = import(&dir).expect("import");
    let io = read_io(&dir.join("io.safetensors")).unwrap();
    let spec = omnic_frontend::convert::decode_spec(&spec_of(&imp));
    assert_eq!(spec.max_len, 128, "{name}: max_position_embeddings of the fixture");
    assert_eq!(spec.eos, vec![2], "{name}: generation_config.json eos_token_id");
    let prompt = ints(&io["input.prompt_ids"]);
    let expect = ints(&io["output.generated_ids"]);
    let mut runner = EvalRunner::new(&imp.program, &imp.checkpoint);
    let opts = DecodeOptions { max_tokens: expect.len(), stop: Vec::new(), sampling: Sampling::default(), keep_logits: true };
    let out = run_decode(&mut runner, &spec, &prompt, &opts).expect("decode");
    assert_eq!(out.tokens, expect, "{name}: greedy ids");
    assert_eq!(out.reason, StopReason::Length);
    let step_ref = io["output.generate_step_logits"].to_f64_vec();
    let vocab = step_ref.len() / expect.len();
    let worst = out.logits.iter().enumerate().map(|(i, l)| max_abs(l, &step_ref[i * vocab..(i + 1) * vocab])).fold(0.0, f64::max);
    eprintln!("{name}: cached greedy {:?}; generate_step_logits max_abs {worst:.3e}", out.tokens);
    assert!(worst <= 1e-4, "{name}: step logits max abs {worst}");
    assert_eq!(runner.calls.get("prefill"), Some(&1));
    assert_eq!(runner.calls.get("step"), Some(&(expect.len() - 1)), "{name}: one step call per new token after the first");
    assert_eq!(runner.calls.get("forward"), None);
}

#[test]
fn qwen2_decode_with_kv_cache() {
    check_decode("qwen2");
}

#[test]
fn qwen3_decode_with_kv_cache() {
    check_decode("qwen3");
}

#[test]
fn qwen3moe_decode_with_kv_cache() {
    check_decode("qwen3moe");
}

/// Teacher forcing through the cache: prefill on the prompt, then one step
/// per generated token; every step's logits against `sequence_logits` and
/// the forward stage's logits of the same positions (1e-4).
fn teacher_forced(imp: &Imported, ids: &[i64], prompt_len: usize) -> (Vec<Vec<f32>>, Vec<f64>) {
    let spec = spec_of(imp);
    let mut runner = EvalRunner::new(&imp.program, &imp.checkpoint);
    let mut inputs: Tensors = HashMap::new();
    inputs.insert("input_ids".into(), HostTensor::from_i64(&[1, prompt_len], &ids[..prompt_len]));
    let mut res = runner.run_stage(&spec.prefill, &inputs).expect("prefill");
    let mut rows = vec![res["logits"].to_f32_vec()];
    for (new, past) in &spec.cache {
        inputs.insert(past.clone(), res.remove(new).expect("cache output"));
    }
    for (n, &tok) in ids.iter().enumerate().skip(prompt_len) {
        inputs.insert("input_ids".into(), HostTensor::from_i64(&[1, 1], &[tok]));
        let mut res = runner.run_stage(&spec.step, &inputs).expect("step");
        rows.push(res["logits"].to_f32_vec());
        for (new, past) in &spec.cache {
            let add = res.remove(new).expect("cache output");
            let c = inputs.get_mut(past).expect("cache");
            c.data.extend_from_slice(&add.data);
            c.shape[1] = n + 1;
        }
    }
    let g = &imp.program.stage(&spec.forward).expect("forward").graph;
    let t = Tensor::from_i64(DType::I64, &[1, ids.len()], ids.to_vec());
    let full = evaluate(g, &HashMap::from([("input_ids".to_string(), t)]), &imp.checkpoint, Precision::F32).expect("forward");
    (rows, full["logits"].to_f64_vec())
}

fn check_teacher_forced(name: &str) {
    let dir = fixture(name);
    let imp = import(&dir).expect("import");
    let io = read_io(&dir.join("io.safetensors")).unwrap();
    let prompt = ints(&io["input.prompt_ids"]);
    let mut ids = prompt.clone();
    ids.extend(ints(&io["output.generated_ids"]));
    let (rows, full) = teacher_forced(&imp, &ids, prompt.len());
    let seq_ref = io["output.sequence_logits"].to_f64_vec();
    let vocab = seq_ref.len() / ids.len();
    let (mut vs_ref, mut vs_forward) = (0f64, 0f64);
    for (i, row) in rows.iter().enumerate() {
        let pos = prompt.len() - 1 + i;
        vs_ref = vs_ref.max(max_abs(row, &seq_ref[pos * vocab..(pos + 1) * vocab]));
        vs_forward = vs_forward.max(max_abs(row, &full[pos * vocab..(pos + 1) * vocab]));
    }
    eprintln!("{name}: cached steps vs sequence_logits {vs_ref:.3e}, vs forward stage {vs_forward:.3e}");
    assert!(vs_ref <= 1e-4 && vs_forward <= 1e-4, "{name}: {vs_ref} {vs_forward}");
}

#[test]
fn qwen2_cached_steps_match_full_forward() {
    check_teacher_forced("qwen2");
}

#[test]
fn qwen3moe_cached_steps_match_full_forward() {
    check_teacher_forced("qwen3moe");
}

/// Sliding-window layers: the step's window mask over the cached positions
/// gives the forward's logits (window 3 < sequence length 14).
#[test]
fn qwen2_sliding_window_step_matches_forward() {
    let src = fixture("qwen2");
    let tmp = tempfile::tempdir().unwrap();
    for f in ["model.safetensors", "generation_config.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["use_sliding_window"] = true.into();
    cfg["sliding_window"] = 3.into();
    cfg["max_window_layers"] = 1.into();
    cfg.as_object_mut().unwrap().remove("layer_types");
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let imp = import(tmp.path()).expect("import");
    let ids: Vec<i64> = vec![37, 54, 3, 141, 24, 128, 79, 135, 28, 135, 28, 135, 28, 135];
    let (rows, full) = teacher_forced(&imp, &ids, 4);
    let vocab = full.len() / ids.len();
    let worst = rows.iter().enumerate().map(|(i, r)| max_abs(r, &full[(3 + i) * vocab..(4 + i) * vocab])).fold(0.0, f64::max);
    eprintln!("qwen2 sliding window 3: cached steps vs forward {worst:.3e}");
    assert!(worst <= 1e-4, "{worst}");
}

/// Same seed, same tokens; temperature sampling differs from greedy for some seed; stop tokens end early.
#[test]
fn qwen3_sampling_is_seeded_and_stops() {
    let dir = fixture("qwen3");
    let imp = import(&dir).expect("import");
    let spec: RtSpec = omnic_frontend::convert::decode_spec(&spec_of(&imp));
    let prompt = [37i64, 54, 3, 141, 24, 128];
    let run = |s: Sampling, stop: Vec<i64>| {
        let mut runner = EvalRunner::new(&imp.program, &imp.checkpoint);
        run_decode(&mut runner, &spec, &prompt, &DecodeOptions { max_tokens: 6, stop, sampling: s, keep_logits: false }).expect("decode")
    };
    let hot = |seed| Sampling { temperature: 1.5, top_k: 50, top_p: 0.95, seed };
    let a = run(hot(7), Vec::new());
    let b = run(hot(7), Vec::new());
    assert_eq!(a.tokens, b.tokens, "same seed, same tokens");
    let greedy = run(Sampling::default(), Vec::new()).tokens;
    assert!((0..4).any(|s| run(hot(s), Vec::new()).tokens != greedy), "sampling at T=1.5 never left the greedy path");
    let stop_at = greedy[2];
    let first = greedy.iter().position(|&t| t == stop_at).unwrap();
    let c = run(Sampling::default(), vec![stop_at]);
    assert_eq!(c.reason, StopReason::Stop);
    assert_eq!(c.tokens, greedy[..=first].to_vec());
}

/// The decode program prints and parses back to the same text; the verifier
/// rejects a cache entry that is not a step input.
#[test]
fn decode_program_text_round_trip_and_verifier() {
    let imp = import(&fixture("qwen2")).expect("import");
    let text = omnic_ir::text::print_program(&imp.program);
    assert!(text.contains("control decode {\n  forward \"forward\"\n  prefill \"prefill\"\n  step \"step\""), "{}", &text[text.len().saturating_sub(600)..]);
    let back = omnic_ir::text::parse_program(&text).expect("parse");
    assert_eq!(back.control, imp.program.control);
    assert_eq!(omnic_ir::text::print_program(&back), text);
    let mut p = imp.program.clone();
    if let Control::Decode(d) = &mut p.control {
        d.cache[0].1 = "nope".into();
    }
    let e = omnic_ir::verify::verify_program(&p).unwrap_err().to_string();
    assert!(e.contains("`nope` is not an input of stage `step`"), "{e}");
    let bad = text.replace("  max_len 128\n", "");
    let e = omnic_ir::text::parse_program(&bad).unwrap_err().to_string();
    assert!(e.contains("missing `max_len`"), "{e}");
}
