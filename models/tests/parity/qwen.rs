//! Qwen2 / Qwen3 / Qwen3-MoE causal LMs against transformers: logits and
//! router logits (check_fixture), teacher-forced `sequence_logits`, greedy
//! generation without a cache, config handling and import errors.

use crate::common::{check_fixture, fixture};
use omnic_ir::eval::{evaluate, Precision, Tensor};
use omnic_ir::DType;
use omnic_models::parity::read_io;
use omnic_models::{import, ImportError, Imported};
use std::collections::HashMap;
use std::path::Path;

#[test]
fn qwen2_matches_transformers() {
    check_fixture("qwen2", 1e-4);
}

#[test]
fn qwen3_matches_transformers() {
    check_fixture("qwen3", 1e-4);
}

#[test]
fn qwen3moe_matches_transformers() {
    check_fixture("qwen3moe", 1e-4);
}

/// Run the `forward` stage on `ids [B, S]`.
fn run(imp: &Imported, ids: &[Vec<i64>]) -> HashMap<String, Tensor> {
    let g = &imp.program.stages[0].graph;
    let flat: Vec<i64> = ids.iter().flatten().copied().collect();
    let t = Tensor::from_i64(DType::I64, &[ids.len(), ids[0].len()], flat);
    let inputs = HashMap::from([("input_ids".to_string(), t)]);
    evaluate(g, &inputs, &imp.checkpoint, Precision::F32).expect("evaluate")
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.ints().expect("int tensor").to_vec()
}

/// `model(prompt_ids ++ generated_ids).logits` (teacher forced).
fn check_sequence_logits(name: &str) {
    let dir = fixture(name);
    let imp = import(&dir).expect("import");
    let io = read_io(&dir.join("io.safetensors")).unwrap();
    let mut ids = ints(&io["input.prompt_ids"]);
    ids.extend(ints(&io["output.generated_ids"]));
    let out = run(&imp, &[ids]);
    let d = out["logits"].max_abs_diff(&io["output.sequence_logits"]).unwrap();
    eprintln!("{name}: sequence_logits max_abs {d:.3e}");
    assert!(d <= 1e-4, "{name}: sequence_logits max abs {d}");
}

/// Greedy decoding by re-running the full forward (no cache): the argmax
/// of the last position, appended, 8 times; the step logits are compared
/// with `generate_step_logits` too.
fn check_greedy(name: &str) {
    let dir = fixture(name);
    let imp = import(&dir).expect("import");
    let io = read_io(&dir.join("io.safetensors")).unwrap();
    let expect = ints(&io["output.generated_ids"]);
    let step_ref = io["output.generate_step_logits"].to_f64_vec();
    let mut ids = ints(&io["input.prompt_ids"]);
    let mut got = Vec::new();
    let mut worst = 0f64;
    for step in 0..expect.len() {
        let out = run(&imp, std::slice::from_ref(&ids));
        let logits = &out["logits"];
        let vocab = *logits.shape.last().unwrap();
        let all = logits.to_f64_vec();
        let last = &all[(ids.len() - 1) * vocab..ids.len() * vocab];
        let r = &step_ref[step * vocab..(step + 1) * vocab];
        worst = worst.max(last.iter().zip(r).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max));
        // First maximum, as torch.argmax.
        let tok = (0..vocab).fold(0, |best, j| if last[j] > last[best] { j } else { best }) as i64;
        got.push(tok);
        ids.push(tok);
    }
    eprintln!("{name}: greedy {got:?} (reference {expect:?}); step logits max_abs {worst:.3e}");
    assert_eq!(got, expect, "{name}: greedy tokens");
    assert!(worst <= 1e-4, "{name}: generate_step_logits max abs {worst}");
}

#[test]
fn qwen2_sequence_logits() {
    check_sequence_logits("qwen2");
}

#[test]
fn qwen3_sequence_logits() {
    check_sequence_logits("qwen3");
}

#[test]
fn qwen3moe_sequence_logits() {
    check_sequence_logits("qwen3moe");
}

