//! The rewrite rules. Each is a pattern, a right-hand side and a guard.
//!
//! Safety net shared by every rule ([`Checked`]): before a right-hand side
//! is added, its type is computed with the IR's inference from the types
//! of the matched e-classes and must equal the type of the matched
//! e-class. So `x * 1 → x` does not fire when the constant broadcasts `x`
//! to a larger shape, `reshape(x, s) → x` fires exactly when `x` already
//! has shape `s`, and no rule can produce an op the verifier rejects.
//! "Scalar" below means a constant with exactly one element (any shape
//! of ones); the type check keeps its broadcast from changing a type.
//!
//! The rules (name: before → after, guard):
//! - `transpose-compose`: `transpose(transpose(x, q), p) → transpose(x, r)`
//!   with `r[j] = q[p[j]]`;
//! - `transpose-identity`: `transpose(x, [0, 1, …]) → x`;
//! - `reshape-compose`: `reshape(reshape(x, t), s) → reshape(x, s)`
//!   (row-major reshapes compose);
//! - `reshape-identity`: `reshape(x, s) → x` when `x` has shape `s`;
//! - `mul-one`, `mul-one-left`, `div-one`: `x·1`, `1·x`, `x/1 → x`;
//! - `add-zero`, `add-zero-left`, `sub-zero`: `x+0`, `0+x`, `x-0 → x`
//!   (may turn a `-0` result into `+0`, which compares equal);
//! - `neg-neg`: `-(-x) → x`;
//! - `sub-neg`: `x - (-y) → x + y`; `add-neg`, `add-neg-left`:
//!   `x + (-y)`, `(-y) + x → x - y` (negation is exact);
//! - `scale-scale*` (four operand orders): `(x·a)·b → x·c`, `c = a·b`
//!   rounded to the dtype, float scalars of one dtype only;
//! - `neg-scale*` (four forms): `-(x·a)`, `(-x)·a → x·(-a)`, float only;
//! - `scale-through-reshape*`, `scale-through-transpose*`:
//!   `reshape(x·a, s) → reshape(x, s)·a`, same for transpose (data
//!   movement commutes with a scalar product), so that the scale can meet
//!   a constant or weight further down;
//! - `scale-into-constant*` (four operand orders): `(x·a)·k → x·(k·a)` for
//!   a scalar `a` and a non-scalar `k` computed from weights and constants
//!   nothing else uses (`k·a` is folded at compile time; e.g. FLUX's
//!   `reshape(t·1000)·freqs` loses a run-time multiply);
//! - `linear-input-scale*` (with and without bias, both operand orders):
//!   `linear(x·c, w, b) → linear(x, w·c, b)` when `w` is computed from
//!   weights and constants nothing else uses (so folding does not
//!   duplicate a weight);
//!   `linear-weight-scale*` is the reverse direction, guarded only by `c`
//!   being a scalar; the cost function picks the cheaper side;
//! - `linear-output-scale*`: `linear(x, w)·c → linear(x, w·c)` and
//!   `linear(x, w, b)·c → linear(x, w·c, b·c)` under the same guard for
//!   `w` and `b`;
//! - `matmul-transposed-weight`: `matmul(x, transpose(w, [1,0])) →
//!   linear(x, w)` (linear's `x·wᵀ`; the IR requires a float dtype);
//! - `linear-bias-add`, `linear-bias-add-left`: `linear(x, w) + b`,
//!   `b + linear(x, w) → linear(x, w, b)` when `b` is a `[N]` vector.
//!
//! `w·c` and `b·c` over weights are left for `const-fold` to fold into new
//! weights at compile time; the cost function (`cost.rs`) counts them as
//! free for that reason.

