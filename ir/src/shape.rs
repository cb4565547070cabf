//! Shapes with static and symbolic dimensions.
//!
//! A dimension is a small integer expression over named symbols (`batch`,
//! `seq`, `h`, ...): constants, symbols, sums, products and exact division
//! by a positive constant. Expressions are kept in a canonical form (flattened,
//! constants folded, operands sorted) so that two spellings of the same simple
//! expression compare equal; the verifier compares dimensions structurally.
//!
//! ## Broadcasting
//! Elementwise ops broadcast NumPy-style: shapes are right-aligned, missing
//! leading dimensions count as 1, and two aligned dimensions are compatible
//! when they are equal or one of them is the constant 1 (the result takes the
//! other). A symbolic dimension is never assumed to be 1: `batch` against `2`
//! is an error even though `batch` may be bound to 2 at run time.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// One dimension: a canonical integer expression over symbols.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Const(i64),
    Sym(Arc<str>),
    /// Sum of at least two terms, at most one of them a constant.
    Add(Vec<Dim>),
    /// Product of at least two factors, at most one of them a constant.
    Mul(Vec<Dim>),
    /// Exact division by a constant > 1 (run-time check that it divides).
    Div(Box<Dim>, i64),
}

/// Values for the symbols of a program, bound at run time from its inputs.
pub type Bindings = HashMap<String, i64>;

impl From<i64> for Dim {
    fn from(v: i64) -> Self {
        Dim::Const(v)
    }
}
impl From<usize> for Dim {
    fn from(v: usize) -> Self {
        Dim::Const(v as i64)
    }
}
impl From<i32> for Dim {
    fn from(v: i32) -> Self {
        Dim::Const(v as i64)
    }
}
impl From<&str> for Dim {
    fn from(s: &str) -> Self {
        Dim::Sym(Arc::from(s))
    }
}

impl Dim {
    pub fn sym(name: &str) -> Dim {
        Dim::Sym(Arc::from(name))
    }

    pub fn as_const(&self) -> Option<i64> {
        match self {
            Dim::Const(v) => Some(*v),
            _ => None,
        }
    }

    pub fn is_const(&self, v: i64) -> bool {
        self.as_const() == Some(v)
    }

    /// `a + b` in canonical form. Constant folding wraps on i64 overflow
    /// (as release builds always did) so absurd sizes read from untrusted
    /// text cannot panic the parser or the verifier.
    pub fn add(&self, other: &Dim) -> Dim {
        let mut terms = Vec::new();
        let mut c = 0i64;
        for d in [self, other] {
            match d {
                Dim::Add(ts) => terms.extend(ts.iter().cloned()),
                x => terms.push(x.clone()),
            }
        }
        terms.retain(|t| match t {
            Dim::Const(v) => {
                c = c.wrapping_add(*v);
                false
            }
            _ => true,
        });
        if c != 0 || terms.is_empty() {
            terms.push(Dim::Const(c));
        }
        if terms.len() == 1 {
            return terms.pop().unwrap_or(Dim::Const(0));
        }
        terms.sort();
        Dim::Add(terms)
    }

    /// `a * b` in canonical form.
    pub fn mul(&self, other: &Dim) -> Dim {
        let mut fs = Vec::new();
        let mut c = 1i64;
        for d in [self, other] {
            match d {
                Dim::Mul(ts) => fs.extend(ts.iter().cloned()),
                x => fs.push(x.clone()),
            }
        }
        fs.retain(|t| match t {
            Dim::Const(v) => {
                c = c.wrapping_mul(*v);
                false
            }
            _ => true,
        });
        if c == 0 {
            return Dim::Const(0);
        }
        // `(x/d)·c` with `d | c` is `x·(c/d)`: exact division undone.
        let mut i = 0;
        while i < fs.len() {
            if let Dim::Div(x, d) = &fs[i] {
                if c % d == 0 {
                    c /= d;
                    let x = (**x).clone();
                    fs.remove(i);
                    match x {
                        Dim::Mul(inner) => fs.extend(inner.into_iter().filter(|f| match f {
                            Dim::Const(v) => {
                                c *= v;
                                false
                            }
                            _ => true,
                        })),
                        Dim::Const(v) => c *= v,
                        other => fs.push(other),
                    }
                    continue;
                }
            }
            i += 1;
        }
        if c != 1 || fs.is_empty() {
            fs.push(Dim::Const(c));
        }
        if fs.len() == 1 {
            return fs.pop().unwrap_or(Dim::Const(1));
        }
        fs.sort();
        Dim::Mul(fs)
    }

    /// `a - b`, for constants or when `b` is a constant.
    pub fn sub(&self, other: &Dim) -> Dim {
        match other {
            Dim::Const(v) => self.add(&Dim::Const(v.wrapping_neg())),
            _ => self.add(&other.mul(&Dim::Const(-1))),
        }
    }

