//! Random elementwise graphs compiled ahead of time, against the reference.
//!
//! The generator tracks an interval for every value and only applies an op
//! where it is defined and well conditioned (no log of values near 0, no
//! add of opposite signs that could cancel, no exp overflow, magnitudes below
//! 1e3), so that the f32 kernel and the f32 reference (which rounds each op's
//! f64 result) agree to a small relative error plus an absolute error for
//! results near zero.

use super::support::{check, stage, Tol};
use omnic_ir::eval::kernels::unary_f;
use omnic_ir::eval::Tensor;
use omnic_ir::{BinaryOp, Builder, DType, Shape, UnaryOp, ValueRef};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

const GRAPHS: u64 = 60;
const TOL: Tol = Tol { rtol: 2e-6, atol: 1e-6 };
const CAP: f64 = 1e3;

#[derive(Clone)]
struct Val {
    v: ValueRef,
    lo: f64,
    hi: f64,
}

fn shape(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| d.into()).collect()
}

/// Range of `f` on `[lo, hi]`, sampled (exact for monotone `f`; silu/gelu
/// minima are close enough for choosing ops).
fn range(f: impl Fn(f64) -> f64, lo: f64, hi: f64) -> (f64, f64) {
    let mut r = (f64::INFINITY, f64::NEG_INFINITY);
    for i in 0..=256 {
        let y = f(lo + (hi - lo) * i as f64 / 256.0);
        r = (r.0.min(y), r.1.max(y));
    }
    r
}