use super::analysis::{op_data, Data, TensorAnalysis, EG};
use super::lang::{Perm, ScalarConst, TensorLang};
use egg::{Applier, ENodeOrVar, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
use omnic_ir::eval::tensor::round_to;

pub type Rule = Rewrite<TensorLang, TensorAnalysis>;

/// New leaves a guard binds to extra right-hand-side variables.
type Bind = Vec<(Var, TensorLang)>;

/// Decides whether a match may be rewritten (`None`: not) and computes
/// the leaves the right-hand side needs beyond the matched variables.
type Guard = Box<dyn Fn(&EG, &Subst) -> Option<Bind> + Send + Sync>;

/// A guarded, type-checked right-hand side.
pub struct Checked {
    rhs: Pattern<TensorLang>,
    guard: Guard,
}

impl Applier<TensorLang, TensorAnalysis> for Checked {
    fn apply_one(&self, eg: &mut EG, eclass: Id, subst: &Subst, _ast: Option<&PatternAst<TensorLang>>, rule: Symbol) -> Vec<Id> {
        let Some(extra) = (self.guard)(eg, subst) else { return Vec::new() };
        if !rhs_type_matches(eg, eclass, subst, &extra, &self.rhs.ast) {
            return Vec::new();
        }
        let mut s = subst.clone();
        for (v, leaf) in extra {
            let id = eg.add(leaf);
            s.insert(v, id);
        }
        self.rhs.apply_one(eg, eclass, &s, None, rule)
    }
}

/// Whether instantiating `rhs` gives a well-typed term of the type of
/// `eclass`.
fn rhs_type_matches(eg: &EG, eclass: Id, subst: &Subst, extra: &Bind, rhs: &PatternAst<TensorLang>) -> bool {
    let mut facts: Vec<Option<Data>> = Vec::with_capacity(rhs.len());
    for node in rhs.as_ref() {
        let d = match node {
            ENodeOrVar::Var(v) => match extra.iter().find(|(x, _)| x == v) {
                Some((_, leaf)) => Data::of_const_leaf(leaf),
                None => subst.get(*v).map(|&id| eg[id].data.clone()),
            },
            ENodeOrVar::ENode(n) if n.is_leaf() => Data::of_const_leaf(n),
            ENodeOrVar::ENode(n) => Some(op_data(n, &|c| facts.get(usize::from(c)).cloned().flatten())),
        };
        facts.push(d);
    }
    match facts.last() {
        Some(Some(d)) => d.ty.is_some() && d.ty == eg[eclass].data.ty,
        _ => false,
    }
}

fn var(s: &str) -> Result<Var, String> {
    s.parse().map_err(|e| format!("bad pattern variable `{s}`: {e:?}"))
}

fn rule(name: &str, lhs: &str, rhs: &str, guard: impl Fn(&EG, &Subst) -> Option<Bind> + Send + Sync + 'static) -> Result<Rule, String> {
    let lhs: Pattern<TensorLang> = lhs.parse().map_err(|e| format!("rule {name}: {e}"))?;
    let rhs: Pattern<TensorLang> = rhs.parse().map_err(|e| format!("rule {name}: {e}"))?;
    Rewrite::new(name, lhs, Checked { rhs, guard: Box::new(guard) })
}

fn always(_: &EG, _: &Subst) -> Option<Bind> {
    Some(Vec::new())
}

fn data<'e>(eg: &'e EG, s: &Subst, v: Var) -> Option<&'e Data> {
    s.get(v).map(|&id| &eg[id].data)
}

fn scalar(eg: &EG, s: &Subst, v: Var) -> Option<ScalarConst> {
    data(eg, s, v)?.scalar.clone()
}

fn float_scalar(eg: &EG, s: &Subst, v: Var) -> Option<ScalarConst> {
    scalar(eg, s, v).filter(|c| c.dtype.is_float())
}

fn is_value(eg: &EG, s: &Subst, v: Var, x: f64) -> bool {
    scalar(eg, s, v).is_some_and(|c| c.value() == x)
}

fn perm(eg: &EG, s: &Subst, v: Var) -> Option<Vec<usize>> {
    match &data(eg, s, v)?.attr {
        Some(super::lang::Attr::Perm(p)) => Some(p.clone()),
        _ => None,
    }
}

/// Computable at compile time from weights and constants that nothing
/// else uses, so folding a scale into it duplicates nothing.
fn private_foldable(eg: &EG, s: &Subst, v: Var) -> bool {
    data(eg, s, v).is_some_and(|d| d.foldable && !d.shared)
}

