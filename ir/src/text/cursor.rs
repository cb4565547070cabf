//! A cursor over one source line: the lexical layer of the parser.
//!
//! The text form is line-oriented (one statement per line, strings never
//! span lines), so the parser hands each line to a [`Cur`] and never needs
//! to look across lines. Every read skips blanks first and treats `//` as
//! the end of the line. Errors carry the 1-based line and column (counted
//! in characters) of the offending token and say what was expected and
//! what was found.

use super::lexical::{is_ident_char, is_ident_start, is_name_char};
use crate::dtype::DType;
use crate::error::IrError;
use crate::op::TensorType;
use crate::shape::Dim;

/// Result of the parser's functions.
pub(super) type PResult<T> = Result<T, IrError>;

/// Deepest parenthesis nesting accepted in a dimension, and most `-` signs:
/// `Dim::parse` recurses on both, and hostile input must not overflow the
/// stack.
const MAX_DIM_NESTING: usize = 64;
const MAX_DIM_MINUS: usize = 256;

/// Position in one line.
pub(super) struct Cur<'a> {
    chars: &'a [char],
    pos: usize,
    /// 1-based line number, for errors.
    pub line: usize,
}

/// A parse error at `line`, `col` (both 1-based).
pub(super) fn error_at(line: usize, col: usize, message: impl Into<String>) -> IrError {
    IrError::Parse { line, col, message: message.into() }
}

impl<'a> Cur<'a> {
    pub fn new(line: usize, chars: &'a [char]) -> Self {
        Cur { chars, pos: 0, line }
    }

    /// Current position (0-based char index; column is `pos + 1`).
    pub fn pos(&mut self) -> usize {
        self.skip_ws();
        self.pos
    }

    /// An error at char index `pos` of this line.
    pub fn err_at(&self, pos: usize, message: impl Into<String>) -> IrError {
        error_at(self.line, pos + 1, message)
    }

    /// Skip blanks (not comments: a comment ends the line, see `peek`).
    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn raw(&self, i: usize) -> Option<char> {
        self.chars.get(i).copied()
    }

