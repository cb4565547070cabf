use super::*;

#[test]
fn greedy_is_first_argmax() {
    let s = Sampling::default();
    assert_eq!(choose(&[0.5, 2.0, 2.0, -1.0], &s, 0), 1);
    assert_eq!(choose(&[f32::NAN, 1.0, 0.0], &s, 3), 1);
}

#[test]
fn warpers_follow_transformers() {
    let logits = [1.0f32, 3.0, 2.0, 0.0];
    // Temperature only: softmax(x / T).
    let s = Sampling { temperature: 2.0, ..Sampling::default() };
    let p = warped_probs(&logits, &s);
    let e: Vec<f64> = logits.iter().map(|&x| (x as f64 / 2.0).exp()).collect();
    let z: f64 = e.iter().sum();
    for (a, b) in p.iter().zip(&e) {
        assert!((a - b / z).abs() < 1e-12);
    }
    // Top-k 2 keeps the two largest.
    let s = Sampling { temperature: 1.0, top_k: 2, ..Sampling::default() };
    let p = warped_probs(&logits, &s);
    assert!(p[0] == 0.0 && p[3] == 0.0 && p[1] > p[2] && p[2] > 0.0);
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    // Top-p: probs ≈ [0.0871, 0.6439, 0.2369, 0.0321]; p = 0.7 keeps {1, 2}
    // (ascending cumsum 0.032, 0.119 ≤ 0.3 dropped, 0.356 > 0.3 kept).
    let s = Sampling { temperature: 1.0, top_p: 0.7, ..Sampling::default() };
    let p = warped_probs(&logits, &s);
    assert!(p[0] == 0.0 && p[3] == 0.0 && p[1] > 0.0 && p[2] > 0.0, "{p:?}");
    // A tiny p keeps the most likely token only.
    let s = Sampling { temperature: 1.0, top_p: 1e-9, ..Sampling::default() };
    assert_eq!(warped_probs(&logits, &s), vec![0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn draws_are_seeded_and_follow_the_distribution() {
    let logits = [0.0f32, 1.0, 2.0];
    let s = Sampling { temperature: 1.0, seed: 42, ..Sampling::default() };
    let a: Vec<usize> = (0..200).map(|i| choose(&logits, &s, i)).collect();
    let b: Vec<usize> = (0..200).map(|i| choose(&logits, &s, i)).collect();
    assert_eq!(a, b);
    let c: Vec<usize> = (0..200).map(|i| choose(&logits, &Sampling { seed: 43, ..s }, i)).collect();
    assert_ne!(a, c);
    // Frequencies near softmax [0.090, 0.245, 0.665] over 20000 draws.
    let n = 20000;
    let mut counts = [0usize; 3];
    for i in 0..n {
        counts[choose(&logits, &s, i)] += 1;
    }
    let p = warped_probs(&logits, &s);
    for k in 0..3 {
        let f = counts[k] as f64 / n as f64;
        assert!((f - p[k]).abs() < 0.015, "token {k}: {f} vs {}", p[k]);
    }
    for i in 0..1000 {
        let u = uniform_at(7, i);
        assert!((0.0..1.0).contains(&u));
    }
}

#[test]
fn bad_settings_name_the_flag() {
    let e = Sampling { temperature: -1.0, ..Sampling::default() }.check().unwrap_err();
    assert!(e.contains("--temperature"), "{e}");
    let e = Sampling { top_p: 1.5, ..Sampling::default() }.check().unwrap_err();
    assert!(e.contains("--top-p"), "{e}");
}
