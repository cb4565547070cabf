//! Movement ops fused into elementwise generics as index remapping (lazy
//! views): the interleaved rotary embedding after an RMS norm, reshape /
//! transpose / slice chains as kernel results, reshapes whose coordinates
//! refine the iteration space or stay non-linear, and concats of unit
//! pieces, against the reference evaluator on odd sizes.

use super::elementwise::{f32t, shape};
use super::support::{check, compile, stage, TOL};
use omnic_ir::{Builder, DType, Dim, UnaryOp};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

/// `rms_norm` then the interleaved rotary embedding as diffusers writes it
/// (`x.reshape(.., d/2, 2).unbind(-1)`, `stack([-x1, x0], -1).flatten`).
#[test]
fn rotary_interleaved_after_rms_norm() {
    let mut rng = StdRng::seed_from_u64(71);
    let (bs, s) = (Dim::sym("b"), Dim::sym("s"));
    for d in [10usize, 64] {
        let mut b = Builder::new();
        let x = b.input("x", DType::F32, vec![bs.clone(), 3.into(), s.clone(), d.into()]).unwrap();
        let cos = b.input("cos", DType::F32, vec![s.clone(), d.into()]).unwrap();
        let sin = b.input("sin", DType::F32, vec![s.clone(), d.into()]).unwrap();
        let w = b.param("w", DType::F32, shape(&[d])).unwrap();
        let y = b.rms_norm(x, Some(w), 1e-6).unwrap();
        let pairs = b.reshape(y, vec![bs.clone(), 3.into(), s.clone(), (d / 2).into(), 2.into()]).unwrap();
        let parts = b.split(pairs, -1, &[1.into(), 1.into()]).unwrap();
        let neg = b.unary(UnaryOp::Neg, parts[1]).unwrap();
        let rot = b.concat(&[neg, parts[0]], -1).unwrap();
        let rot = b.reshape(rot, vec![bs.clone(), 3.into(), s.clone(), d.into()]).unwrap();
        let a = b.mul(y, cos).unwrap();
        let c = b.mul(rot, sin).unwrap();
        let out = b.add(a, c).unwrap();
        b.output("out", out);
        let st = stage(&format!("rotary_{d}"), b.finish().unwrap());
        let compiled = compile(&st).unwrap();
        let rope = compiled.kernels.iter().find(|k| k.mlir.contains("math.sqrt")).expect("the rms norm kernel");
        assert!(!rope.mlir.contains("tensor.insert_slice") && !rope.mlir.contains("tensor.reshape"), "rotary not remapped:\n{}", rope.mlir);
        for (nb, ns) in [(1, 7), (2, 1)] {
            let inputs = HashMap::from([
                ("x".to_string(), f32t(&mut rng, &[nb, 3, ns, d], -2.0, 2.0)),
                ("cos".to_string(), f32t(&mut rng, &[ns, d], -1.0, 1.0)),
                ("sin".to_string(), f32t(&mut rng, &[ns, d], -1.0, 1.0)),
            ]);
            let weights = HashMap::from([("w".to_string(), f32t(&mut rng, &[d], 0.5, 1.5))]);
            check(&st, &inputs, &weights, TOL);
        }
    }
}

/// Slices of a fused projection reshaped to heads and transposed, as
/// kernel results (one generic per result, no intermediate copies), and
/// the heads merged back after an elementwise op.
#[test]
fn head_split_and_merge() {
    let mut rng = StdRng::seed_from_u64(72);
    let (n, s) = (Dim::sym("n"), Dim::sym("s"));
    let (h, d) = (3usize, 5usize);
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![n.clone(), s.clone(), (3 * h * d + 2).into()]).unwrap();
    let parts = b.split(x, -1, &[(h * d).into(), (h * d).into(), (h * d + 2).into()]).unwrap();
    let q = b.reshape(parts[0], vec![n.clone(), s.clone(), h.into(), d.into()]).unwrap();
    let q = b.transpose(q, &[0, 2, 1, 3]).unwrap();
    let k = b.reshape(parts[1], vec![n.clone(), s.clone(), h.into(), d.into()]).unwrap();
    let k = b.transpose(k, &[0, 2, 1, 3]).unwrap();
    let v = b.slice(parts[2], 2, 1.into(), (h * d + 1).into()).unwrap();
    let v = b.reshape(v, vec![n.clone(), s.clone(), h.into(), d.into()]).unwrap();
    // Merge: [n, h, s, d] -> [n, s, h, d] -> [n, s, h*d], read lazily.
    let qt = b.unary(UnaryOp::Sin, q).unwrap();
    let m = b.transpose(qt, &[0, 2, 1, 3]).unwrap();
    let m = b.reshape(m, vec![n.clone(), s.clone(), (h * d).into()]).unwrap();
    let m = b.add_scalar(m, 1.0).unwrap();
    b.output("q", q);
    b.output("k", k);
    b.output("v", v);
    b.output("m", m);
    let st = stage("heads", b.finish().unwrap());
    for (nn, ss) in [(1, 4), (2, 3)] {
        let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &[nn, ss, 3 * h * d + 2], -2.0, 2.0))]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
}