    /// Exact division by a positive constant. Simplifies `(k*x)/d` when `d`
    /// divides `k`.
    pub fn div(&self, d: i64) -> Dim {
        assert!(d > 0, "Dim::div by non-positive constant {d}");
        if d == 1 {
            return self.clone();
        }
        match self {
            Dim::Const(v) => Dim::Const(v / d),
            Dim::Mul(fs) => {
                if let Some(Dim::Const(k)) = fs.iter().find(|f| matches!(f, Dim::Const(_))) {
                    if k % d == 0 {
                        let rest: Vec<Dim> = fs.iter().filter(|f| !matches!(f, Dim::Const(_))).cloned().collect();
                        let mut out = Dim::Const(k / d);
                        for f in &rest {
                            out = out.mul(f);
                        }
                        return out;
                    }
                }
                Dim::Div(Box::new(self.clone()), d)
            }
            Dim::Div(inner, d0) => Dim::Div(inner.clone(), d0.saturating_mul(d)),
            _ => Dim::Div(Box::new(self.clone()), d),
        }
    }

    /// Product of many dims (1 for none).
    pub fn product<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Dim {
        dims.into_iter().fold(Dim::Const(1), |acc, d| acc.mul(d))
    }

    /// Names of the symbols used.
    pub fn symbols(&self, out: &mut Vec<String>) {
        match self {
            Dim::Const(_) => {}
            Dim::Sym(s) => {
                if !out.iter().any(|o| o == &**s) {
                    out.push(s.to_string())
                }
            }
            Dim::Add(ts) | Dim::Mul(ts) => ts.iter().for_each(|t| t.symbols(out)),
            Dim::Div(x, _) => x.symbols(out),
        }
    }

    /// Value under `b`; errors name the unbound symbol or the inexact division.
    pub fn eval(&self, b: &Bindings) -> Result<i64, String> {
        Ok(match self {
            Dim::Const(v) => *v,
            Dim::Sym(s) => *b.get(&**s).ok_or_else(|| format!("symbol `{s}` is not bound"))?,
            Dim::Add(ts) => ts.iter().map(|t| t.eval(b)).sum::<Result<i64, _>>()?,
            Dim::Mul(ts) => ts.iter().map(|t| t.eval(b)).product::<Result<i64, _>>()?,
            Dim::Div(x, d) => {
                let v = x.eval(b)?;
                if v % d != 0 {
                    return Err(format!("`{x}` = {v} is not divisible by {d}"));
                }
                v / d
            }
        })
    }

    /// Parse the text form (`8`, `batch`, `seq+7`, `(h/2)*(w/2)`, `4*c`).
    pub fn parse(s: &str) -> Result<Dim, String> {
        let toks: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
        let mut p = DimParser { t: &toks, i: 0 };
        let d = p.expr()?;
        if p.i != toks.len() {
            return Err(format!("unexpected `{}` in dimension `{s}`", toks[p.i]));
        }
        Ok(d)
    }

    fn is_atom(&self) -> bool {
        matches!(self, Dim::Const(_) | Dim::Sym(_))
    }
}

struct DimParser<'a> {
    t: &'a [char],
    i: usize,
}

impl DimParser<'_> {
    fn peek(&self) -> Option<char> {
        self.t.get(self.i).copied()
    }
    fn expr(&mut self) -> Result<Dim, String> {
        let mut d = self.term()?;
        while let Some(c @ ('+' | '-')) = self.peek() {
            self.i += 1;
            let r = self.term()?;
            d = if c == '+' { d.add(&r) } else { d.sub(&r) };
        }
        Ok(d)
    }
    fn term(&mut self) -> Result<Dim, String> {
        let mut d = self.factor()?;
        loop {
            match self.peek() {
                Some('*') => {
                    self.i += 1;
                    let r = self.factor()?;
                    d = d.mul(&r);
                }
                Some('/') => {
                    self.i += 1;
                    match self.factor()? {
                        Dim::Const(k) if k > 0 => d = d.div(k),
                        other => return Err(format!("division by `{other}`: only positive constants divide dimensions")),
                    }
                }
                _ => return Ok(d),
            }
        }
    }
    fn factor(&mut self) -> Result<Dim, String> {
        match self.peek() {
            Some('(') => {
                self.i += 1;
                let d = self.expr()?;
                if self.peek() != Some(')') {
                    return Err("missing `)` in dimension".into());
                }
                self.i += 1;
                Ok(d)
            }
            Some('-') => {
                self.i += 1;
                Ok(self.factor()?.mul(&Dim::Const(-1)))
            }
            Some(c) if c.is_ascii_digit() => {
                let st = self.i;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
                let s: String = self.t[st..self.i].iter().collect();
                s.parse::<i64>().map(Dim::Const).map_err(|e| format!("bad integer `{s}`: {e}"))
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let st = self.i;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.i += 1;
                }
                let s: String = self.t[st..self.i].iter().collect();
                Ok(Dim::sym(&s))
            }
            Some(c) => Err(format!("unexpected `{c}` in dimension")),
            None => Err("empty dimension".into()),
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paren = |d: &Dim, f: &mut fmt::Formatter<'_>| {
            if d.is_atom() {
                write!(f, "{d}")
            } else {
                write!(f, "({d})")
            }
        };
        match self {
            Dim::Const(v) => write!(f, "{v}"),
            Dim::Sym(s) => write!(f, "{s}"),
            Dim::Add(ts) => {
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str("+")?;
                    }
                    paren(t, f)?;
                }
                Ok(())
            }
            Dim::Mul(ts) => {
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str("*")?;
                    }
                    paren(t, f)?;
                }
                Ok(())
            }
            Dim::Div(x, d) => {
                paren(x, f)?;
                write!(f, "/{d}")
            }
        }
    }
}

