//! Unit tests of the plan reader: it accepts what the pass writes and
//! rejects plans that would corrupt values.

use super::{plan_graph, read_plan};
use omnic_ir::shape::Bindings;
use omnic_ir::text::parse_graph;

const CHAIN: &str = "graph {
  %0 = input \"x\" : f32[3]
  %1 = exp(%0) : f32[3] #buffer(0)
  %2 = neg(%1) : f32[3] #buffer(1)
  %3 = abs(%2) : f32[3] #buffer(0)
  %4 = tanh(%3) : f32[3] #buffer(1)
  output \"y\" = %4
}
";

#[test]
fn reads_back_the_written_plan() {
    let mut g = parse_graph(&CHAIN.replace(" #buffer(0)", "").replace(" #buffer(1)", "")).unwrap();
    let (r, changed) = plan_graph(&mut g, &Bindings::new()).unwrap();
    assert!(changed);
    assert_eq!(g.to_string(), CHAIN);
    let plan = read_plan(&g).unwrap();
    assert_eq!(plan.len(), 2);
    assert_eq!(plan[&0].values.len(), 2);
    assert_eq!((r.buffers, r.peak_bytes, r.materialised_bytes, r.intermediate_bytes), (2, 24, 48, 48));
}

#[test]
fn rejects_overlapping_missing_and_mismatched_buffers() {
    // %2 is still read by %3 when %3 would overwrite it.
    let e = read_plan(&parse_graph(&CHAIN.replace("%3 = abs(%2) : f32[3] #buffer(0)", "%3 = abs(%2) : f32[3] #buffer(1)")).unwrap()).unwrap_err();
    assert!(e.contains("buffer 1: %3 is written while %2 is still live"), "{e}");
    let e = read_plan(&parse_graph(&CHAIN.replace(" : f32[3] #buffer(1)\n  %3", " : f32[3]\n  %3")).unwrap()).unwrap_err();
    assert!(e.contains("without a buffer: %2"), "{e}");
    let other_size = "graph {
  %0 = input \"x\" : f32[3]
  %1 = exp(%0) : f32[3] #buffer(0)
  %2 = reduce_sum(%1) {axes=[0], keep_dims=false} : f32[] #buffer(1)
  %3 = neg(%2) : f32[] #buffer(0)
  output \"y\" = %3
}
";
    let e = read_plan(&parse_graph(other_size).unwrap()).unwrap_err();
    assert!(e.contains("buffer 0 holds %1 of 12 bytes and %3 of 4 bytes"), "{e}");
}
