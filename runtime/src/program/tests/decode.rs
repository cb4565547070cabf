//! The decode loop on a toy runner: a "model" whose next token is
//! `(last token + cached positions) mod vocab`, which checks that the cache
//! grows by one position per step in place, that each step gets exactly
//! the filled prefix, and the stop / length / request rules.

use super::*;

const VOCAB: usize = 16;

struct Toy {
    calls: Vec<(String, usize)>,
    /// Data pointer of the cache input at each step (must not move).
    ptrs: Vec<usize>,
}

fn logits_for(next: usize) -> HostTensor {
    let mut v = vec![0.0f32; VOCAB];
    v[next % VOCAB] = 1.0;
    HostTensor::from_f32(&[1, 1, VOCAB], &v)
}

impl StageRunner for Toy {
    fn run_stage(&mut self, stage: &str, inputs: &Tensors) -> Result<Tensors, RtError> {
        let ids = inputs["ids"].to_i64_vec().unwrap_or_default();
        let mut out = Tensors::new();
        let past = match stage {
            "prefill" => 0,
            "step" => {
                let c = &inputs["past"];
                self.ptrs.push(c.data.as_ptr() as usize);
                // Each cached row holds its position.
                let vals = c.to_f32_vec();
                for (i, v) in vals.iter().enumerate() {
                    assert_eq!(*v as usize, i, "cache row {i}");
                }
                c.shape[1]
            }
            _ => return Err(RtError::Exec(format!("no stage {stage}"))),
        };
        self.calls.push((stage.to_string(), past));
        let n = ids.len();
        let rows: Vec<f32> = if stage == "prefill" { (0..n).map(|i| i as f32).collect() } else { vec![past as f32] };
        out.insert("new".into(), HostTensor::from_f32(&[1, n, 1], &rows));
        let last = *ids.last().unwrap_or(&0) as usize;
        out.insert("logits".into(), logits_for(last + past));
        Ok(out)
    }
}

fn spec(max_len: usize) -> DecodeSpec {
    DecodeSpec {
        forward: "forward".into(),
        prefill: "prefill".into(),
        step: "step".into(),
        tokens: "ids".into(),
        logits: "logits".into(),
        cache: vec![("new".into(), "past".into())],
        max_len,
        eos: vec![15],
    }
}

fn opts(max_tokens: usize, stop: Vec<i64>) -> DecodeOptions {
    DecodeOptions { max_tokens, stop, sampling: Sampling::default(), keep_logits: false }
}

#[test]
fn cache_grows_in_place_one_step_per_token() {
    let mut toy = Toy { calls: Vec::new(), ptrs: Vec::new() };
    let out = run_decode(&mut toy, &spec(32), &[3, 4], &opts(6, Vec::new())).unwrap();
    // prefill: next = 4 + 0; then step with past p: next = last + p.
    assert_eq!(out.tokens, vec![4, 6, 9, 13, 2, 8]);
    assert_eq!(out.reason, StopReason::Length);
    assert_eq!(out.steps, 5);
    let pasts: Vec<usize> = toy.calls.iter().filter(|(s, _)| s == "step").map(|(_, p)| *p).collect();
    assert_eq!(pasts, vec![2, 3, 4, 5, 6]);
    assert!(toy.ptrs.windows(2).all(|w| w[0] == w[1]), "the cache buffer moved: {:?}", toy.ptrs);
}

#[test]
fn stops_on_stop_token_and_checks_requests() {
    let mut toy = Toy { calls: Vec::new(), ptrs: Vec::new() };
    let out = run_decode(&mut toy, &spec(32), &[3, 4], &opts(10, vec![9])).unwrap();
    assert_eq!((out.tokens, out.reason), (vec![4, 6, 9], StopReason::Stop));
    let e = run_decode(&mut toy, &spec(8), &[1, 2, 3], &opts(6, Vec::new())).unwrap_err().to_string();
    assert!(e.contains("3 prompt tokens + 6 new tokens exceed the KV cache of 8 positions"), "{e}");
    let e = run_decode(&mut toy, &spec(8), &[], &opts(1, Vec::new())).unwrap_err().to_string();
    assert!(e.contains("prompt is empty"), "{e}");
    let e = check_request(&spec(8), &[1, 16], 1, Some(VOCAB)).unwrap_err().to_string();
    assert!(e.contains("prompt token 1 is 16, outside the vocabulary 0..16"), "{e}");
    let out = run_decode(&mut toy, &spec(8), &[1], &opts(0, Vec::new())).unwrap();
    assert!(out.tokens.is_empty());
}
