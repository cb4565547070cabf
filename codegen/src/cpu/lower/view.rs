//! Lazy data movement: index remapping inside fused elementwise generics.
//!
//! A `reshape`, `transpose`, `slice`, `split` or `concat` whose every user
//! in the kernel is lazy (elementwise or another lazy view), or that is a
//! kernel result, is not lowered to a tensor op of its own: the fused
//! elementwise generic that needs it reads its operand at remapped
//! coordinates instead ([`super::elementwise`]). This removes the
//! temporaries (and the strided copies between them) of patterns such as
//! the interleaved rotary embedding `reshape [.., d] → [.., d/2, 2]`, split
//! of the pairs, `neg`, concat of the pairs, reshape back.
//!
//! Coordinates are kept as linear expressions of the generic's loop
//! dimensions ([`Ix::Lin`]) as long as possible, so that a materialised
//! operand is read through an affine indexing map LLVM can vectorise (and
//! MLIR's elementwise fusion can see through). A reshape needs `floordiv` /
//! `mod` of a coordinate; where the coordinate is a loop dimension of static
//! extent, the generic's iteration space is *refined* instead (the loop of
//! extent 64 becomes loops of 32 and 2, and `d floordiv 2`, `d mod 2` become
//! the new loops), see [`Space`]. Coordinates that stay non-linear are
//! affine expressions read with `tensor.extract` ([`Ix::Expr`]).
//!
//! Which views qualify (static checks in [`remappable`]):
//! - `transpose` always;
//! - `slice` / `split` (a symbolic start is a symbolic coordinate offset,
//!   read as a `tensor.extract_slice` view of the operand; where such a
//!   coordinate would need a non-linear operation the kernel is lowered
//!   again without that view);
//! - `reshape` whose leading and trailing dimensions agree and whose
//!   differing middle block is static (`[b, s, 512] → [b, s, 8, 64]`);
//! - `concat` whose operands all have size 1 along the axis (a select on
//!   the coordinate; larger pieces stay `tensor.insert_slice`s).

use super::is_lazy;
use omnic_ir::{Dim, Graph, Op, ValueRef};
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, HashSet};

/// A linear expression `Σ coeff·d_k + c + sym` of loop dimensions, with
/// a symbolic offset `sym` (a slice starting at `txt`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Lin {
    pub terms: BTreeMap<usize, i64>,
    pub c: i64,
    /// Symbolic part (simplified; `0` when none). Not in [`Lin::text`]: a
    /// leaf read with one is a read of a `tensor.extract_slice` at it.
    pub sym: Dim,
}

impl Lin {
    pub(crate) fn konst(c: i64) -> Lin {
        Lin { terms: BTreeMap::new(), c, sym: Dim::Const(0) }
    }
    pub(crate) fn has_sym(&self) -> bool {
        !self.sym.is_const(0)
    }
    fn add(&self, o: &Lin) -> Lin {
        let mut r = self.clone();
        for (&k, &a) in &o.terms {
            let e = r.terms.entry(k).or_insert(0);
            *e += a;
        }
        r.terms.retain(|_, a| *a != 0);
        r.c += o.c;
        r.sym = super::simplify(&r.sym.add(&o.sym));
        r
    }
    fn scale(&self, m: i64) -> Lin {
        if m == 0 {
            return Lin::konst(0);
        }
        let sym = if self.has_sym() { super::simplify(&self.sym.mul(&Dim::Const(m))) } else { Dim::Const(0) };
        Lin { terms: self.terms.iter().map(|(&k, &a)| (k, a * m)).collect(), c: self.c * m, sym }
    }
    /// The affine expression text (`d3 * 2 + 1`), without the symbolic part.
    pub(crate) fn text(&self) -> String {
        let mut parts: Vec<String> = self.terms.iter().map(|(&k, &a)| if a == 1 { format!("d{k}") } else { format!("d{k} * {a}") }).collect();
        if self.c != 0 || parts.is_empty() {
            parts.push(self.c.to_string());
        }
        parts.join(" + ")
    }
}

/// One coordinate of an index into a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Ix {
    Lin(Lin),
    /// A non-linear affine expression of the loop dimensions.
    Expr(String),
}

impl Ix {
    pub(crate) fn text(&self) -> String {
        match self {
            Ix::Lin(l) => l.text(),
            Ix::Expr(e) => e.clone(),
        }
    }
    fn konst(&self) -> Option<i64> {
        match self {
            Ix::Lin(l) if l.terms.is_empty() && !l.has_sym() => Some(l.c),
            _ => None,
        }
    }
    fn has_sym(&self) -> bool {
        matches!(self, Ix::Lin(l) if l.has_sym())
    }
    /// `self + off`; a symbolic offset added to a non-linear coordinate
    /// marks `space` as failed.
    fn add_dim(&self, off: &Dim, space: &mut Space) -> Ix {
        let off = super::simplify(off);
        match (self, off.as_const()) {
            (Ix::Lin(l), Some(c)) => Ix::Lin(l.add(&Lin::konst(c))),
            (Ix::Lin(l), None) => Ix::Lin(l.add(&Lin { terms: BTreeMap::new(), c: 0, sym: off })),
            (Ix::Expr(e), Some(c)) => Ix::Expr(format!("({e}) + {c}")),
            (Ix::Expr(e), None) => {
                space.failed = true;
                Ix::Expr(e.clone())
            }
        }
    }
}

