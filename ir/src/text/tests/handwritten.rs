//! A hand-written graph and program parsed into an exactly known structure.

use crate::dtype::DType;
use crate::graph::{Annotation, Role, ValueRef};
use crate::op::{BinaryOp, Literal, Op, ReduceOp, TensorType};
use crate::program::Control;
use crate::shape::Dim;
use crate::text::{parse_graph, parse_program, print_graph};
use petgraph::stable_graph::NodeIndex;

const GRAPH: &str = r#"
// A hand-written graph: comments, blank lines, free spacing, own names.
graph {
  %x   = input "hidden \"states\"" : f32[batch, 4, (h/2)*(w/2)]   // input
  %w   = param "proj.weight" : f32[8,4]

  %t   = transpose( %x ) { perm = [0,2,1] } : f32[batch,(h/2)*(w/2),4]
  %y   = linear(%t, %w) {bias=false} : f32[batch,(h/2)*(w/2),8] #block(0) #role(modulated_input) loc("blocks.0.proj")
  %s:2 = split(%y) {sizes=[3,5], axis=2} : f32[batch,(h/2)*(w/2),3], f32[batch,(h/2)*(w/2),5]
  %c   = constant [-inf, 1e-300, nan, -0.0, 2, 5e-324] : f32[2,3]
  %m   = reduce_mean(%s#0) {axes=[1], keep_dims=true} : f32[batch,1,3] loc("a\\b\n") #role("residual_in") #block(7)
  %a   = add(%m, %c#0) : f32[batch,2,3]
  output "sum" = %a
  output "rest" = %s#1
}
// trailing comment
"#;

#[test]
fn hand_written_graph_has_the_expected_structure() {
    let g = parse_graph(GRAPH).unwrap_or_else(|e| panic!("{e}"));
    let sym = |s: &str| Dim::parse(s).expect("dim");
    let hw = sym("(h/2)*(w/2)");
    let f32t = |dims: Vec<Dim>| TensorType::new(DType::F32, dims);
    assert_eq!(g.len(), 8);
    let n = |i: usize| NodeIndex::new(i);
    // Nodes are created in text order.
    let ops: Vec<&Op> = (0..8).map(|i| &g.node(n(i)).op).collect();
    assert_eq!(*ops[0], Op::Input { name: "hidden \"states\"".into(), ty: f32t(vec![sym("batch"), 4.into(), hw.clone()]) });
    assert_eq!(*ops[1], Op::Param { name: "proj.weight".into(), ty: f32t(vec![8.into(), 4.into()]) });
    assert_eq!(*ops[2], Op::Transpose { perm: vec![0, 2, 1] });
    assert_eq!(*ops[3], Op::Linear { bias: false });
    assert_eq!(*ops[4], Op::Split { axis: 2, sizes: vec![3.into(), 5.into()] });
    let Op::Constant(Literal { dtype, shape, values }) = ops[5] else { panic!("constant expected, got {:?}", ops[5]) };
    assert_eq!((*dtype, shape.as_slice()), (DType::F32, &[2usize, 3][..]));
    let bits: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
    let want = [f64::NEG_INFINITY, 1e-300, f64::NAN, -0.0, 2.0, 5e-324].map(f64::to_bits);
    assert_eq!(bits, want);
    assert_eq!(*ops[6], Op::Reduce { op: ReduceOp::Mean, axes: vec![1], keep_dims: true });
    assert_eq!(*ops[7], Op::Binary(BinaryOp::Add));

    assert_eq!(g.operands(n(3)), vec![ValueRef::new(n(2), 0), ValueRef::new(n(1), 0)]);
    assert_eq!(g.operands(n(6)), vec![ValueRef::new(n(4), 0)]);
    assert_eq!(g.operands(n(7)), vec![ValueRef::new(n(6), 0), ValueRef::new(n(5), 0)]);
    assert_eq!(g.node(n(4)).outputs.len(), 2);
    assert_eq!(g.node(n(4)).outputs[1], f32t(vec![sym("batch"), hw.clone(), 5.into()]));
    assert_eq!(g.node(n(3)).annotations, vec![Annotation::Block(0), Annotation::Role(Role::ModulatedInput)]);
    assert_eq!(g.node(n(3)).label.as_deref(), Some("blocks.0.proj"));
    assert_eq!(g.node(n(6)).annotations, vec![Annotation::Role(Role::Other("residual_in".into())), Annotation::Block(7)]);
    assert_eq!(g.node(n(6)).label.as_deref(), Some("a\\b\n"));
    assert_eq!(g.node(n(0)).label, None);
    assert_eq!(g.outputs, vec![("sum".to_string(), ValueRef::new(n(7), 0)), ("rest".to_string(), ValueRef::new(n(4), 1))]);

    // The canonical print renames values %0.. and normalises spacing.
    let printed = print_graph(&g);
    assert!(printed.contains("  %4:2 = split(%3) {axis=2, sizes=[3,5]} : f32[batch,(h/2)*(w/2),3], f32[batch,(h/2)*(w/2),5]\n"), "{printed}");
    assert!(printed.contains("  %5 = constant [-inf, 1e-300, nan, -0.0, 2.0, 5e-324] : f32[2,3]\n"), "{printed}");
    assert!(printed.contains("  output \"rest\" = %4#1\n"), "{printed}");
    assert_eq!(print_graph(&parse_graph(&printed).expect("reparse")), printed);
}

#[test]
fn hand_written_program_has_the_expected_structure() {
    let text = "meta \"arch\" = \"flux\"\r\nstage \"encode\" {\r\n  %0 = input \"x\" : f32[2]\r\n  %1 = exp(%0) : f32[2]\r\n  output \"y\" = %1\r\n}\r\n\r\ncontrol forward \"encode\"\r\nmeta \"source\" = \"/models/x\"\r\n";
    let p = parse_program(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.stages.len(), 1);
    assert_eq!(p.stages[0].name, "encode");
    assert_eq!(p.stages[0].graph.len(), 2);
    assert_eq!(p.control, Control::Forward { stage: "encode".into() });
    let meta: Vec<(&str, &str)> = p.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(meta, vec![("arch", "flux"), ("source", "/models/x")]);
    assert_eq!(
        p.to_string(),
        "meta \"arch\" = \"flux\"\nmeta \"source\" = \"/models/x\"\nstage \"encode\" {\n  %0 = input \"x\" : f32[2]\n  %1 = exp(%0) : f32[2]\n  output \"y\" = %1\n}\ncontrol forward \"encode\"\n"
    );
}

/// The examples in the module doc must parse and print back unchanged.
#[test]
fn module_doc_examples_round_trip() {
    let doc: String = include_str!("../mod.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let blocks: Vec<&str> = doc.split("```text\n").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert!(blocks.len() >= 2, "doc examples not found");
    let g = parse_graph(blocks[0]).unwrap_or_else(|e| panic!("{e}\n{}", blocks[0]));
    let without_comment = blocks[0].replace("   // comments run to the end of the line", "");
    assert_eq!(print_graph(&g), without_comment);
    let p = parse_program(blocks[1]).unwrap_or_else(|e| panic!("{e}\n{}", blocks[1]));
    assert_eq!(p.to_string(), blocks[1]);
}
