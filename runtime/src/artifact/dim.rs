//! Symbolic dimensions as the runtime sees them: integer expressions over
//! named symbols, evaluated once the inputs bind the symbols. (The compiler
//! has the canonicalising form; the runtime only evaluates.)

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// A dimension expression (mirrors the IR's `Dim`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DimExpr {
    Const(i64),
    Sym(String),
    Add(Vec<DimExpr>),
    Mul(Vec<DimExpr>),
    /// Exact division by a positive constant.
    Div(Box<DimExpr>, i64),
}

/// Values of the symbols of one run.
pub type Bindings = HashMap<String, i64>;

impl DimExpr {
    pub fn eval(&self, b: &Bindings) -> Result<i64, String> {
        Ok(match self {
            DimExpr::Const(v) => *v,
            DimExpr::Sym(s) => *b.get(s).ok_or_else(|| format!("symbol `{s}` is not bound"))?,
            DimExpr::Add(ts) => {
                let mut acc = 0i64;
                for t in ts {
                    acc = acc.checked_add(t.eval(b)?).ok_or_else(|| format!("`{self}` overflows"))?;
                }
                acc
            }
            DimExpr::Mul(ts) => {
                let mut acc = 1i64;
                for t in ts {
                    acc = acc.checked_mul(t.eval(b)?).ok_or_else(|| format!("`{self}` overflows"))?;
                }
                acc
            }
            DimExpr::Div(x, d) => {
                let v = x.eval(b)?;
                if *d <= 0 || v % d != 0 {
                    return Err(format!("`{x}` = {v} is not divisible by {d}"));
                }
                v / d
            }
        })
    }

    /// Evaluate to a non-negative size.
    pub fn size(&self, b: &Bindings) -> Result<usize, String> {
        let v = self.eval(b)?;
        usize::try_from(v).map_err(|_| format!("dimension `{self}` is negative ({v})"))
    }
}

impl fmt::Display for DimExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, ts: &[DimExpr], sep: &str| -> fmt::Result {
            for (i, t) in ts.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                match t {
                    DimExpr::Const(_) | DimExpr::Sym(_) => write!(f, "{t}")?,
                    _ => write!(f, "({t})")?,
                }
            }
            Ok(())
        };
        match self {
            DimExpr::Const(v) => write!(f, "{v}"),
            DimExpr::Sym(s) => f.write_str(s),
            DimExpr::Add(ts) => join(f, ts, "+"),
            DimExpr::Mul(ts) => join(f, ts, "*"),
            DimExpr::Div(x, d) => match **x {
                DimExpr::Const(_) | DimExpr::Sym(_) => write!(f, "{x}/{d}"),
                _ => write!(f, "({x})/{d}"),
            },
        }
    }
}

/// Render a shape `[a,b,c]`.
pub fn shape_str(s: &[DimExpr]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// Evaluate every dim of a shape.
pub fn eval_shape(s: &[DimExpr], b: &Bindings) -> Result<Vec<usize>, String> {
    s.iter().map(|d| d.size(b)).collect()
}

/// Bind symbols from actual shapes: plain symbols first, then every
/// expression must agree. `what` names each shape in errors.
pub fn bind(shapes: &[(&str, &[DimExpr], &[usize])]) -> Result<Bindings, String> {
    let mut b = Bindings::new();
    for (name, decl, actual) in shapes {
        if decl.len() != actual.len() {
            return Err(format!("`{name}` has shape {actual:?} but the program expects {}", shape_str(decl)));
        }
        for (d, &a) in decl.iter().zip(actual.iter()) {
            if let DimExpr::Sym(s) = d {
                let prev = *b.entry(s.clone()).or_insert(a as i64);
                if prev != a as i64 {
                    return Err(format!("`{name}` has shape {actual:?} but `{s}` is already bound to {prev} (program expects {})", shape_str(decl)));
                }
            }
        }
    }
    for (name, decl, actual) in shapes {
        for (d, &a) in decl.iter().zip(actual.iter()) {
            let want = d.eval(&b).map_err(|e| format!("`{name}`: {e}"))?;
            if want != a as i64 {
                return Err(format!("`{name}` has shape {actual:?} but the program expects {} (`{d}` = {want})", shape_str(decl)));
            }
        }
    }
    Ok(b)
}

#[cfg(test)]
#[path = "tests/dim.rs"]
mod tests;
