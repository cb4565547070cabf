//! Token spellings shared by the printer and the parser, kept in one place
//! so that what one writes the other reads: quoted strings, floats and
//! identifiers.

/// First character of an identifier (mnemonics, keywords, dtypes, roles).
pub(super) fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

/// Later characters of an identifier.
pub(super) fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Characters of a value name after `%` (the printer only writes digits;
/// hand-written text may use `%x`, `%h.1`).
pub(super) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// True when `s` can be written bare as an identifier.
pub(super) fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next().is_some_and(is_ident_start) && cs.all(is_ident_char)
}

/// `s` in double quotes. `"` and `\` are escaped, and so are control
/// characters, so that every statement stays on one line.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Bit pattern of the NaN that prints as plain `nan`.
pub(super) const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

/// A float that reads back bit-exact: Rust's shortest round-trip `{:?}`
/// form (`1.0`, `-0.0`, `1e-7`, `5e-324`, `inf`, `-inf`), `nan` for the
/// canonical NaN and `nan(0x…)` with all 64 bits for any other NaN.
pub(super) fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        if v.to_bits() == CANONICAL_NAN {
            "nan".to_string()
        } else {
            format!("nan(0x{:016x})", v.to_bits())
        }
    } else {
        format!("{v:?}")
    }
}
