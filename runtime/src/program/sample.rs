//! Choosing the next token from a row of logits: greedy (argmax), or a
//! seeded draw after transformers' logits warpers in their order —
//! temperature (`logits / T`), top-k (keep the `k` largest, ties at the
//! `k`-th value kept), top-p (nucleus: drop the tokens whose ascending
//! cumulative probability is `≤ 1 - p`, always keeping the most likely
//! one) — then softmax.
//!
//! The draw for token `i` of a request uses uniform `i` of the Philox
//! stream of the seed ([`uniform_at`]), so the same seed and logits give
//! the same tokens on every run and machine; it does not reproduce torch's
//! `multinomial` stream.

use crate::rng::philox4x32_10;

/// How tokens are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// `0`: greedy (argmax); `> 0`: sample at this temperature.
    pub temperature: f64,
    /// Keep the `k` most likely tokens (`0`: all).
    pub top_k: usize,
    /// Nucleus mass in `(0, 1]` (`1`: all).
    pub top_p: f64,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

impl Sampling {
    /// Check the settings; the message names the flag at fault.
    pub fn check(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!("--temperature {} must be a finite number ≥ 0 (0 = greedy)", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("--top-p {} must be in (0, 1]", self.top_p));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// Uniform `index` in `[0, 1)` of the Philox stream of `seed` (53 bits).
pub fn uniform_at(seed: u64, index: u64) -> f64 {
    let r = philox4x32_10([index as u32, (index >> 32) as u32, 0x5eed, 0], [seed as u32, (seed >> 32) as u32]);
    let bits = (((r[0] as u64) << 32) | r[1] as u64) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// `argmax` with ties going to the lowest index (as `torch.argmax`); NaN never wins.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

/// The token chosen from `logits` for draw number `index` of a request.
pub fn choose(logits: &[f32], s: &Sampling, index: u64) -> usize {
    if s.is_greedy() || logits.len() <= 1 {
        return argmax(logits);
    }
    let probs = warped_probs(logits, s);
    let u = uniform_at(s.seed, index);
    let mut acc = 0.0f64;
    let mut last = argmax(logits);
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            acc += p;
            last = i;
            if u < acc {
                return i;
            }
        }
    }
    last
}

/// Probabilities after temperature, top-k and top-p (zeros outside the kept set; sums to 1).
pub fn warped_probs(logits: &[f32], s: &Sampling) -> Vec<f64> {
    let t = if s.temperature > 0.0 { s.temperature } else { 1.0 };
    let mut x: Vec<f64> = logits.iter().map(|&v| if v.is_nan() { f64::NEG_INFINITY } else { v as f64 / t }).collect();
    let mut order: Vec<usize> = (0..x.len()).collect();
    // Descending by value, ties by index.
    order.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    if s.top_k > 0 && s.top_k < x.len() {
        let kth = x[order[s.top_k - 1]];
        for v in x.iter_mut() {
            if *v < kth {
                *v = f64::NEG_INFINITY;
            }
        }
    }
    let max = x[order[0]];
    let mut p: Vec<f64> = x.iter().map(|&v| if v == f64::NEG_INFINITY { 0.0 } else { (v - max).exp() }).collect();
    let sum: f64 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= sum);
    if s.top_p < 1.0 {
        // Ascending cumulative mass; drop while it stays ≤ 1 - top_p (never the last = most likely).
        let mut acc = 0.0;
        for (n, &i) in order.iter().rev().enumerate() {
            acc += p[i];
            if acc <= 1.0 - s.top_p && n + 1 < order.len() {
                p[i] = 0.0;
            } else {
                break;
            }
        }
        let sum: f64 = p.iter().sum();
        p.iter_mut().for_each(|v| *v /= sum);
    }
    p
}

#[cfg(test)]
#[path = "tests/sample.rs"]
mod tests;