#[test]
fn qwen2_greedy_generation() {
    check_greedy("qwen2");
}

#[test]
fn qwen3_greedy_generation() {
    check_greedy("qwen3");
}

#[test]
fn qwen3moe_greedy_generation() {
    check_greedy("qwen3moe");
}

/// A copy of fixture `name` (config + weights) with `edit` applied to its config.
fn edited_copy(name: &str, dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let src = fixture(name);
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

fn import_edited(name: &str, edit: impl Fn(&mut serde_json::Value)) -> (tempfile::TempDir, Result<Imported, ImportError>) {
    let tmp = tempfile::tempdir().unwrap();
    edited_copy(name, tmp.path(), edit);
    let r = import(tmp.path());
    (tmp, r)
}

fn err_of(name: &str, edit: impl Fn(&mut serde_json::Value)) -> ImportError {
    import_edited(name, edit).1.err().expect("import must fail")
}

fn assert_field(err: &ImportError, want: &str) {
    assert!(matches!(err, ImportError::Config { field, .. } if field == want), "expected field `{want}`: {err}");
}

#[test]
fn qwen2_wrong_intermediate_size_names_the_tensor() {
    let err = err_of("qwen2", |c| c["intermediate_size"] = 96.into()).to_string();
    assert!(err.contains("model.layers.0.mlp.gate_proj.weight"), "{err}");
}

#[test]
fn qwen2_unsupported_activation_names_the_field() {
    assert_field(&err_of("qwen2", |c| c["hidden_act"] = "laplace".into()), "hidden_act");
}

#[test]
fn qwen3_unsupported_rope_type_names_the_field() {
    let err = err_of("qwen3", |c| c["rope_parameters"] = serde_json::json!({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}));
    assert_field(&err, "rope_parameters.rope_type");
}

/// Qwen3Config's `head_dim` defaults to 128, not hidden / heads.
#[test]
fn qwen3_head_dim_defaults_to_128() {
    let err = err_of("qwen3", |c| {
        c.as_object_mut().unwrap().remove("head_dim");
    })
    .to_string();
    assert!(err.contains("model.layers.0.self_attn.q_proj.weight"), "{err}");
}

/// Untied Qwen3 needs `lm_head.weight`, which the tied fixture lacks.
#[test]
fn qwen3_untied_needs_lm_head() {
    let err = err_of("qwen3", |c| c["tie_word_embeddings"] = false.into()).to_string();
    assert!(err.contains("lm_head.weight"), "{err}");
}

#[test]
fn qwen3moe_wrong_expert_count_names_the_tensor() {
    let err = err_of("qwen3moe", |c| c["num_local_experts"] = 3.into()).to_string();
    assert!(err.contains("model.layers.0.mlp.gate.weight"), "{err}");
}

#[test]
fn qwen3moe_too_many_experts_per_token_names_the_field() {
    assert_field(&err_of("qwen3moe", |c| c["num_experts_per_tok"] = 5.into()), "num_experts_per_tok");
}

/// `mlp_only_layers` / `decoder_sparse_step` choose dense MLPs, whose
/// weights this checkpoint does not have.
#[test]
fn qwen3moe_dense_layers_follow_the_config() {
    let err = err_of("qwen3moe", |c| c["mlp_only_layers"] = serde_json::json!([1])).to_string();
    assert!(err.contains("model.layers.1.mlp.gate_proj.weight"), "{err}");
    let err = err_of("qwen3moe", |c| c["decoder_sparse_step"] = 2.into()).to_string();
    assert!(err.contains("model.layers.0.mlp.gate_proj.weight"), "{err}");
}

/// Hub-style (pre-transformers-5) config: top-level `rope_theta`,
/// `num_experts`; same program, same logits.
#[test]
fn qwen3moe_old_config_layout() {
    let (_tmp, imp) = import_edited("qwen3moe", |c| {
        let o = c.as_object_mut().unwrap();
        o.remove("rope_parameters");
        o.insert("rope_theta".into(), 10000.0.into());
        o.insert("rope_scaling".into(), serde_json::Value::Null);
        let n = o.remove("num_local_experts").unwrap();
        o.insert("num_experts".into(), n);
    });
    let imp = imp.expect("import");
    let dir = fixture("qwen3moe");
    let io = read_io(&dir.join("io.safetensors")).unwrap();
    let ids = ints(&io["input.input_ids"]);
    let out = run(&imp, &[ids[..12].to_vec(), ids[12..].to_vec()]);
    let d = out["logits"].max_abs_diff(&io["output.logits"]).unwrap();
    assert!(d <= 1e-4, "max abs {d}");
    let d = out["router_logits.1"].max_abs_diff(&io["output.router_logits.1"]).unwrap();
    assert!(d <= 1e-4, "router max abs {d}");
}

/// A one-layer model with a sliding window `w`: attention is relative
/// (RoPE), so position `i`'s logits equal those of the last position of the
/// window `ids[i-w+1..=i]` run alone.
#[test]
fn qwen2_sliding_window() {
    let w = 4usize;
    let (_tmp, imp) = import_edited("qwen2", |c| {
        c["num_hidden_layers"] = 1.into();
        c["layer_types"] = serde_json::json!(["sliding_attention"]);
        c["use_sliding_window"] = true.into();
        c["sliding_window"] = w.into();
    });
    let imp = imp.expect("import");
    let io = read_io(&fixture("qwen2").join("io.safetensors")).unwrap();
    let ids: Vec<i64> = ints(&io["input.input_ids"])[..12].to_vec();
    let full = run(&imp, std::slice::from_ref(&ids))["logits"].to_f64_vec();
    let vocab = 256;
    let mut worst = 0f64;
    for i in w - 1..ids.len() {
        let alone = run(&imp, &[ids[i + 1 - w..=i].to_vec()])["logits"].to_f64_vec();
        let a = &alone[(w - 1) * vocab..];
        let f = &full[i * vocab..(i + 1) * vocab];
        worst = worst.max(a.iter().zip(f).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max));
    }
    assert!(worst <= 1e-4, "sliding window max abs {worst}");
    // And the window matters: without it position 11 sees all 12 tokens.
    let (_tmp2, plain) = import_edited("qwen2", |c| {
        c["num_hidden_layers"] = 1.into();
        c["layer_types"] = serde_json::json!(["full_attention"]);
    });
    let plain = run(&plain.expect("import"), std::slice::from_ref(&ids))["logits"].to_f64_vec();
    let d = plain[11 * vocab..].iter().zip(&full[11 * vocab..]).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(d > 1e-3, "window had no effect ({d})");
}