    /// Next meaningful character; `None` at the end of the line or at `//`.
    pub fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        match self.raw(self.pos) {
            Some('/') if self.raw(self.pos + 1) == Some('/') => None,
            c => c,
        }
    }

    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// How the next token reads in a message: "end of line" or `` `tok` ``.
    pub fn found(&mut self) -> String {
        let Some(c) = self.peek() else { return "end of line".into() };
        let start = self.pos;
        let mut end = start + 1;
        if is_name_char(c) || c == '%' || c == '#' {
            while self.raw(end).is_some_and(is_name_char) && end - start < 24 {
                end += 1;
            }
        } else if c == '"' {
            while self.raw(end).is_some_and(|c| c != '"') && end - start < 24 {
                end += 1;
            }
            end = (end + 1).min(self.chars.len());
        }
        let tok: String = self.chars[start..end].iter().collect();
        format!("`{tok}`")
    }

    /// "expected {what}, found {next token}" at the next token.
    pub fn expected(&mut self, what: &str) -> IrError {
        let found = self.found();
        let pos = self.pos;
        self.err_at(pos, format!("expected {what}, found {found}"))
    }

    /// Consume `c` if it is next.
    pub fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub fn expect(&mut self, c: char) -> PResult<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{c}`")))
        }
    }

    /// The whole line has been read (a trailing comment is fine).
    pub fn expect_end(&mut self) -> PResult<()> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.expected("end of line"))
        }
    }

    /// The identifier at the cursor, if any, without consuming it.
    pub fn peek_ident(&mut self) -> Option<String> {
        let c = self.peek()?;
        if !is_ident_start(c) {
            return None;
        }
        let mut end = self.pos;
        while self.raw(end).is_some_and(is_ident_char) {
            end += 1;
        }
        Some(self.chars[self.pos..end].iter().collect())
    }

    /// An identifier and its position; `what` names it in the error.
    pub fn ident(&mut self, what: &str) -> PResult<(String, usize)> {
        match self.peek_ident() {
            Some(s) => {
                let at = self.pos;
                self.pos += s.chars().count();
                Ok((s, at))
            }
            None => Err(self.expected(what)),
        }
    }

    /// Consume keyword `kw` if it is the next identifier.
    pub fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.peek_ident().as_deref() == Some(kw) {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    pub fn keyword(&mut self, kw: &str) -> PResult<()> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{kw}`")))
        }
    }

    /// A value name after `%` (the `%` included in the returned text), with
    /// its position.
    pub fn value_name(&mut self) -> PResult<(String, usize)> {
        let at = self.pos();
        if self.raw(at) != Some('%') {
            return Err(self.expected("a value name like `%3`"));
        }
        let mut end = at + 1;
        while self.raw(end).is_some_and(is_name_char) {
            end += 1;
        }
        if end == at + 1 {
            return Err(self.err_at(at, "expected a value name after `%`"));
        }
        self.pos = end;
        Ok((self.chars[at..end].iter().collect(), at))
    }

    /// A double-quoted string with escapes `\"`, `\\`, `\n`, `\t`, `\r`, `\u{…}`.
    pub fn string(&mut self, what: &str) -> PResult<String> {
        let start = self.pos();
        if self.raw(start) != Some('"') {
            return Err(self.expected(what));
        }
        let mut i = start + 1;
        let mut out = String::new();
        loop {
            match self.raw(i) {
                None => return Err(self.err_at(start, "unterminated string (expected a closing `\"` on the same line)")),
                Some('"') => break,
                Some('\\') => {
                    let esc = self.raw(i + 1);
                    i += 2;
                    match esc {
                        Some('"') => out.push('"'),
                        Some('\\') => out.push('\\'),
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some('r') => out.push('\r'),
                        Some('u') => {
                            let (c, next) = self.unicode_escape(i)?;
                            out.push(c);
                            i = next;
                        }
                        Some(c) => return Err(self.err_at(i - 2, format!("unknown escape `\\{c}` in string"))),
                        None => return Err(self.err_at(start, "unterminated string (expected a closing `\"` on the same line)")),
                    }
                }
                Some(c) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        self.pos = i + 1;
        Ok(out)
    }

    /// `{hex}` after `\u`, starting at `i`; returns the char and the index after `}`.
    fn unicode_escape(&self, i: usize) -> PResult<(char, usize)> {
        let bad = || self.err_at(i.saturating_sub(2), "bad escape: expected `\\u{hex}` with a Unicode scalar value");
        if self.raw(i) != Some('{') {
            return Err(bad());
        }
        let mut j = i + 1;
        while self.raw(j).is_some_and(|c| c.is_ascii_hexdigit()) && j - i <= 6 {
            j += 1;
        }
        if self.raw(j) != Some('}') || j == i + 1 {
            return Err(bad());
        }
        let hex: String = self.chars[i + 1..j].iter().collect();
        let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).ok_or_else(bad)?;
        Ok((c, j + 1))
    }

    /// Run of ASCII digits at the cursor (may be empty).
    fn digits(&mut self) -> (String, usize) {
        let at = self.pos();
        let mut end = at;
        while self.raw(end).is_some_and(|c| c.is_ascii_digit()) {
            end += 1;
        }
        self.pos = end;
        (self.chars[at..end].iter().collect(), at)
    }

    /// A non-negative integer that fits in `i64` (so the verifier's
    /// arithmetic on it stays in range).
    pub fn uint(&mut self, what: &str) -> PResult<usize> {
        let (s, at) = self.digits();
        if s.is_empty() {
            return Err(self.expected(what));
        }
        s.parse::<u64>()
            .ok()
            .filter(|&v| v <= i64::MAX as u64)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.err_at(at, format!("integer `{s}` is too large")))
    }

    /// A `u32` (block indices, result ports).
    pub fn u32(&mut self, what: &str) -> PResult<u32> {
        let (s, at) = self.digits();
        if s.is_empty() {
            return Err(self.expected(what));
        }
        s.parse::<u32>().map_err(|_| self.err_at(at, format!("integer `{s}` is too large (at most {})", u32::MAX)))
    }

    /// A float in the spelling of [`super::lexical::fmt_f64`]; also accepts
    /// a sign, integers, `infinity` and any letter case of `inf`/`nan`.
    pub fn float(&mut self, what: &str) -> PResult<f64> {
        let at = self.pos();
        let mut i = at;
        let neg = match self.raw(i) {
            Some('-') => {
                i += 1;
                true
            }
            Some('+') => {
                i += 1;
                false
            }
            _ => false,
        };
        if self.raw(i).is_some_and(is_ident_start) {
            let mut end = i;
            while self.raw(end).is_some_and(is_ident_char) {
                end += 1;
            }
            let word: String = self.chars[i..end].iter().collect();
            let v = match word.to_ascii_lowercase().as_str() {
                "inf" | "infinity" => f64::INFINITY,
                "nan" => {
                    let (v, next) = self.nan_bits(end)?;
                    end = next;
                    v
                }
                _ => return Err(self.err_at(at, format!("expected {what}, found `{word}`"))),
            };
            self.pos = end;
            return Ok(if neg { -v } else { v });
        }
        let mut end = i;
        while let Some(c) = self.raw(end) {
            let prev = if end > i { self.raw(end - 1) } else { None };
            let ok = c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || ((c == '+' || c == '-') && matches!(prev, Some('e' | 'E')));
            if !ok {
                break;
            }
            end += 1;
        }
        if end == i {
            return Err(self.expected(what));
        }
        let text: String = self.chars[at..end].iter().collect();
        let v = text.parse::<f64>().map_err(|_| self.err_at(at, format!("bad number `{text}` (expected {what})")))?;
        self.pos = end;
        Ok(v)
    }

    /// Optional `(0x…)` after `nan` at index `i`: the NaN's exact bits.
    fn nan_bits(&self, i: usize) -> PResult<(f64, usize)> {
        if self.raw(i) != Some('(') {
            return Ok((f64::NAN, i));
        }
        let bad = |m: &str| self.err_at(i, format!("bad NaN payload: {m}"));
        if self.raw(i + 1) != Some('0') || !matches!(self.raw(i + 2), Some('x' | 'X')) {
            return Err(bad("expected `nan(0x…)` with 16 hex digits"));
        }
        let mut j = i + 3;
        while self.raw(j).is_some_and(|c| c.is_ascii_hexdigit()) && j - i <= 19 {
            j += 1;
        }
        if self.raw(j) != Some(')') {
            return Err(bad("expected `)` after the hex digits"));
        }
        let hex: String = self.chars[i + 3..j].iter().collect();
        let bits = u64::from_str_radix(&hex, 16).map_err(|_| bad("expected hex digits"))?;
        let v = f64::from_bits(bits);
        if !v.is_nan() {
            return Err(bad(&format!("0x{bits:016x} is not a NaN")));
        }
        Ok((v, j + 1))
    }

    /// A `bool` attribute value.
    pub fn boolean(&mut self) -> PResult<bool> {
        if self.eat_keyword("true") {
            Ok(true)
        } else if self.eat_keyword("false") {
            Ok(false)
        } else {
            Err(self.expected("`true` or `false`"))
        }
    }

    /// A dimension expression (`8`, `batch`, `(h/2)*(w/2)`), read up to the
    /// next `,` `]` `}` or `)` outside parentheses and handed to [`Dim::parse`].
    pub fn dim(&mut self) -> PResult<Dim> {
        let at = self.pos();
        let (mut depth, mut max_depth, mut minus) = (0usize, 0usize, 0usize);
        let mut end = at;
        while let Some(c) = self.raw(end) {
            match c {
                '(' => {
                    depth += 1;
                    max_depth = max_depth.max(depth);
                }
                ')' if depth == 0 => break,
                ')' => depth -= 1,
                ',' | ']' | '}' if depth == 0 => break,
                '/' if self.raw(end + 1) == Some('/') => break,
                '-' => minus += 1,
                _ => {}
            }
            end += 1;
        }
        let text: String = self.chars[at..end].iter().collect();
        let text = text.trim_end();
        if text.is_empty() {
            return Err(self.expected("a dimension"));
        }
        // `Dim::parse` drops blanks, which would silently join `a b` into `ab`.
        let tc: Vec<char> = text.chars().collect();
        if let Some(i) = (1..tc.len()).find(|&i| tc[i].is_whitespace() && tc[..i].last().is_some_and(|c| c.is_ascii_alphanumeric())) {
            let next = tc[i..].iter().find(|c| !c.is_whitespace());
            if next.is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
                return Err(self.err_at(at + i, format!("blank inside dimension `{text}` (expected an operator between two terms)")));
            }
        }
        if max_depth > MAX_DIM_NESTING || minus > MAX_DIM_MINUS {
            return Err(self.err_at(at, format!("dimension nested too deeply (at most {MAX_DIM_NESTING} parentheses and {MAX_DIM_MINUS} `-`)")));
        }
        let d = Dim::parse(text).map_err(|e| self.err_at(at, format!("bad dimension `{text}`: {e}")))?;
        self.pos = end;
        Ok(d)
    }

    /// An element type name.
    pub fn dtype(&mut self) -> PResult<DType> {
        let (name, at) = self.ident("a dtype (f32, f16, bf16, i64, i32, bool)")?;
        name.parse::<DType>().map_err(|e| self.err_at(at, e))
    }

    /// `[d, d, ...]` (possibly empty) of dimensions.
    pub fn dims(&mut self) -> PResult<Vec<Dim>> {
        self.list(|c| c.dim())
    }

    /// `dtype[dims]`, e.g. `f32[batch,4,8,8]` or `i64[]`.
    pub fn tensor_type(&mut self) -> PResult<TensorType> {
        let dtype = self.dtype()?;
        if self.peek() != Some('[') {
            return Err(self.expected(&format!("`[` starting the shape of a `{dtype}` type")));
        }
        Ok(TensorType::new(dtype, self.dims()?))
    }

    /// `[item, item, ...]`, possibly empty.
    pub fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> PResult<T>) -> PResult<Vec<T>> {
        self.expect('[')?;
        let mut out = Vec::new();
        if self.eat(']') {
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if self.eat(']') {
                return Ok(out);
            }
            if !self.eat(',') {
                return Err(self.expected("`,` or `]`"));
            }
        }
    }
}
