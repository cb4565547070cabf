//! Deterministic standard-normal noise for initial latents.
//!
//! Counter-based: element `i` of the stream for `seed` is a pure function of
//! `(seed, i)` — Philox4x32-10 (Salmon et al., SC'11, the Random123 generator)
//! keyed by the seed, with counter `i / 2`, turned into two normals by the
//! Box-Muller transform (53-bit uniforms, float64 math, rounded to float32).
//! So the same seed gives the same noise on every run, in any chunking and
//! from any number of threads (fill disjoint ranges with
//! [`fill_standard_normal`] at their offsets).
//!
//! This does NOT reproduce `torch.randn(generator=torch.Generator().manual_seed(s))`
//! (torch's CPU generator is an mt19937 with its own normal transform) nor
//! numpy's; a pipeline that must match a reference image bit-for-bit should
//! pass the reference noise in instead. The Box-Muller step uses the platform
//! `ln`/`sin`/`cos`; results are identical across runs and threads, and across
//! platforms whose libm rounds these the same (which IEEE does not promise).

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// The Philox4x32 block function with 10 rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

fn key_of(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// Two standard normals for counter block `block` of `seed`.
fn normal_pair(key: [u32; 2], block: u64) -> [f32; 2] {
    let r = philox4x32_10([block as u32, (block >> 32) as u32, 0, 0], key);
    let a = (((r[0] as u64) << 32) | r[1] as u64) >> 11;
    let b = (((r[2] as u64) << 32) | r[3] as u64) >> 11;
    let scale = 1.0 / (1u64 << 53) as f64;
    let u1 = (a + 1) as f64 * scale; // (0, 1]: ln is finite
    let u2 = b as f64 * scale; // [0, 1)
    let radius = (-2.0 * u1.ln()).sqrt();
    let theta = std::f64::consts::TAU * u2;
    [(radius * theta.cos()) as f32, (radius * theta.sin()) as f32]
}

/// Element `index` of the standard-normal stream for `seed`.
pub fn standard_normal_at(seed: u64, index: u64) -> f32 {
    normal_pair(key_of(seed), index / 2)[(index % 2) as usize]
}

/// Fills `out` with elements `offset .. offset + out.len()` of the stream for `seed`.
pub fn fill_standard_normal(seed: u64, offset: u64, out: &mut [f32]) {
    let key = key_of(seed);
    let mut i = 0usize;
    let mut idx = offset;
    if idx % 2 == 1 && !out.is_empty() {
        out[0] = normal_pair(key, idx / 2)[1];
        i = 1;
        idx += 1;
    }
    while i + 1 < out.len() {
        let p = normal_pair(key, idx / 2);
        out[i] = p[0];
        out[i + 1] = p[1];
        i += 2;
        idx += 2;
    }
    if i < out.len() {
        out[i] = normal_pair(key, idx / 2)[0];
    }
}

/// `n` standard normals for `seed` (elements `0..n` of its stream).
pub fn randn(seed: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    fill_standard_normal(seed, 0, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answers() {
        // Random123 kat_vectors.
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]), [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]);
    }

    #[test]
    fn deterministic_and_chunking_invariant() {
        let a = randn(42, 1001);
        assert_eq!(a, randn(42, 1001));
        assert_ne!(a, randn(43, 1001));
        // Any split into chunks, from any threads, gives the same values.
        let mut b = vec![0.0f32; 1001];
        std::thread::scope(|s| {
            let mut rest: &mut [f32] = &mut b;
            let mut off = 0u64;
            for len in [1usize, 2, 3, 250, 501, 244] {
                let (chunk, r) = rest.split_at_mut(len);
                rest = r;
                let o = off;
                s.spawn(move || fill_standard_normal(42, o, chunk));
                off += len as u64;
            }
        });
        assert_eq!(a, b);
        for (i, &x) in a.iter().enumerate().step_by(97) {
            assert_eq!(x, standard_normal_at(42, i as u64));
        }
    }

    #[test]
    fn moments_are_standard_normal() {
        let v = randn(7, 200_000);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let kurt = v.iter().map(|&x| (x as f64 - mean).powi(4)).sum::<f64>() / n / (var * var);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "var {var}");
        assert!((kurt - 3.0).abs() < 0.06, "kurtosis {kurt}");
        assert!(v.iter().all(|x| x.is_finite()));
        let frac_within_1 = v.iter().filter(|&&x| x.abs() < 1.0).count() as f64 / n;
        assert!((frac_within_1 - 0.682_689).abs() < 0.005, "{frac_within_1}");
    }
}