/// Symbolic `batch` / `seq`, one block per layer, residual roles once each.
#[test]
fn qwen3moe_program_is_annotated() {
    use omnic_ir::{Annotation, Dim, Op, Role};
    let imp = import(&fixture("qwen3moe")).expect("import");
    let g = &imp.program.stages[0].graph;
    assert_eq!(imp.program.stages[0].name, "forward");
    let (_, n) = g.inputs().into_iter().find(|(k, _)| k == "input_ids").expect("input_ids");
    match &g.node(n).op {
        Op::Input { ty, .. } => assert_eq!(ty.shape, vec![Dim::sym("batch"), Dim::sym("seq")]),
        _ => unreachable!(),
    }
    let names: Vec<&str> = g.outputs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, vec!["logits", "router_logits.0", "router_logits.1"]);
    let mut blocks = std::collections::BTreeSet::new();
    let (mut rin, mut rout, mut modulated) = (0, 0, 0);
    for i in g.topo_order().unwrap() {
        for a in &g.node(i).annotations {
            match a {
                Annotation::Block(b) => {
                    blocks.insert(*b);
                }
                Annotation::Role(Role::ResidualIn) => rin += 1,
                Annotation::Role(Role::ResidualOut) => rout += 1,
                Annotation::Role(Role::ModulatedInput) => modulated += 1,
                _ => {}
            }
        }
    }
    assert_eq!(blocks.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!((rin, rout, modulated), (1, 1, 0));
}
