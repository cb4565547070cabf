//! `print(parse(print(g))) == print(g)` on generated graphs and programs,
//! plus a structural comparison that checks floats bit for bit.

use super::gen;
use crate::graph::Graph;
use crate::op::Op;
use crate::text::attrs::all_mnemonics;
use crate::text::{parse_graph, parse_program, print_graph, print_program};
use std::collections::BTreeSet;

/// Every f64 held by an op, as bits.
fn float_bits(op: &Op) -> Vec<u64> {
    match op {
        Op::Constant(lit) => lit.values.iter().map(|v| v.to_bits()).collect(),
        Op::LayerNorm { eps, .. } | Op::RmsNorm { eps, .. } | Op::GroupNorm { eps, .. } => vec![eps.to_bits()],
        Op::Attention { scale, .. } => scale.iter().map(|v| v.to_bits()).collect(),
        Op::Pad { value, .. } => vec![value.to_bits()],
        _ => vec![],
    }
}

/// Same nodes (op, types, annotations, label, operands) in the same
/// topological order, and the same outputs.
pub(super) fn assert_same(a: &Graph, b: &Graph) {
    let (oa, ob) = (a.topo_order().expect("acyclic"), b.topo_order().expect("acyclic"));
    assert_eq!(oa.len(), ob.len(), "node count");
    let pos_a = crate::verify::value_names(a).expect("names");
    let pos_b = crate::verify::value_names(b).expect("names");
    for (&na, &nb) in oa.iter().zip(&ob) {
        let (x, y) = (a.node(na), b.node(nb));
        // Debug spells every NaN `NaN`; the bits are compared separately.
        assert_eq!(format!("{:?}", x.op), format!("{:?}", y.op));
        assert_eq!(float_bits(&x.op), float_bits(&y.op), "float bits of {:?}", x.op);
        assert_eq!(x.outputs, y.outputs);
        assert_eq!(x.annotations, y.annotations);
        assert_eq!(x.label, y.label);
        let ra: Vec<(usize, u32)> = a.operands(na).iter().map(|v| (pos_a[&v.node], v.port)).collect();
        let rb: Vec<(usize, u32)> = b.operands(nb).iter().map(|v| (pos_b[&v.node], v.port)).collect();
        assert_eq!(ra, rb);
    }
    let outs = |g: &Graph, pos: &std::collections::HashMap<_, usize>| -> Vec<(String, usize, u32)> {
        g.outputs.iter().map(|(n, v)| (n.clone(), pos[&v.node], v.port)).collect()
    };
    assert_eq!(outs(a, &pos_a), outs(b, &pos_b));
}

#[test]
fn generated_graphs_round_trip_and_cover_every_op() {
    let mut seen = BTreeSet::new();
    for seed in 0..120 {
        let g = gen::graph(seed);
        let text = print_graph(&g);
        let back = parse_graph(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        assert_eq!(print_graph(&back), text, "seed {seed}");
        assert_same(&g, &back);
        assert_eq!(back.to_string(), text, "Display is the printer");
        seen.extend(g.g.node_weights().map(|n| n.op.mnemonic()));
        for a in g.g.node_weights().flat_map(|n| &n.annotations) {
            seen.insert(match a {
                crate::graph::Annotation::Dispatch(_) => "#dispatch",
                crate::graph::Annotation::Buffer { result: 0, .. } => "#buffer",
                crate::graph::Annotation::Buffer { .. } => "#buffer(result=p)",
                _ => "#other",
            });
        }
    }
    for a in ["#dispatch", "#buffer", "#buffer(result=p)"] {
        assert!(seen.contains(a), "generator never emitted {a}");
    }
    let missing: Vec<_> = all_mnemonics().into_iter().filter(|m| !seen.contains(m)).collect();
    assert!(missing.is_empty(), "generator never emitted {missing:?}");
}

#[test]
fn generated_programs_round_trip() {
    for seed in 0..10 {
        let p = gen::program(seed);
        let text = print_program(&p);
        let back = parse_program(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        assert_eq!(print_program(&back), text);
        assert_eq!(back.to_string(), text);
        assert_eq!(back.metadata, p.metadata);
        assert_eq!(back.control, p.control);
        assert_eq!(back.stages.len(), p.stages.len());
        for (a, b) in p.stages.iter().zip(&back.stages) {
            assert_eq!(a.name, b.name);
            assert_same(&a.graph, &b.graph);
        }
    }
}

#[test]
fn floats_print_bit_exact() {
    use crate::text::lexical::fmt_f64;
    let specials = [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7ff0_0000_0000_0001),
        f64::from_bits(0xfff4_0000_dead_beef),
        5e-324,
        f64::MAX,
        f64::MIN,
        1e-7,
        0.1 + 0.2,
    ];
    for v in specials {
        let s = fmt_f64(v);
        let chars: Vec<char> = s.chars().collect();
        let back = crate::text::cursor::Cur::new(1, &chars).float("a number").unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(back.to_bits(), v.to_bits(), "{s}");
    }
    assert_eq!(fmt_f64(f64::NAN), "nan");
    assert_eq!(fmt_f64(f64::NEG_INFINITY), "-inf");
    assert_eq!(fmt_f64(1e-5), "1e-5");
}

#[test]
fn mismatched_source_fields_are_printed() {
    // A constant whose literal disagrees with its recorded type: the printer
    // must show the literal's own dtype and shape instead of hiding them.
    use crate::dtype::DType;
    use crate::op::{Literal, TensorType};
    let mut g = Graph::new();
    let lit = Literal { dtype: DType::F16, shape: vec![2], values: vec![1.0, 2.0] };
    g.add_unchecked(Op::Constant(lit), &[], vec![TensorType::new(DType::F32, vec![2.into()])]);
    let t = print_graph(&g);
    assert!(t.contains("%0 = constant [1.0, 2.0] {dtype=f16, shape=[2]} : f32[2]"), "{t}");
}

