//! End to end for causal LMs: `omnic compile` each Qwen fixture into a
//! decode program, then through the runtime: the forward stage's logits
//! (`output.logits`, teacher-forced `output.sequence_logits`) within max
//! abs 1e-4, greedy generation with the KV cache reproducing
//! `output.generated_ids` exactly (`omnirt generate` and the library loop,
//! whose per-step logits are checked against `output.generate_step_logits`),
//! seeded sampling, text prompts through a tokenizer.json (checked against
//! the Python `tokenizers` library's ids in tests/fixtures/tokenizer), and
//! the errors of bad requests.

use crate::support::{fixture, omnirt, run, text};
use omnic_runtime::exec::{ExecOptions, Executable};
use omnic_runtime::program::decode::{run_decode, DecodeOptions, StopReason};
use omnic_runtime::program::sample::Sampling;
use omnic_runtime::program::textgen::decode_spec;
use omnic_runtime::HostTensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-4;

fn compile_dir(src: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec!["compile", src.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(Path::new(env!("CARGO_BIN_EXE_omnic")), &args);
    assert!(o.status.success(), "omnic compile {}: {}", src.display(), text(&o));
    out.to_path_buf()
}

fn io(name: &str) -> HashMap<String, HostTensor> {
    omnic_runtime::io::read_all(&fixture(name).join("io.safetensors")).unwrap().into_iter().collect()
}

fn ints(t: &HostTensor) -> Vec<i64> {
    t.to_i64_vec().expect("int tensor")
}

fn join(v: &[i64]) -> String {
    v.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",")
}

/// The value of `key=` on its own line of omnirt's output.
fn field(out: &str, key: &str) -> String {
    out.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("no `{key}=` line in:\n{out}")).to_string()
}

/// `omnirt generate ART args…`, required to succeed.
fn generate(art: &Path, args: &[&str]) -> String {
    let mut all = vec!["generate", art.to_str().unwrap(), "--threads", "2"];
    all.extend_from_slice(args);
    let o = run(&omnirt(), &all);
    assert!(o.status.success(), "omnirt {all:?}: {}", text(&o));
    text(&o)
}

/// `omnirt generate ART args…`, required to fail (exit 1) with `msg` in its output.
fn generate_fails(art: &Path, args: &[&str], msg: &str) {
    let mut all = vec!["generate", art.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = run(&omnirt(), &all);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "omnirt {all:?} should fail: {t}");
    assert!(t.contains(msg), "omnirt {all:?}: expected `{msg}` in: {t}");
    assert!(!t.contains("panicked"), "{t}");
}

/// Everything the fixture checks through the runtime: forward logits,
/// sequence logits, cached greedy generation (library and command line).
fn check(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let art = compile_dir(&fixture(name), &dir.path().join(format!("{name}.omni")), &[]);
    let io = io(name);
    let mut exe = Executable::load(&art, &ExecOptions { threads: 2, ..Default::default() }).unwrap();
    let spec = decode_spec(&exe).expect("decode control");
    assert_eq!((spec.max_len, spec.eos.clone()), (128, vec![2]));

    // Forward: output.logits on input_ids, output.sequence_logits on prompt ++ generated.
    let out: HashMap<String, HostTensor> = exe.run_forward([("input_ids", &io["input.input_ids"])]).unwrap().into_iter().collect();
    let logits = out["logits"].compare(&io["output.logits"]).expect("logits shape").0;
    let prompt = ints(&io["input.prompt_ids"]);
    let expect = ints(&io["output.generated_ids"]);
    let mut seq = prompt.clone();
    seq.extend(&expect);
    let ids = HostTensor::from_i64(&[1, seq.len()], &seq);
    let out: HashMap<String, HostTensor> = exe.run_forward([("input_ids", &ids)]).unwrap().into_iter().collect();
    let sequence = out["logits"].compare(&io["output.sequence_logits"]).expect("sequence_logits shape").0;

    // Greedy generation with the KV cache, through the library.
    let opts = DecodeOptions { max_tokens: expect.len(), stop: Vec::new(), sampling: Sampling::default(), keep_logits: true };
    let g = run_decode(&mut exe, &spec, &prompt, &opts).unwrap();
    let step_ref = io["output.generate_step_logits"].to_f32_vec();
    let vocab = step_ref.len() / expect.len();
    let mut steps = 0f64;
    for (i, row) in g.logits.iter().enumerate() {
        for (a, b) in row.iter().zip(&step_ref[i * vocab..(i + 1) * vocab]) {
            steps = steps.max((a - b).abs() as f64);
        }
    }
    eprintln!("{name}: logits {logits:.3e}, sequence_logits {sequence:.3e}, generate_step_logits {steps:.3e}, greedy {:?}", g.tokens);
    assert!(logits <= TOL && sequence <= TOL && steps <= TOL, "{name}: {logits} {sequence} {steps}");
    assert_eq!(g.tokens, expect, "{name}: greedy ids");
    assert_eq!((g.reason, g.steps), (StopReason::Length, expect.len() - 1));

    // The same through `omnirt generate`.
    let t = generate(&art, &["--prompt-ids", &join(&prompt), "--max-tokens", &expect.len().to_string()]);
    assert_eq!(field(&t, "generated_ids"), join(&expect), "{t}");
    let timing = t.lines().find(|l| l.starts_with("prefill_ms=")).unwrap_or_else(|| panic!("{t}"));
    let parts: Vec<&str> = timing.split(' ').collect();
    assert_eq!(parts.len(), 3, "{timing}");
    assert!(parts[0]["prefill_ms=".len()..].parse::<f64>().is_ok() && parts[1].starts_with("decode_ms_per_token="), "{timing}");
    assert!(parts[1]["decode_ms_per_token=".len()..].parse::<f64>().is_ok(), "{timing}");
    assert_eq!(parts[2], format!("tokens={}", expect.len()), "{timing}");
}

