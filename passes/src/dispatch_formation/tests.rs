//! Unit tests of region forming beyond the `.omir` cases: rerunning is a
//! no-op that keeps a memory plan, and the result always verifies.

use super::form_regions;
use crate::memory_plan::{plan_graph, read_plan};
use omnic_ir::shape::Bindings;
use omnic_ir::text::parse_graph;

const FF: &str = "graph {
  %0 = input \"x\" : f32[batch,8]
  %1 = param \"w\" : f32[8,8]
  %2 = linear(%0, %1) {bias=false} : f32[batch,8]
  %3 = gelu(%2) : f32[batch,8]
  %4 = linear(%3, %1) {bias=false} : f32[batch,8]
  %5 = add(%4, %0) : f32[batch,8]
  output \"y\" = %5
}
";

#[test]
fn rerunning_changes_nothing_and_keeps_the_plan() {
    let mut g = parse_graph(FF).unwrap();
    let first = form_regions(&mut g).unwrap();
    assert!(first.changed);
    assert_eq!((first.ops, first.dispatches), (4, 2));
    let (_, planned) = plan_graph(&mut g, &Bindings::new()).unwrap();
    assert!(planned);
    let text = g.to_string();
    let again = form_regions(&mut g).unwrap();
    assert!(!again.changed, "{}", g);
    assert_eq!(g.to_string(), text);
    assert_eq!(read_plan(&g).unwrap().len(), 2);
}

#[test]
fn new_regions_drop_a_stale_plan() {
    // Plan with one kernel per op, then fuse: the old buffers are gone.
    let mut g = parse_graph(FF).unwrap();
    plan_graph(&mut g, &Bindings::new()).unwrap();
    assert!(g.to_string().contains("#buffer"));
    form_regions(&mut g).unwrap();
    assert!(!g.to_string().contains("#buffer"), "{g}");
    omnic_ir::verify::verify_graph(&g).unwrap();
}
