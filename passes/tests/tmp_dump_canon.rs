use omnic_ir::text::{parse_graph, print_graph};
use omnic_ir::Program;
use omnic_passes::{Instrumentation, PassContext, PassManager};
#[test]
fn dump() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/canonicalize.omir")).unwrap();
    for case in text.split("// -----") {
        let start = case.find("graph {").unwrap();
        let g0 = parse_graph(&case[start..]).unwrap();
        let mut prog = Program::single("main", g0);
        let pm = PassManager::parse("canonicalize", Instrumentation { verify_each: true, stats: true, ..Default::default() }).unwrap();
        let mut cx = PassContext::default();
        let mut out = Vec::new();
        pm.run(&mut prog, &mut cx, &mut out).unwrap();
        println!("{}{}", print_graph(&prog.stages[0].graph), String::from_utf8(out).unwrap());
    }
}