/// A tensor shape: one [`Dim`] per axis (rank 0 = scalar).
pub type Shape = Vec<Dim>;

/// Render a shape as `[a,b,c]`.
pub fn shape_str(s: &[Dim]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// Shapes from concrete sizes.
pub fn static_shape(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| Dim::Const(d as i64)).collect()
}

/// The broadcast of two shapes (rules in the module doc), or `None` when
/// they are incompatible.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Option<Shape> {
    let n = a.len().max(b.len());
    let one = Dim::Const(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n { &a[i + a.len() - n] } else { &one };
        let db = if i + b.len() >= n { &b[i + b.len() - n] } else { &one };
        let d = if da == db {
            da.clone()
        } else if da.is_const(1) {
            db.clone()
        } else if db.is_const(1) {
            da.clone()
        } else {
            return None;
        };
        out.push(d);
    }
    Some(out)
}

/// Evaluate every dim of a shape.
pub fn eval_shape(s: &[Dim], b: &Bindings) -> Result<Vec<usize>, String> {
    s.iter()
        .map(|d| {
            let v = d.eval(b)?;
            if v < 0 {
                Err(format!("dimension `{d}` evaluates to negative {v}"))
            } else {
                Ok(v as usize)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_compare_equal() {
        let a = Dim::sym("a");
        let b = Dim::sym("b");
        assert_eq!(a.mul(&b), b.mul(&a));
        assert_eq!(a.mul(&Dim::Const(2)).mul(&Dim::Const(3)), Dim::Const(6).mul(&a));
        assert_eq!(a.add(&Dim::Const(0)), a);
        assert_eq!(a.mul(&Dim::Const(1)), a);
        assert_eq!(a.mul(&Dim::Const(4)).div(2), a.mul(&Dim::Const(2)));
        assert_eq!(Dim::Const(12).div(4), Dim::Const(3));
        // Exact division undone by a multiple: (h/2)·2 = h, (h/2)·4 = 2h.
        let h = Dim::sym("h");
        assert_eq!(h.div(2).mul(&Dim::Const(2)), h);
        assert_eq!(h.div(2).mul(&Dim::Const(4)), h.mul(&Dim::Const(2)));
        assert_eq!(Dim::product(&[h.div(2), Dim::Const(2), a.div(3), Dim::Const(3)]), h.mul(&a));
    }

    #[test]
    fn parse_print_round_trip() {
        for s in ["8", "batch", "batch*4", "seq+7", "(h/2)*(w/2)", "(a+b)*c", "x/2", "-3", "(n+1)/2"] {
            let d = Dim::parse(s).unwrap();
            let printed = d.to_string();
            assert_eq!(Dim::parse(&printed).unwrap(), d, "{s} -> {printed}");
        }
        assert_eq!(Dim::parse("2*3+1").unwrap(), Dim::Const(7));
        assert!(Dim::parse("a/b").is_err());
        assert!(Dim::parse("(a").is_err());
        assert!(Dim::parse("").is_err());
    }

    #[test]
    fn eval_with_bindings() {
        let d = Dim::parse("(h/2)*(w/2)+seq").unwrap();
        let b: Bindings = [("h".into(), 8), ("w".into(), 12), ("seq".into(), 7)].into_iter().collect();
        assert_eq!(d.eval(&b).unwrap(), 4 * 6 + 7);
        let b2: Bindings = [("h".into(), 7), ("w".into(), 12), ("seq".into(), 7)].into_iter().collect();
        assert!(d.eval(&b2).unwrap_err().contains("not divisible"));
        assert!(Dim::sym("q").eval(&b).unwrap_err().contains("`q`"));
    }

    #[test]
    fn broadcasting_rules() {
        let s = |v: &[&str]| v.iter().map(|x| Dim::parse(x).unwrap()).collect::<Vec<_>>();
        assert_eq!(broadcast(&s(&["batch", "1", "4"]), &s(&["3", "1"])), Some(s(&["batch", "3", "4"])));
        assert_eq!(broadcast(&s(&["4"]), &s(&[])), Some(s(&["4"])));
        assert_eq!(broadcast(&s(&["batch"]), &s(&["2"])), None);
        assert_eq!(broadcast(&s(&["3", "4"]), &s(&["2", "4"])), None);
    }
}
