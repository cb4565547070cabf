//! The `tokenizers` crate on the test tokenizer.json against the Python
//! library's ids and texts (tests/fixtures/tokenizer/expected.json, written
//! by tests/fixtures/generators/tokenizer.py).

use super::*;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer").join(name)
}

#[test]
fn tokenizer_matches_python_tokenizers() {
    let text = std::fs::read_to_string(fixture("tokenizer.json")).unwrap();
    let tok = parse_tokenizer("tokenizer.json", &text).unwrap();
    let want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    for case in want["encode"].as_array().unwrap() {
        let enc = tok.encode(case["text"].as_str().unwrap(), true).unwrap();
        let ids: Vec<u64> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(enc.get_ids().iter().map(|&i| i as u64).collect::<Vec<_>>(), ids, "{}", case["text"]);
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), case["decoded"].as_str().unwrap());
    }
    let ids: Vec<u32> = want["decode"]["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(tok.decode(&ids, true).unwrap(), want["decode"]["text"].as_str().unwrap());
}

#[test]
fn bad_tokenizer_names_its_source() {
    let e = parse_tokenizer("x/tokenizer.json", "{ nope").unwrap_err().to_string();
    assert!(e.starts_with("x/tokenizer.json: not a usable tokenizer.json"), "{e}");
}
