//! Unit tests of the canonicalize pass: statistics and limits, idempotence
//! over the lit cases, and rule-table sanity. Rule behaviour itself is
//! tested in `passes/tests/canonicalize.omir`.

use super::{rules, Canonicalize, ITER_LIMIT, NAME};
use crate::differential::{bind_all, max_output_diff, random_inputs, random_weights};
use crate::pass::{Pass, PassContext};
use omnic_ir::text::{parse_graph, print_graph};
use omnic_ir::{Builder, DType, Dim, Graph};
use std::collections::HashSet;

fn run(g: &mut Graph) -> (bool, PassContext<'static>) {
    let mut cx = PassContext::default();
    let changed = Canonicalize.run_on_graph(g, &mut cx).expect("canonicalize runs");
    (changed, cx)
}

fn stat(cx: &PassContext, what: &str) -> i64 {
    cx.stats.get(&(NAME.to_string(), what.to_string())).copied().unwrap_or(0)
}

#[test]
fn rule_names_are_unique() {
    let rs = rules::rules().expect("rules parse");
    let names: HashSet<String> = rs.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(names.len(), rs.len());
}

#[test]
fn nothing_to_rewrite_reports_no_change() {
    let text = "graph {\n  %0 = input \"x\" : f32[2,3]\n  %1 = transpose(%0) {perm=[1,0]} : f32[3,2]\n  %2 = exp(%1) : f32[3,2]\n  output \"y\" = %2\n}\n";
    let mut g = parse_graph(text).unwrap();
    let (changed, cx) = run(&mut g);
    assert!(!changed);
    assert_eq!(print_graph(&g), text);
    assert_eq!(stat(&cx, "stop reason: saturated"), 1);
    assert_eq!(stat(&cx, "rewrites applied"), 0);
    assert!(stat(&cx, "e-nodes") > 0);
}

/// `x·c₁·c₂·…·c₃₀₀`: each iteration only merges scales the previous one
/// brought together, so the whole chain needs more iterations than the
/// limit allows; the runner stops on the limit, and what it found so far
/// is still exact and much smaller.
#[test]
fn long_scale_chain_stops_at_the_iteration_limit_and_stays_exact() {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![Dim::sym("n")]).unwrap();
    let mut y = x;
    for i in 0..300 {
        y = b.mul_scalar(y, if i % 2 == 0 { 1.001 } else { 0.999 }).unwrap();
    }
    b.output("y", y);
    let g0 = b.finish().unwrap();
    let mut g = g0.clone();
    let (changed, cx) = run(&mut g);
    assert!(changed);
    assert_eq!(stat(&cx, "stop reason: iteration limit"), 1, "stats: {:?}", cx.stats);
    assert_eq!(stat(&cx, "iterations"), ITER_LIMIT as i64);
    assert!(g.op_count() < 300 / 4, "{} ops left", g.op_count());
    let bind = bind_all(&g0, 5);
    let w = random_weights(&g0, &bind, 1).unwrap();
    let inputs = random_inputs(&g0, &bind, 2, 3).unwrap();
    assert!(max_output_diff(&g0, &w, &g, &w, &inputs).unwrap() < 1e-5);
}

/// A second run over the result of the first finds nothing to change:
/// the extracted forms are fixed points of the cost function.
#[test]
fn idempotent_on_every_lit_case() {
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/canonicalize.omir")).unwrap();
    for (i, case) in file.split("// -----").enumerate() {
        let start = case.find("graph {").unwrap();
        let mut g = parse_graph(&case[start..]).unwrap();
        run(&mut g);
        let once = print_graph(&g);
        let (changed, _) = run(&mut g);
        assert!(!changed, "case {}: second run changed\n{once}\n->\n{}", i + 1, print_graph(&g));
    }
}