fn corners(f: impl Fn(f64, f64) -> f64, a: &Val, b: &Val) -> (f64, f64) {
    let ys = [f(a.lo, b.lo), f(a.lo, b.hi), f(a.hi, b.lo), f(a.hi, b.hi)];
    (ys.iter().copied().fold(f64::INFINITY, f64::min), ys.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

fn unary_ok(op: UnaryOp, a: &Val) -> bool {
    let m = a.lo.abs().max(a.hi.abs());
    match op {
        UnaryOp::Exp => a.hi <= 5.0 && a.lo >= -10.0,
        UnaryOp::Log | UnaryOp::Rsqrt => a.lo >= 0.05,
        UnaryOp::Sqrt => a.lo >= 0.01,
        UnaryOp::Recip => a.lo >= 0.1 || a.hi <= -0.1,
        UnaryOp::Sin | UnaryOp::Cos => m <= 4.0,
        UnaryOp::Square => m <= 30.0,
        _ => true,
    }
}

fn binary_ok(op: BinaryOp, a: &Val, b: &Val) -> bool {
    let pos = |v: &Val| v.lo >= 0.0;
    let neg = |v: &Val| v.hi <= 0.0;
    match op {
        BinaryOp::Add => pos(a) && pos(b) || neg(a) && neg(b),
        BinaryOp::Sub => pos(a) && neg(b) || neg(a) && pos(b),
        BinaryOp::Div => b.lo >= 0.1 || b.hi <= -0.1,
        BinaryOp::Pow => a.lo >= 0.1 && b.lo >= -3.0 && b.hi <= 3.0,
        BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min => true,
    }
}

fn binary_f(op: BinaryOp, x: f64, y: f64) -> f64 {
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Pow => x.powf(y),
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
    }
}

/// A random shape that broadcasts to `full`: some axes 1, maybe fewer axes.
fn leaf_shape(rng: &mut StdRng, full: &[usize]) -> Vec<usize> {
    let drop = if rng.random_bool(0.3) { rng.random_range(0..=full.len()) } else { 0 };
    full[drop..].iter().map(|&d| if rng.random_bool(0.25) { 1 } else { d }).collect()
}

struct Gen {
    b: Builder,
    vals: Vec<Val>,
    computed: Vec<usize>,
    inputs: HashMap<String, Tensor>,
}

impl Gen {
    fn leaf(&mut self, rng: &mut StdRng, full: &[usize]) {
        let ranges = [(0.5, 2.0), (-2.0, -0.5), (-3.0, 3.0), (0.1, 4.0)];
        let &(lo, hi) = ranges.choose(rng).unwrap();
        if rng.random_bool(0.25) {
            // A scalar constant.
            let c: f64 = rng.random_range(lo..hi);
            let c = c as f32 as f64;
            let v = self.b.scalar(DType::F32, c).unwrap();
            self.vals.push(Val { v, lo: c, hi: c });
        } else {
            let s = leaf_shape(rng, full);
            let name = format!("in{}", self.inputs.len());
            let v = self.b.input(&name, DType::F32, shape(&s)).unwrap();
            let n: usize = s.iter().product();
            let data: Vec<f32> = (0..n).map(|_| rng.random_range(lo as f32..hi as f32)).collect();
            self.inputs.insert(name, Tensor::from_f32(&s, &data));
            self.vals.push(Val { v, lo, hi });
        }
    }

    fn step(&mut self, rng: &mut StdRng) -> bool {
        for _ in 0..30 {
            let res = if rng.random_bool(0.5) {
                let op = *UnaryOp::ALL.choose(rng).unwrap();
                let a = self.vals.choose(rng).unwrap().clone();
                if !unary_ok(op, &a) {
                    continue;
                }
                let (lo, hi) = range(|x| unary_f(op, x), a.lo, a.hi);
                (self.b.unary(op, a.v).unwrap(), lo, hi)
            } else {
                let op = *BinaryOp::ALL.choose(rng).unwrap();
                let a = self.vals.choose(rng).unwrap().clone();
                let b = self.vals.choose(rng).unwrap().clone();
                if !binary_ok(op, &a, &b) {
                    continue;
                }
                let (lo, hi) = corners(|x, y| binary_f(op, x, y), &a, &b);
                (self.b.binary(op, a.v, b.v).unwrap(), lo, hi)
            };
            let (v, lo, hi) = res;
            if !(lo.is_finite() && hi.is_finite()) || lo.abs().max(hi.abs()) > CAP {
                continue; // the node stays in the graph but is not used or output
            }
            self.vals.push(Val { v, lo, hi });
            self.computed.push(self.vals.len() - 1);
            return true;
        }
        false
    }
}

#[test]
fn random_elementwise_graphs_match_reference() {
    let dims = [1usize, 2, 3, 5, 8, 17];
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    let mut total_ops = 0;
    for seed in 0..GRAPHS {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let rank = rng.random_range(0..=3);
        let full: Vec<usize> = (0..rank).map(|_| *dims.choose(&mut rng).unwrap()).collect();
        let mut g = Gen { b: Builder::new(), vals: Vec::new(), computed: Vec::new(), inputs: HashMap::new() };
        for _ in 0..rng.random_range(1..=3) {
            g.leaf(&mut rng, &full);
        }
        // At least one leaf of the full shape, so the main output has it.
        let name = format!("in{}", g.inputs.len());
        let v = g.b.input(&name, DType::F32, shape(&full)).unwrap();
        let n: usize = full.iter().product();
        g.inputs.insert(name, Tensor::from_f32(&full, &(0..n).map(|_| rng.random_range(0.5f32..2.0)).collect::<Vec<_>>()));
        g.vals.push(Val { v, lo: 0.5, hi: 2.0 });

        for _ in 0..rng.random_range(3..=14) {
            if rng.random_bool(0.15) {
                g.leaf(&mut rng, &full);
            } else {
                g.step(&mut rng);
            }
        }
        if g.computed.is_empty() && !g.step(&mut rng) {
            continue;
        }
        total_ops += g.computed.len();
        let last = g.vals[*g.computed.last().unwrap()].v;
        g.b.output("out0", last);
        for k in 1..rng.random_range(1..=3) {
            let i = *g.computed.choose(&mut rng).unwrap();
            g.b.output(&format!("out{k}"), g.vals[i].v);
        }
        let st = stage(&format!("random_{seed}"), g.b.finish().unwrap());
        let r = check(&st, &g.inputs, &HashMap::new(), TOL);
        worst = (worst.0.max(r.worst), worst.1.max(r.max_rel), worst.2.max(r.max_abs));
    }
    eprintln!("{GRAPHS} random graphs, {total_ops} ops: worst error {:.3} of the tolerance {TOL:?}; max rel {:.2e}, max abs {:.2e}", worst.0, worst.1, worst.2);
}