/// The generic's iteration space: static extents of the loop dimensions
/// (`None` where symbolic), and a refinement request found while
/// remapping.
pub(crate) struct Space {
    pub ext: Vec<Option<i64>>,
    /// `(k, m)`: splitting loop `k` into `(ext/m, m)` would make a
    /// coordinate linear.
    pub refine: Option<(usize, i64)>,
    /// A coordinate with a symbolic offset needed a non-linear operation
    /// (the view cannot be remapped)...
    pub failed: bool,
    /// ... while remapping this view node.
    pub failed_at: Option<NodeIndex>,
}

impl Space {
    /// `e floordiv d` and `e mod d` (d ≥ 1).
    fn divmod(&mut self, e: &Ix, d: i64) -> (Ix, Ix) {
        if d == 1 {
            return (e.clone(), Ix::Lin(Lin::konst(0)));
        }
        let nonlin = |t: String| (Ix::Expr(format!("({t}) floordiv {d}")), Ix::Expr(format!("({t}) mod {d}")));
        let Ix::Lin(l) = e else { return nonlin(e.text()) };
        if l.has_sym() {
            self.failed = true;
            return nonlin(l.text());
        }
        let mut high = Lin::konst(l.c.div_euclid(d));
        let mut low = Lin::konst(l.c.rem_euclid(d));
        for (&k, &a) in &l.terms {
            if a % d == 0 {
                high.terms.insert(k, a / d);
            } else {
                low.terms.insert(k, a);
            }
        }
        // Range of the low part.
        let (mut lo, mut hi) = (low.c, low.c);
        let mut bounded = true;
        for (&k, &a) in &low.terms {
            match self.ext.get(k).copied().flatten() {
                Some(n) if n >= 1 => {
                    let v = a * (n - 1);
                    lo += v.min(0);
                    hi += v.max(0);
                }
                _ => bounded = false,
            }
        }
        if bounded && lo >= 0 && hi < d {
            return (Ix::Lin(high), Ix::Lin(low));
        }
        // A loop whose split would move its term into the high part.
        if self.refine.is_none() {
            for (&k, &a) in &low.terms {
                let m = d / gcd(a.abs(), d);
                if let Some(n) = self.ext.get(k).copied().flatten() {
                    if m > 1 && n > m && n % m == 0 {
                        self.refine = Some((k, m));
                        break;
                    }
                }
            }
        }
        nonlin(l.text())
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

fn eq(a: &Dim, b: &Dim) -> bool {
    super::simplify(a) == super::simplify(b)
}

/// The static middle blocks of a reshape `from → to`: `(p, in_mid, out_mid)`
/// with `p` leading dimensions in common, or `None`.
fn reshape_blocks(from: &[Dim], to: &[Dim]) -> Option<(usize, Vec<i64>, Vec<i64>)> {
    let mut p = 0;
    while p < from.len() && p < to.len() && eq(&from[p], &to[p]) {
        p += 1;
    }
    let mut q = 0;
    while q < from.len() - p && q < to.len() - p && eq(&from[from.len() - 1 - q], &to[to.len() - 1 - q]) {
        q += 1;
    }
    let a: Option<Vec<i64>> = from[p..from.len() - q].iter().map(Dim::as_const).collect();
    let b: Option<Vec<i64>> = to[p..to.len() - q].iter().map(Dim::as_const).collect();
    let (a, b) = (a?, b?);
    if a.iter().product::<i64>() != b.iter().product::<i64>() {
        return None;
    }
    Some((p, a, b))
}

/// Whether node `n` is a movement op this module can remap.
pub(crate) fn remappable(g: &Graph, n: NodeIndex) -> bool {
    let node = g.node(n);
    let ops = g.operands(n);
    let in_ty = |i: usize| ops.get(i).and_then(|v| g.value_type(*v).ok());
    match &node.op {
        Op::Transpose { .. } => true,
        Op::Slice { .. } | Op::Split { .. } => true,
        Op::Reshape { .. } => match (in_ty(0), node.outputs.first()) {
            (Some(a), Some(b)) => reshape_blocks(&a.shape, &b.shape).is_some(),
            _ => false,
        },
        Op::Concat { axis } => ops.iter().all(|v| g.value_type(*v).is_ok_and(|t| t.shape.get(*axis).is_some_and(|d| d.is_const(1)))),
        _ => false,
    }
}

/// The remappable movement nodes of a kernel that become lazy: every user
/// inside the kernel is lazy (users outside read it as a kernel result). `excluded`
/// nodes stay tensor ops.
pub(crate) fn lazy_views(g: &Graph, members: &[NodeIndex], excluded: &HashSet<NodeIndex>) -> HashSet<NodeIndex> {
    let set: HashSet<NodeIndex> = members.iter().copied().collect();
    let mut views = HashSet::new();
    for &m in members.iter().rev() {
        if excluded.contains(&m) || !remappable(g, m) {
            continue;
        }
        // Users outside the kernel read it as a kernel result.
        let ok = g.users(m).iter().all(|u| !set.contains(u) || is_lazy(&g.node(*u).op) || views.contains(u));
        if ok {
            views.insert(m);
        }
    }
    views
}

/// Where the element at `idx` of a view's result comes from.
pub(crate) enum Source {
    /// Operand `v` at coordinates.
    One(ValueRef, Vec<Ix>),
    /// `coord == offsets[k] ? pieces[k] : …` (concat of unit pieces).
    Select(Ix, Vec<(i64, ValueRef, Vec<Ix>)>),
}

/// The source of element `idx` of result `port` of view node `n`.
pub(crate) fn remap(g: &Graph, space: &mut Space, n: NodeIndex, port: u32, idx: &[Ix]) -> Option<Source> {
    let node = g.node(n);
    let ops = g.operands(n);
    match &node.op {
        Op::Transpose { perm } => {
            let mut c = vec![Ix::Lin(Lin::konst(0)); idx.len()];
            for (j, &p) in perm.iter().enumerate() {
                *c.get_mut(p)? = idx.get(j)?.clone();
            }
            Some(Source::One(*ops.first()?, c))
        }
        Op::Slice { axis, start, .. } => {
            let mut c = idx.to_vec();
            c[*axis] = c.get(*axis)?.add_dim(start, space);
            Some(Source::One(*ops.first()?, c))
        }
        Op::Split { axis, sizes } => {
            let off = sizes.get(..port as usize)?.iter().fold(Dim::Const(0), |a, d| a.add(d));
            let mut c = idx.to_vec();
            c[*axis] = c.get(*axis)?.add_dim(&off, space);
            Some(Source::One(*ops.first()?, c))
        }
        Op::Reshape { .. } => {
            let x = *ops.first()?;
            let from = g.value_type(x).ok()?.shape.clone();
            let to = &node.outputs.first()?.shape;
            let (p, a, b) = reshape_blocks(&from, to)?;
            // Linear position inside the output's middle block.
            let mut lin: Option<Ix> = Some(Ix::Lin(Lin::konst(0)));
            let mut stride = 1i64;
            for (j, &s) in b.iter().enumerate().rev() {
                let t = match idx.get(p + j)? {
                    Ix::Lin(l) => Ix::Lin(l.scale(stride)),
                    Ix::Expr(e) => Ix::Expr(format!("({e}) * {stride}")),
                };
                lin = Some(match (lin?, t) {
                    (Ix::Lin(u), Ix::Lin(v)) => Ix::Lin(u.add(&v)),
                    (u, v) => {
                        if u.has_sym() || v.has_sym() {
                            space.failed = true;
                        }
                        Ix::Expr(format!("{} + {}", u.text(), v.text()))
                    }
                });
                stride *= s;
            }
            let mut lin = lin?;
            let mut mid = vec![Ix::Lin(Lin::konst(0)); a.len()];
            let mut stride: i64 = a.iter().product();
            for (j, &s) in a.iter().enumerate() {
                stride /= s.max(1);
                if j + 1 == a.len() {
                    mid[j] = lin.clone();
                } else {
                    let (q, r) = space.divmod(&lin, stride.max(1));
                    mid[j] = q;
                    lin = r;
                }
            }
            let mut c: Vec<Ix> = idx[..p].to_vec();
            c.extend(mid);
            c.extend(idx[p + b.len()..].iter().cloned());
            Some(Source::One(x, c))
        }
        Op::Concat { axis } => {
            let coord = idx.get(*axis)?.clone();
            let mut pieces = Vec::with_capacity(ops.len());
            for (k, &v) in ops.iter().enumerate() {
                let mut c = idx.to_vec();
                c[*axis] = Ix::Lin(Lin::konst(0));
                pieces.push((k as i64, v, c));
            }
            if let Some(k) = coord.konst() {
                let (_, v, c) = pieces.into_iter().nth(usize::try_from(k).ok()?)?;
                return Some(Source::One(v, c));
            }
            Some(Source::Select(coord, pieces))
        }
        _ => None,
    }
}
