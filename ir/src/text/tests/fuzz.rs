//! Mutated and hostile text: the parser may return `Ok` or `Err` but must
//! never panic (nor overflow the stack).

use super::gen;
use crate::text::{parse_graph, parse_program, print_graph, print_program};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Parse `src` both ways; a panic fails the test and shows the input.
/// Returns whether either parse succeeded.
fn no_panic(src: &str) -> bool {
    let r = std::panic::catch_unwind(|| parse_graph(src).is_ok() || parse_program(src).is_ok());
    r.unwrap_or_else(|_| panic!("the parser panicked on {src:?}"))
}

/// Snippets worth splicing in: delimiters, escapes, numbers at the edges
/// of the integer types, float specials, dimension operators.
const SNIPPETS: [&str; 24] = [
    "%", "#", "(", ")", "[", "]", "{", "}", ",", ":", "=", "\"", "\\", "-", "/", "*", "//", "\n", " ", "9223372036854775807",
    "18446744073709551616", "nan(0x7ff0000000000001)", "-inf", "(((",
];

/// Numbers substituted for numbers already in the text.
const NUMBERS: [&str; 8] = ["0", "1", "4294967295", "9223372036854775807", "9223372036854775808", "99999999999999999999", "-1", "1e999"];

fn mutate(rng: &mut StdRng, text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let i = rng.random_range(0..=chars.len());
    let j = (i + rng.random_range(0..4)).min(chars.len());
    let s = |r: &[char]| r.iter().collect::<String>();
    match rng.random_range(0..6) {
        0 => s(&chars[..i]),
        1 => format!("{}{}", s(&chars[..i]), s(&chars[j..])),
        2 => format!("{}{}{}", s(&chars[..i]), SNIPPETS.choose(rng).copied().unwrap_or(""), s(&chars[i..])),
        3 => format!("{}{}{}", s(&chars[..i]), SNIPPETS.choose(rng).copied().unwrap_or(""), s(&chars[j..])),
        4 => {
            // Replace the number starting at or after i.
            let Some(st) = (i..chars.len()).find(|&k| chars[k].is_ascii_digit()) else { return text.to_string() };
            let en = (st..chars.len()).find(|&k| !chars[k].is_ascii_digit()).unwrap_or(chars.len());
            format!("{}{}{}", s(&chars[..st]), NUMBERS.choose(rng).copied().unwrap_or("0"), s(&chars[en..]))
        }
        _ => {
            // Drop, duplicate or swap whole lines.
            let mut lines: Vec<&str> = text.lines().collect();
            if lines.len() < 2 {
                return text.to_string();
            }
            let a = rng.random_range(0..lines.len());
            let b = rng.random_range(0..lines.len());
            match rng.random_range(0..3) {
                0 => {
                    lines.remove(a);
                }
                1 => lines.insert(b, lines[a]),
                _ => lines.swap(a, b),
            }
            lines.join("\n")
        }
    }
}

#[test]
fn truncated_and_mutated_text_never_panics() {
    let texts = [print_graph(&gen::graph(1)), print_graph(&gen::graph(19)), print_program(&gen::program(2))];
    let mut rng = StdRng::seed_from_u64(0xF022);
    let mut parsed_ok = 0;
    for text in &texts {
        let n = text.chars().count();
        // Every truncation point, in steps, and some single mutations.
        for k in (0..=n).step_by((n / 250).max(1)) {
            no_panic(&text.chars().take(k).collect::<String>());
        }
        for _ in 0..1000 {
            let mut m = mutate(&mut rng, text);
            if rng.random_bool(0.3) {
                m = mutate(&mut rng, &m);
            }
            parsed_ok += no_panic(&m) as usize;
        }
    }
    // Some mutations (inside strings, in whitespace) leave the text valid.
    assert!(parsed_ok > 0);
}

#[test]
fn hostile_inputs_never_panic() {
    let wrap = |body: &str| format!("graph {{\n{body}\n  output \"y\" = %0\n}}\n");
    let deep = "(".repeat(100_000);
    let minus = "-".repeat(100_000);
    let cases = [
        String::new(),
        "graph".into(),
        "graph {".into(),
        "}".into(),
        "\u{feff}graph {\n}".into(),
        "graph {\r\n}\r\n".into(),
        "\"".repeat(3),
        wrap(&format!("  %0 = input \"x\" : f32[{deep}]")),
        wrap(&format!("  %0 = input \"x\" : f32[{minus}1]")),
        wrap(&format!("  %0 = input \"x\" : f32[{}]", "1+".repeat(50_000) + "1")),
        wrap("  %0 = input \"x\" : f32[9223372036854775807*9223372036854775807*3]"),
        wrap("  %0 = input \"x\" : f32[0-9223372036854775807-1-1]"),
        wrap("  %0 = input \"x\" : f32[(x/9223372036854775807)/9223372036854775807]"),
        wrap("  %0 = input \"x\" : f32[9223372036854775807]\n  %1 = pad(%0) {pads=[(9223372036854775807,9223372036854775807)], value=0.0} : f32[1]"),
        wrap("  %0 = constant [] {dtype=f32, shape=[4294967296,4294967296,4294967296,0]} : f32[]"),
        wrap("  %0 = constant [1.0] {dtype=f32, shape=[0,9223372036854775807,9223372036854775807]} : f32[]"),
        wrap(
            "  %0 = input \"x\" : f32[1,1,-9223372036854775807-1,2]\n  %1 = param \"w\" : f32[1,1,-9223372036854775807-1,1]\n  \
             %2 = conv(%0, %1) {stride=[9223372036854775807,1], padding=[9223372036854775807,0], dilation=[9223372036854775807,1], groups=1, bias=false} : f32[1]",
        ),
        wrap("  %0 = input \"x\" : f32[1,-9223372036854775807-1]\n  %1 = group_norm(%0) {groups=9223372036854775807, eps=0.0, affine=false} : f32[1]"),
        wrap("  %0 = input \"x\" : f32[-9223372036854775807-1]\n  %1 = topk(%0) {k=9223372036854775807} : f32[1], i64[1]"),
        wrap("  %0 = input \"x\" : f32[2]\n  %1 = slice(%0) {axis=0, start=-9223372036854775807-1, end=9223372036854775807} : f32[1]"),
        wrap("  %0 = input \"x\" : f32[2]\n  %1 = upsample_nearest(%0) {scale=[9223372036854775807,9223372036854775807]} : f32[1]"),
        wrap("  %0 = input \"x\" : f32[2]\n  %1 = reshape(%0) {shape=[9223372036854775807,9223372036854775807,9223372036854775807]} : f32[1]"),
        wrap("  %0 = input \"x\" : f32[2] #block(99999999999) loc(\"\\u{d800}\")"),
        wrap("  %0 = input \"x\\u{110000}\" : f32[2]"),
        wrap("  %0:4294967295 = input \"x\" : f32[2]"),
        wrap("  %0 = input \"x\" : f32[2]\n  %1 = exp(%0#4294967295) : f32[2]"),
    ];
    for c in &cases {
        no_panic(c);
    }
}