/// The scalar `f(a, b)` of `a`'s dtype, rounded to it, with the broadcast
/// shape of the two (all ones).
fn combine(a: &ScalarConst, b: &ScalarConst, f: impl Fn(f64, f64) -> f64) -> Option<TensorLang> {
    if a.dtype != b.dtype || !a.dtype.is_float() {
        return None;
    }
    let v = round_to(a.dtype, f(a.value(), b.value()), false);
    Some(TensorLang::Scalar(ScalarConst::new(a.dtype, vec![1; a.shape.len().max(b.shape.len())], v)))
}

/// Rules that remove an identity: `lhs → ?x` when `?c` has value `v`.
fn identities() -> Result<Vec<Rule>, String> {
    let c = var("?c")?;
    let table = [
        ("mul-one", "(mul ?x ?c)", 1.0),
        ("mul-one-left", "(mul ?c ?x)", 1.0),
        ("div-one", "(div ?x ?c)", 1.0),
        ("add-zero", "(add ?x ?c)", 0.0),
        ("add-zero-left", "(add ?c ?x)", 0.0),
        ("sub-zero", "(sub ?x ?c)", 0.0),
    ];
    table.into_iter().map(|(name, lhs, v)| rule(name, lhs, "?x", move |eg, s| is_value(eg, s, c, v).then(Vec::new))).collect()
}

fn movement() -> Result<Vec<Rule>, String> {
    let (p, q, r) = (var("?p")?, var("?q")?, var("?r")?);
    Ok(vec![
        rule("transpose-compose", "(transpose ?p (transpose ?q ?x))", "(transpose ?r ?x)", move |eg, s| {
            let (p, q) = (perm(eg, s, p)?, perm(eg, s, q)?);
            let composed: Option<Vec<usize>> = p.iter().map(|&j| q.get(j).copied()).collect();
            Some(vec![(r, TensorLang::Perm(Perm(composed?)))])
        })?,
        rule("transpose-identity", "(transpose ?p ?x)", "?x", move |eg, s| perm(eg, s, p)?.iter().enumerate().all(|(i, &j)| i == j).then(Vec::new))?,
        rule("reshape-compose", "(reshape ?s (reshape ?t ?x))", "(reshape ?s ?x)", always)?,
        rule("reshape-identity", "(reshape ?s ?x)", "?x", always)?,
    ])
}

fn signs() -> Result<Vec<Rule>, String> {
    Ok(vec![
        rule("neg-neg", "(neg (neg ?x))", "?x", always)?,
        rule("sub-neg", "(sub ?x (neg ?y))", "(add ?x ?y)", always)?,
        rule("add-neg", "(add ?x (neg ?y))", "(sub ?x ?y)", always)?,
        rule("add-neg-left", "(add (neg ?y) ?x)", "(sub ?x ?y)", always)?,
    ])
}

fn scales() -> Result<Vec<Rule>, String> {
    let (a, b, c, n) = (var("?a")?, var("?b")?, var("?c")?, var("?n")?);
    let mut out = Vec::new();
    for (i, lhs) in ["(mul (mul ?x ?a) ?b)", "(mul (mul ?a ?x) ?b)", "(mul ?b (mul ?x ?a))", "(mul ?b (mul ?a ?x))"].iter().enumerate() {
        out.push(rule(&format!("scale-scale-{i}"), lhs, "(mul ?x ?c)", move |eg, s| {
            Some(vec![(c, combine(&float_scalar(eg, s, a)?, &float_scalar(eg, s, b)?, |x, y| x * y)?)])
        })?);
    }
    for (i, lhs) in ["(neg (mul ?x ?a))", "(neg (mul ?a ?x))", "(mul (neg ?x) ?a)", "(mul ?a (neg ?x))"].iter().enumerate() {
        out.push(rule(&format!("neg-scale-{i}"), lhs, "(mul ?x ?n)", move |eg, s| {
            let k = float_scalar(eg, s, a)?;
            Some(vec![(n, TensorLang::Scalar(ScalarConst::new(k.dtype, k.shape.clone(), -k.value())))])
        })?);
    }
    for (i, lhs) in ["(reshape ?s (mul ?x ?a))", "(reshape ?s (mul ?a ?x))"].iter().enumerate() {
        out.push(rule(&format!("scale-through-reshape-{i}"), lhs, "(mul (reshape ?s ?x) ?a)", move |eg, s| scalar(eg, s, a).map(|_| Vec::new()))?);
    }
    for (i, lhs) in ["(transpose ?p (mul ?x ?a))", "(transpose ?p (mul ?a ?x))"].iter().enumerate() {
        out.push(rule(&format!("scale-through-transpose-{i}"), lhs, "(mul (transpose ?p ?x) ?a)", move |eg, s| scalar(eg, s, a).map(|_| Vec::new()))?);
    }
    let into_constant = move |eg: &EG, s: &Subst| (scalar(eg, s, a).is_some() && scalar(eg, s, b).is_none() && private_foldable(eg, s, b)).then(Vec::new);
    for (i, lhs) in ["(mul (mul ?x ?a) ?b)", "(mul (mul ?a ?x) ?b)", "(mul ?b (mul ?x ?a))", "(mul ?b (mul ?a ?x))"].iter().enumerate() {
        out.push(rule(&format!("scale-into-constant-{i}"), lhs, "(mul ?x (mul ?b ?a))", into_constant)?);
    }
    Ok(out)
}

