//! One test per kind of parse error: each checks the 1-based line and
//! column and that the message names what was expected and found.

use crate::error::IrError;
use crate::text::{parse_graph, parse_program};

/// The error of parsing `src` with `parse` must sit on `line` at the first
/// occurrence of `at` in that line (or column `at.len()+1` past its end
/// when `at` is "$"), with a message containing `msg`.
fn check(result: Result<impl std::fmt::Debug, IrError>, src: &str, line: usize, at: &str, msg: &str) {
    let text = src.lines().nth(line - 1).unwrap_or("");
    let col = if at == "$" {
        text.chars().count() + 1
    } else {
        let byte = text.find(at).unwrap_or_else(|| panic!("`{at}` not on line {line}: {text}"));
        text[..byte].chars().count() + 1
    };
    match result {
        Err(IrError::Parse { line: l, col: c, message }) => {
            assert!(message.contains(msg), "message `{message}` lacks `{msg}`");
            assert_eq!((l, c), (line, col), "position of `{message}`");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

fn graph(src: &str, line: usize, at: &str, msg: &str) {
    check(parse_graph(src), src, line, at, msg);
}

fn program(src: &str, line: usize, at: &str, msg: &str) {
    check(parse_program(src), src, line, at, msg);
}

const X: &str = "  %0 = input \"x\" : f32[2,3]\n";

#[test]
fn unknown_op_mnemonic() {
    let src = format!("graph {{\n{X}  %1 = frobnicate(%0) : f32[2,3]\n  output \"y\" = %1\n}}\n");
    graph(&src, 3, "frobnicate", "unknown op `frobnicate`");
}

#[test]
fn unknown_value() {
    let src = format!("graph {{\n{X}  %1 = exp(%7) : f32[2,3]\n  output \"y\" = %1\n}}\n");
    graph(&src, 3, "%7", "unknown value `%7`");
}

#[test]
fn use_before_definition() {
    let src = "graph {\n  %1 = exp(%0) : f32[2]\n  %0 = input \"x\" : f32[2]\n  output \"y\" = %1\n}\n";
    graph(src, 2, "%0", "unknown value `%0` (not defined above this line)");
}

#[test]
fn bad_dtype() {
    let src = "graph {\n  %0 = input \"x\" : f33[2]\n  output \"y\" = %0\n}\n";
    graph(src, 2, "f33", "unknown dtype `f33`");
}

#[test]
fn missing_attribute() {
    let src = format!("graph {{\n{X}  %1 = concat(%0, %0) : f32[4,3]\n  output \"y\" = %1\n}}\n");
    graph(&src, 3, ": f32[4", "missing attribute `axis` for `concat`");
    let src = format!("graph {{\n{X}  %1 = split(%0) {{axis=0}} : f32[2,3]\n  output \"y\" = %1\n}}\n");
    graph(&src, 3, "{axis", "missing attribute `sizes` for `split`");
}

#[test]
fn unknown_and_duplicate_attributes() {
    let src = format!("graph {{\n{X}  %1 = concat(%0) {{axis=0, dim=1}} : f32[2,3]\n  output \"y\" = %1\n}}\n");
    graph(&src, 3, "dim=", "unknown attribute `dim` for `concat` (expected one of `axis`)");
    let src = format!("graph {{\n{X}  %1 = concat(%0) {{axis=0, axis=1}} : f32[2,3]\n  output \"y\" = %1\n}}\n");
    graph(&src, 3, "axis=1", "duplicate attribute `axis`");
    let src = format!("graph {{\n{X}  %1 = exp(%0) {{axis=0}} : f32[2,3]\n  output \"y\" = %1\n}}\n");
    graph(&src, 3, "axis", "`exp` takes no attributes, found `axis`");
}

#[test]
fn wrong_attribute_value() {
    let src = format!("graph {{\n{X}  %1 = linear(%0, %0) {{bias=yes}} : f32[2,2]\n  output \"y\" = %1\n}}\n");
    graph(&src, 3, "yes", "expected `true` or `false`, found `yes`");
    let src = format!("graph {{\n{X}  %1 = transpose(%0) {{perm=1}} : f32[3,2]\n  output \"y\" = %1\n}}\n");
    graph(&src, 3, "1}", "expected a list of unsigned integers like `[0,1]`, found `1`");
    let src = format!("graph {{\n{X}  %1 = softmax(%0) {{axis=-1}} : f32[2,3]\n  output \"y\" = %1\n}}\n");
    graph(&src, 3, "-1", "expected an unsigned integer, found `-`");
    let src = format!("graph {{\n{X}  %1 = softmax(%0) {{axis=99999999999999999999}} : f32[2,3]\n  output \"y\" = %1\n}}\n");
    graph(&src, 3, "999", "integer `99999999999999999999` is too large");
}

#[test]
fn duplicate_definition() {
    let src = format!("graph {{\n{X}  %1 = exp(%0) : f32[2,3]\n  %1 = exp(%0) : f32[2,3]\n  output \"y\" = %1\n}}\n");
    graph(&src, 4, "%1", "duplicate definition of `%1` (first defined at line 3)");
}

#[test]
fn bad_dimension() {
    let src = "graph {\n  %0 = input \"x\" : f32[2,a/b]\n  output \"y\" = %0\n}\n";
    graph(src, 2, "a/b", "bad dimension `a/b`");
    let deep = format!("graph {{\n  %0 = input \"x\" : f32[{}1{}]\n  output \"y\" = %0\n}}\n", "(".repeat(100), ")".repeat(100));
    graph(&deep, 2, "(", "dimension nested too deeply");
    let src = "graph {\n  %0 = input \"x\" : f32[batch size]\n  output \"y\" = %0\n}\n";
    graph(src, 2, " size", "blank inside dimension `batch size`");
    let src = "graph {\n  %0 = input \"x\" : f32[2,]\n  output \"y\" = %0\n}\n";
    graph(src, 2, "]", "expected a dimension, found `]`");
}

#[test]
fn multi_result_uses() {
    let head = "graph {\n  %0 = input \"x\" : f32[4]\n  %1:2 = split(%0) {axis=0, sizes=[1,3]} : f32[1], f32[3]\n";
    graph(&format!("{head}  output \"y\" = %1\n}}\n"), 4, "%1", "`%1` has 2 results: use one of `%1#0` … `%1#1`");
    graph(&format!("{head}  output \"y\" = %1#2\n}}\n"), 4, "2", "`%1` has 2 result(s), so there is no `%1#2`");
}

#[test]
fn result_count_mismatch() {
    let src = "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = split(%0) {axis=0, sizes=[1,3]} : f32[1], f32[3]\n  output \"y\" = %1\n}\n";
    graph(src, 3, "f32[1]", "`%1` has one result but 2 result types follow (write `%1:2`");
    let src = "graph {\n  %0 = input \"x\" : f32[4]\n  %1:3 = split(%0) {axis=0, sizes=[1,3]} : f32[1], f32[3]\n  output \"y\" = %1#0\n}\n";
    graph(src, 3, "f32[1]", "`%1:3` declares 3 results but 2 result types follow");
}

#[test]
fn type_error_is_reported_at_its_node() {
    // The verifier finds that exp of f32[2,3] is not f32[3,2]; the error
    // points at the mnemonic and uses the names of the text.
    let src = "graph {\n  %in = input \"x\" : f32[2,3]\n  %out = exp(%in) : f32[3,2]\n  output \"y\" = %out\n}\n";
    graph(src, 3, "exp", "type error in `exp` defining `%out`: recorded type f32[3,2] but operands give f32[2,3]");
    let src = "graph {\n  %a = input \"x\" : f32[2]\n  %b = input \"x\" : i64[2]\n  %c = add(%a, %b) : f32[2]\n  output \"y\" = %c\n}\n";
    graph(src, 3, "input", "duplicate input name `x`");
    let src = "graph {\n  %a = input \"x\" : f32[2]\n  %b = input \"z\" : i64[2]\n  %c = add(%a, %b) : f32[2]\n  output \"y\" = %c\n}\n";
    graph(src, 4, "add", "dtypes differ (f32 vs i64) (operands %a: f32[2], %b: i64[2])");
}

#[test]
fn constant_errors() {
    let src = "graph {\n  %0 = constant [1.0, 2.0] : f32[3]\n  output \"y\" = %0\n}\n";
    graph(src, 2, "[1.0", "constant of shape [3] needs 3 values, found 2");
    let src = "graph {\n  %0 = constant [1.0] : f32[n]\n  output \"y\" = %0\n}\n";
    graph(src, 2, "f32[n]", "a constant needs a static result type, found f32[n]");
    let src = "graph {\n  %0 = constant [1.0, bogus] : f32[2]\n  output \"y\" = %0\n}\n";
    graph(src, 2, "bogus", "expected a number, found `bogus`");
    let src = "graph {\n  %0 = constant [nan(0x0)] : f32[]\n  output \"y\" = %0\n}\n";
    graph(src, 2, "(0x0)", "0x0000000000000000 is not a NaN");
}

#[test]
fn string_errors() {
    let src = "graph {\n  %0 = input \"x : f32[2]\n  output \"y\" = %0\n}\n";
    graph(src, 2, "\"x", "unterminated string");
    let src = "graph {\n  %0 = input \"x\\q\" : f32[2]\n  output \"y\" = %0\n}\n";
    graph(src, 2, "\\q", "unknown escape `\\q` in string");
}

#[test]
fn structure_errors() {
    graph("", 1, "$", "expected `graph {`, found end of input");
    graph("// nothing\ngraf {\n", 2, "graf", "expected `graph`, found `graf`");
    let unclosed = format!("graph {{\n{X}  output \"y\" = %0\n");
    graph(&unclosed, 4, "$", "expected `}` closing `graph {` from line 1, found end of input");
    graph(&format!("graph {{\n{X}}}\n"), 3, "}", "graph has no outputs");
    graph(&format!("graph {{\n{X}  output \"y\" = %0\n}}\ngraph {{\n"), 5, "graph", "expected end of input after the graph, found `graph`");
    graph(&format!("graph {{\n{X}  output \"y\" = %0 %9\n}}\n"), 3, "%9", "expected end of line, found `%9`");
    graph(&format!("graph {{\n{X}  output \"y\" = %0\n  output \"y\" = %0\n}}\n"), 4, "\"y\"", "duplicate output \"y\" (first at line 3)");
    graph(&format!("graph {{\n{X}  return %0\n}}\n"), 3, "return", "expected a node `%k = …`, `output \"name\" = %k` or `}`, found `return`");
    graph(&format!("graph {{\n{X}  %1 = exp(%0) f32[2,3]\n  output \"y\" = %1\n}}\n"), 3, "f32", "expected `:` and the result type, found `f32`");
    graph("graph {\n  %0 = input \"x\" : f32[2] #blok(1)\n  output \"y\" = %0\n}\n", 2, "blok", "unknown annotation `#blok`");
    graph("graph {\n  %0 = input \"x\" : f32[2] junk\n  output \"y\" = %0\n}\n", 2, "junk", "found `junk`");
}

#[test]
fn program_errors() {
    let stage = |name: &str| format!("stage \"{name}\" {{\n  %0 = input \"x\" : f32[2]\n  output \"y\" = %0\n}}\n");
    let s = stage("a");
    program(&format!("{s}{s}control forward \"a\"\n"), 5, "\"a\"", "duplicate stage \"a\" (first at line 1)");
    program(&format!("{s}control forward \"b\"\n"), 5, "\"b\"", "control refers to unknown stage \"b\"");
    // End of input is after the final newline: line 5, column 1.
    program(&s, 5, "$", "expected a `control` statement, found end of input");
    program(&format!("{s}control forward \"a\"\ncontrol forward \"a\"\n"), 6, "control", "second `control` statement (the first is at line 5)");
    program(&format!("{s}control loop \"a\"\n"), 5, "loop", "unknown control `loop` (expected `forward`, `denoise` or `decode`)");
    // control decode: duplicate, unknown, bad and missing fields.
    let d = format!("{s}control decode {{\n");
    program(&format!("{d}  forward \"a\"\n  forward \"a\"\n}}\n"), 7, "forward", "duplicate decode field `forward` (first at line 6)");
    program(&format!("{d}  bogus \"a\"\n}}\n"), 6, "bogus", "unknown decode field `bogus`");
    program(&format!("{d}  max_len 0\n}}\n"), 6, "0", "the cache holds at least one position");
    program(&format!("{d}  eos 2\n}}\n"), 6, "2", "the stop tokens like `[2]` or `[]`");
    program(&format!("{d}  forward \"a\"\n}}\n"), 7, "}", "`control decode` is missing `prefill`");
    program("meta \"k\" = \"1\"\nmeta \"k\" = \"2\"\n", 2, "\"k\"", "duplicate metadata key \"k\" (first at line 1)");
    program("graph {\n", 1, "graph", "expected `meta`, `stage` or `control`, found `graph`");
    // Errors inside a stage keep their own lines.
    program("stage \"a\" {\n  %0 = input \"x\" : f32[2]\n  %1 = exp(%0) : f32[3]\n  output \"y\" = %1\n}\ncontrol forward \"a\"\n", 3, "exp", "type error in `exp`");
}