#[test]
fn e2e_decode_qwen2() {
    check("qwen2");
}

#[test]
fn e2e_decode_qwen3() {
    check("qwen3");
}

#[test]
fn e2e_decode_qwen3moe() {
    check("qwen3moe");
}

/// Sampling, stop tokens, text prompts and request errors on one compiled
/// qwen2 (a copy of the fixture with the test tokenizer.json, embedded by
/// the compiler; another artifact compiled without it and a smaller cache).
#[test]
fn e2e_decode_sampling_tokenizer_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("qwen2-tok");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(fixture("qwen2").join(f), model.join(f)).unwrap();
    }
    let tok_file = fixture("tokenizer").join("tokenizer.json");
    std::fs::copy(&tok_file, model.join("tokenizer.json")).unwrap();
    let art = compile_dir(&model, &dir.path().join("tok.omni"), &[]);
    let plain = compile_dir(&fixture("qwen2"), &dir.path().join("plain.omni"), &["--max-len", "16"]);
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer").join("expected.json")).unwrap()).unwrap();

    // Same seed, same tokens; some seed leaves the greedy path.
    let sample = |seed: &str| {
        let t = generate(
            &plain,
            &["--prompt-ids", "37,54,3", "--max-tokens", "10", "--temperature", "1.5", "--top-k", "40", "--top-p", "0.9", "--seed", seed, "--ignore-eos"],
        );
        field(&t, "generated_ids")
    };
    assert_eq!(sample("11"), sample("11"));
    let greedy = field(&generate(&plain, &["--prompt-ids", "37,54,3", "--max-tokens", "10", "--ignore-eos"]), "generated_ids");
    assert!(["1", "2", "3", "4"].iter().any(|s| sample(s) != greedy), "sampling never left the greedy path {greedy}");
    // --stop ends at the first occurrence of the stop token.
    let g: Vec<&str> = greedy.split(',').collect();
    let t = generate(&plain, &["--prompt-ids", "37,54,3", "--max-tokens", "10", "--stop", g[1]]);
    let first = g.iter().position(|x| *x == g[1]).unwrap();
    assert_eq!(field(&t, "generated_ids"), g[..=first].join(","), "{t}");
    assert!(t.contains("stopped: stop token"), "{t}");

    // Text prompts: ids as the Python tokenizers library encodes them.
    for case in expected["encode"].as_array().unwrap() {
        let prompt = case["text"].as_str().unwrap();
        let want: Vec<i64> = case["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let t = generate(&art, &["--prompt", prompt, "--max-tokens", "4"]);
        assert_eq!(field(&t, "prompt_ids"), join(&want), "{prompt}: {t}");
        assert!(t.contains("text=\""), "{t}");
        let t = generate(&plain, &["--prompt", prompt, "--max-tokens", "4", "--tokenizer", tok_file.to_str().unwrap()]);
        assert_eq!(field(&t, "prompt_ids"), join(&want), "{prompt}: {t}");
    }

    // Errors.
    generate_fails(&plain, &["--prompt", "hello"], "--prompt needs a tokenizer");
    generate_fails(&plain, &["--prompt-ids", "1,300"], "prompt token 1 is 300, outside the vocabulary 0..256");
    generate_fails(&plain, &["--prompt-ids", "1,-4"], "prompt token 1 is -4");
    generate_fails(&plain, &["--prompt-ids", "1,2,3", "--max-tokens", "14"], "3 prompt tokens + 14 new tokens exceed the KV cache of 16 positions");
    generate_fails(&plain, &[], "no prompt");
    generate_fails(&plain, &["--prompt-ids", "1", "--max-tokens", "2", "--temperature", "0.5", "--top-p", "0"], "--top-p 0 must be in (0, 1]");
    generate_fails(&plain, &["--prompt-ids", "1", "--tokenizer", dir.path().join("missing.json").to_str().unwrap()], "missing.json");
    std::fs::write(dir.path().join("bad.json"), "{ not json").unwrap();
    generate_fails(&plain, &["--prompt", "x", "--tokenizer", dir.path().join("bad.json").to_str().unwrap()], "not a usable tokenizer.json");
    // 16 positions exactly: fits.
    let t = generate(&plain, &["--prompt-ids", "1,2,3", "--max-tokens", "13", "--ignore-eos"]);
    assert!(t.contains("tokens=13"), "{t}");
    // `omnirt run` on the decode artifact runs the forward stage.
    let out = dir.path().join("out.safetensors");
    let o = run(
        &omnirt(),
        &["run", plain.to_str().unwrap(), "--inputs", fixture("qwen2").join("io.safetensors").to_str().unwrap(), "--outputs", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&omnirt(), &["compare", out.to_str().unwrap(), fixture("qwen2").join("io.safetensors").to_str().unwrap(), "--prefix", "output.logits"]);
    assert!(o.status.success(), "{}", text(&o));
}