fn linear_scales() -> Result<Vec<Rule>, String> {
    let (c, w, b) = (var("?c")?, var("?w")?, var("?b")?);
    let into_weight = move |eg: &EG, s: &Subst| (scalar(eg, s, c).is_some() && private_foldable(eg, s, w)).then(Vec::new);
    let into_weight_bias = move |eg: &EG, s: &Subst| (scalar(eg, s, c).is_some() && private_foldable(eg, s, w) && private_foldable(eg, s, b)).then(Vec::new);
    let is_scalar = move |eg: &EG, s: &Subst| scalar(eg, s, c).is_some().then(Vec::new);
    Ok(vec![
        rule("linear-input-scale", "(linear (mul ?x ?c) ?w)", "(linear ?x (mul ?w ?c))", into_weight)?,
        rule("linear-input-scale-left", "(linear (mul ?c ?x) ?w)", "(linear ?x (mul ?w ?c))", into_weight)?,
        rule("linear-input-scale-bias", "(linear_b (mul ?x ?c) ?w ?b)", "(linear_b ?x (mul ?w ?c) ?b)", into_weight)?,
        rule("linear-input-scale-bias-left", "(linear_b (mul ?c ?x) ?w ?b)", "(linear_b ?x (mul ?w ?c) ?b)", into_weight)?,
        rule("linear-weight-scale", "(linear ?x (mul ?w ?c))", "(linear (mul ?x ?c) ?w)", is_scalar)?,
        rule("linear-weight-scale-bias", "(linear_b ?x (mul ?w ?c) ?b)", "(linear_b (mul ?x ?c) ?w ?b)", is_scalar)?,
        rule("linear-output-scale", "(mul (linear ?x ?w) ?c)", "(linear ?x (mul ?w ?c))", into_weight)?,
        rule("linear-output-scale-left", "(mul ?c (linear ?x ?w))", "(linear ?x (mul ?w ?c))", into_weight)?,
        rule("linear-output-scale-bias", "(mul (linear_b ?x ?w ?b) ?c)", "(linear_b ?x (mul ?w ?c) (mul ?b ?c))", into_weight_bias)?,
        rule("linear-output-scale-bias-left", "(mul ?c (linear_b ?x ?w ?b))", "(linear_b ?x (mul ?w ?c) (mul ?b ?c))", into_weight_bias)?,
    ])
}

fn contractions() -> Result<Vec<Rule>, String> {
    let p = var("?p")?;
    Ok(vec![
        rule("matmul-transposed-weight", "(matmul ?x (transpose ?p ?w))", "(linear ?x ?w)", move |eg, s| (perm(eg, s, p)? == [1, 0]).then(Vec::new))?,
        rule("linear-bias-add", "(add (linear ?x ?w) ?b)", "(linear_b ?x ?w ?b)", always)?,
        rule("linear-bias-add-left", "(add ?b (linear ?x ?w))", "(linear_b ?x ?w ?b)", always)?,
    ])
}

/// Every rule, in the order the module doc lists them.
pub fn rules() -> Result<Vec<Rule>, String> {
    let mut out = movement()?;
    out.extend(identities()?);
    out.extend(signs()?);
    out.extend(scales()?);
    out.extend(linear_scales()?);
    out.extend(contractions()?);
    Ok(out)
}