/// Reshapes whose coordinates cannot all be made linear (`[n, 6, 4]` read
/// as `[n, 4, 6]`), a concat of unit pieces on a middle axis, and a
/// transposed read of a broadcast operand.
#[test]
fn nonlinear_reshape_and_unit_concat() {
    let mut rng = StdRng::seed_from_u64(73);
    let n = Dim::sym("n");
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![n.clone(), 6.into(), 4.into()]).unwrap();
    let y = b.input("y", DType::F32, vec![n.clone(), 1.into(), 6.into()]).unwrap();
    let r = b.reshape(x, vec![n.clone(), 4.into(), 6.into()]).unwrap();
    let e = b.unary(UnaryOp::Exp, r).unwrap();
    let z = b.mul(e, y).unwrap(); // [n, 4, 6]
    let u = b.slice(x, 1, 2.into(), 3.into()).unwrap(); // [n, 1, 4]
    let w = b.slice(x, 1, 5.into(), 6.into()).unwrap();
    let nu = b.unary(UnaryOp::Neg, u).unwrap();
    let c = b.concat(&[w, nu, u], 1).unwrap(); // [n, 3, 4]
    let t = b.transpose(c, &[0, 2, 1]).unwrap(); // [n, 4, 3]
    let t = b.mul_scalar(t, 2.0).unwrap();
    b.output("z", z);
    b.output("t", t);
    let st = stage("nonlinear", b.finish().unwrap());
    for nn in [1, 3] {
        let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &[nn, 6, 4], -2.0, 2.0)), ("y".to_string(), f32t(&mut rng, &[nn, 1, 6], -1.0, 1.0))]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
}

/// A joint sequence split back into its parts after merging the heads
/// (`transpose`, `reshape`, `split` at a symbolic offset, all lazy): each
/// part is one generic reading a slice of the input that starts at the
/// symbolic offset; and static splits of a row into unit-reshaped parts.
#[test]
fn symbolic_split_of_merged_heads() {
    let mut rng = StdRng::seed_from_u64(74);
    let (n, t, i) = (Dim::sym("n"), Dim::sym("t"), Dim::sym("i"));
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![n.clone(), 3.into(), t.add(&i), 4.into()]).unwrap();
    // `tl` and `il` bind `t` and `i` (a sum binds nothing).
    let tl = b.input("tl", DType::F32, vec![t.clone()]).unwrap();
    let il = b.input("il", DType::F32, vec![i.clone()]).unwrap();
    let m = b.transpose(x, &[0, 2, 1, 3]).unwrap();
    let m = b.reshape(m, vec![n.clone(), t.add(&i), 12.into()]).unwrap();
    let parts = b.split(m, 1, &[t.clone(), i.clone()]).unwrap();
    let y = b.input("y", DType::F32, vec![n.clone(), 30.into()]).unwrap();
    let rows = b.split(y, -1, &[10.into(), 10.into(), 10.into()]).unwrap();
    let r1 = b.reshape(rows[1], vec![n.clone(), 1.into(), 10.into()]).unwrap();
    let r1 = b.add_scalar(r1, 1.0).unwrap();
    b.output("txt", parts[0]);
    b.output("img", parts[1]);
    b.output("r0", rows[0]);
    b.output("r1", r1);
    b.output("r2", rows[2]);
    b.output("tl", tl);
    b.output("il", il);
    let st = stage("joint_split", b.finish().unwrap());
    for (nn, tt, ii) in [(1, 2, 5), (2, 3, 1)] {
        let inputs = HashMap::from([
            ("x".to_string(), f32t(&mut rng, &[nn, 3, tt + ii, 4], -2.0, 2.0)),
            ("y".to_string(), f32t(&mut rng, &[nn, 30], -2.0, 2.0)),
            ("tl".to_string(), f32t(&mut rng, &[tt], -1.0, 1.0)),
            ("il".to_string(), f32t(&mut rng, &[ii], -1.0, 1.0)),
        ]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
}
