//! Unit tests of `const-fold` for what the lit tests cannot set up: no
//! checkpoint in the context, a missing weight, and names across stages.

use super::ConstFold;
use crate::pass::{Pass, PassContext};
use omnic_ir::eval::Tensor;
use omnic_ir::text::{parse_graph, print_graph};
use omnic_ir::{Graph, Program, Stage};
use std::collections::HashMap;

const MIXED: &str = r#"graph {
  %0 = input "x" : f32[4]
  %1 = param "w" : f32[4]
  %2 = neg(%1) : f32[4]
  %3 = constant [2.0] : f32[]
  %4 = exp(%3) : f32[]
  %5 = mul(%0, %2) : f32[4]
  %6 = mul(%5, %4) : f32[4]
  output "y" = %6
}"#;

fn stat(cx: &PassContext, what: &str) -> i64 {
    cx.stats.get(&("const-fold".to_string(), what.to_string())).copied().unwrap_or(0)
}

#[test]
fn without_weights_only_constants_fold() {
    let mut g = parse_graph(MIXED).unwrap();
    let mut cx = PassContext::default();
    assert!(ConstFold.run_on_graph(&mut g, &mut cx).unwrap());
    let text = print_graph(&g);
    assert!(text.contains("neg("), "{text}");
    assert!(!text.contains("exp("), "{text}");
    assert!(text.contains("constant [7.389056"), "{text}");
    assert_eq!((stat(&cx, "nodes folded"), stat(&cx, "weights derived"), stat(&cx, "constants created")), (1, 0, 1));
}

#[test]
fn a_missing_weight_is_an_error() {
    let mut g = parse_graph(MIXED).unwrap();
    let weights: HashMap<String, Tensor> = HashMap::new();
    let mut cx = PassContext::with_weights(&weights);
    let err = ConstFold.run_on_graph(&mut g, &mut cx).unwrap_err().to_string();
    assert!(err.contains("`w`"), "{err}");
}

fn transposed() -> Graph {
    parse_graph(
        r#"graph {
  %0 = input "x" : f32[2,16]
  %1 = param "w" : f32[16,8]
  %2 = transpose(%1) {perm=[1,0]} : f32[8,16]
  %3 = linear(%0, %2) {bias=false} : f32[2,8]
  output "y" = %3
}"#,
    )
    .unwrap()
}

#[test]
fn derived_names_are_fresh_across_stages() {
    // Stage b folds a different weight: a second name; stage c folds the
    // same weight as a: the same derived tensor, stored once.
    let other = parse_graph(&print_graph(&transposed()).replace("param \"w\"", "param \"w2\"")).unwrap();
    let mut p = Program::single("a", transposed());
    p.stages.push(Stage { name: "b".into(), graph: other });
    p.stages.push(Stage { name: "c".into(), graph: transposed() });
    let w = Tensor::from_f32(&[16, 8], &(0..128).map(|i| i as f32).collect::<Vec<_>>());
    let w2 = Tensor::from_f32(&[16, 8], &(0..128).map(|i| -(i as f32)).collect::<Vec<_>>());
    let weights: HashMap<String, Tensor> = HashMap::from([("w".to_string(), w), ("w2".to_string(), w2)]);
    let mut cx = PassContext::with_weights(&weights);
    assert!(ConstFold.run(&mut p, &mut cx).unwrap());
    let names: Vec<&String> = cx.derived.keys().collect();
    assert_eq!(names, ["folded.0.transpose", "folded.1.transpose"]);
    let params = |k: usize| p.stages[k].graph.params().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!((params(0), params(1), params(2)), (vec!["folded.0.transpose".to_string()], vec!["folded.1.transpose".to_string()], vec!["folded.0.transpose".to_string()]));
    assert_eq!(stat(&cx, "weights derived"), 2);
    let t = &cx.derived["folded.0.transpose"];
    assert_eq!(t.shape, [8, 16]);
    // Element [i, j] of the transpose is w[j, i] = 8j + i.
    assert_eq!(t.to_f64_vec()[16 + 3], (8 * 3 + 1) as f64);
}
