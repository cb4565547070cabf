//! NC* convolution with 2 or 3 spatial dims (the IR's `Conv`):
//! `(x [N, Cin, *S], w [Cout, Cin/groups, *K], [b [Cout]]) → y [N, Cout, *S']`,
//! cross-correlation with zero padding,
//! `S'ᵢ = (Sᵢ + 2·padᵢ − dilᵢ·(Kᵢ−1) − 1) / strideᵢ + 1`,
//! `y[n, o, p] = b[o] + Σ_{c, k} x[n, g·Cin/groups + c, p·stride + k·dil − pad] · w[o, c, k]`
//! with `g = o / (Cout/groups)`.
//!
//! 2-D is run as 3-D with a depth of 1. Two strategies:
//! * **im2col + GEMM** (general): for each sample and group, the columns
//!   `[Cin/groups · ΠK, P]` for a chunk of output positions are gathered
//!   into `scratch` (in parallel over rows), then
//!   `y[n, group's Cout, chunk] = w_g [Cout/groups, Cin/groups·ΠK] · cols`
//!   with the bias as a per-row GEMM epilogue, written in place into `y`.
//!   Chunks keep the scratch under [`COL_BUDGET`] floats. A 1×1(×1) kernel
//!   with stride 1 and no padding skips the gather (the input already is
//!   the column matrix).
//! * **direct** when each group has one input channel (depthwise, with any
//!   channel multiplier): one output plane per task, accumulated as
//!   shifted, scaled rows of the input plane; no scratch.
//!
//! f32 accumulation (GEMM: see [`super::gemm`]). Threads: see
//! [`super::threads`].

use super::gemm::{gemm_in, Epilogue, MatMut, MatRef};
use super::{threads, KernelError};

const OP: &str = "conv";
/// Largest im2col scratch, in f32 elements (16 MiB).
pub const COL_BUDGET: usize = 1 << 22;

/// Convolution hyper-parameters, one entry per spatial dim.
#[derive(Clone, Copy, Debug)]
pub struct ConvParams<'a> {
    pub stride: &'a [usize],
    pub padding: &'a [usize],
    pub dilation: &'a [usize],
    pub groups: usize,
}

/// Shapes normalised to 3 spatial dims.
#[derive(Clone, Copy, Debug)]
struct Geo {
    n: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    /// input, kernel, output spatial sizes; stride, padding, dilation.
    i: [usize; 3],
    k: [usize; 3],
    o: [usize; 3],
    s: [usize; 3],
    p: [usize; 3],
    d: [usize; 3],
}

impl Geo {
    fn cin_g(&self) -> usize {
        self.cin / self.groups
    }
    fn cout_g(&self) -> usize {
        self.cout / self.groups
    }
    fn in_n(&self) -> usize {
        self.i.iter().product()
    }
    fn k_n(&self) -> usize {
        self.k.iter().product()
    }
    fn out_n(&self) -> usize {
        self.o.iter().product()
    }
    fn pointwise(&self) -> bool {
        self.k == [1, 1, 1] && self.s == [1, 1, 1] && self.p == [0, 0, 0]
    }
}

fn geometry(x_shape: &[usize], w_shape: &[usize], prm: &ConvParams) -> Result<Geo, KernelError> {
    let r = x_shape.len();
    if !(r == 4 || r == 5) || w_shape.len() != r {
        return Err(KernelError::new(OP, format!("input {x_shape:?} and weight {w_shape:?}: need rank 4 or 5 (2 or 3 spatial dims), equal")));
    }
    let sp = r - 2;
    if prm.stride.len() != sp || prm.padding.len() != sp || prm.dilation.len() != sp {
        return Err(KernelError::new(OP, format!("stride {:?} / padding {:?} / dilation {:?} must have {sp} entries", prm.stride, prm.padding, prm.dilation)));
    }
    if prm.stride.contains(&0) || prm.dilation.contains(&0) {
        return Err(KernelError::new(OP, "stride and dilation must be ≥ 1"));
    }
    let (n, cin, cout, cin_g) = (x_shape[0], x_shape[1], w_shape[0], w_shape[1]);
    let groups = prm.groups;
    if groups == 0 || cin_g * groups != cin || cout % groups != 0 {
        return Err(KernelError::new(OP, format!("channels: input {x_shape:?}, weight {w_shape:?}, groups {groups}")));
    }
    let off = 3 - sp;
    let mut g = Geo { n, cin, cout, groups, i: [1; 3], k: [1; 3], o: [1; 3], s: [1; 3], p: [0; 3], d: [1; 3] };
    for a in 0..sp {
        let (i, k) = (x_shape[2 + a], w_shape[2 + a]);
        let (s, p, d) = (prm.stride[a], prm.padding[a], prm.dilation[a]);
        let span = d * (k.max(1) - 1) + 1;
        if k == 0 || i + 2 * p < span {
            return Err(KernelError::new(OP, format!("kernel {w_shape:?} does not fit input {x_shape:?} padded by {:?} on spatial axis {a}", prm.padding)));
        }
        let o = (i + 2 * p - span) / s + 1;
        (g.i[off + a], g.k[off + a], g.o[off + a], g.s[off + a], g.p[off + a], g.d[off + a]) = (i, k, o, s, p, d);
    }
    Ok(g)
}

/// The output shape `[N, Cout, *S']`.
pub fn output_shape(x_shape: &[usize], w_shape: &[usize], prm: &ConvParams) -> Result<Vec<usize>, KernelError> {
    let g = geometry(x_shape, w_shape, prm)?;
    let mut s = vec![g.n, g.cout];
    s.extend_from_slice(&g.o[3 - (x_shape.len() - 2)..]);
    Ok(s)
}

/// Valid output range `[lo, hi)` along one axis for kernel tap `kk`: the
/// outputs whose input coordinate `o·s + kk·d − p` lies in `[0, len)`.
fn valid_range(len: usize, o_len: usize, s: usize, p: usize, kk: usize, d: usize) -> (usize, usize) {
    let off = kk * d; // input = o·s + off − p
    let lo = if off >= p { 0 } else { (p - off).div_ceil(s) };
    // o·s + off − p ≤ len − 1  ⇔  o ≤ (len − 1 + p − off) / s
    let hi = if len + p > off { ((len - 1 + p - off) / s + 1).min(o_len) } else { 0 };
    (lo.min(hi), hi)
}

/// `y = conv(x, w) + b`; `scratch` is grown as needed (see
/// [`scratch_len`]) and may be reused across calls.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    x: &[f32],
    x_shape: &[usize],
    w: &[f32],
    w_shape: &[usize],
    bias: Option<&[f32]>,
    prm: &ConvParams,
    y: &mut [f32],
    scratch: &mut Vec<f32>,
    threads: usize,
) -> Result<(), KernelError> {
    let g = geometry(x_shape, w_shape, prm)?;
    let sizes = [
        (x.len(), g.n * g.cin * g.in_n(), "input"),
        (w.len(), g.cout * g.cin_g() * g.k_n(), "weight"),
        (y.len(), g.n * g.cout * g.out_n(), "output"),
        (bias.map_or(g.cout, |b| b.len()), g.cout, "bias"),
    ];
    for (got, want, what) in sizes {
        if got != want {
            return Err(KernelError::new(OP, format!("{what}: {got} elements, expected {want} (input {x_shape:?}, weight {w_shape:?})")));
        }
    }
    if y.is_empty() {
        return Ok(());
    }
    threads::run(OP, threads, |t| if g.cin_g() == 1 && !g.pointwise() { direct(&g, x, w, bias, y, t) } else { im2col_gemm(&g, x, w, bias, y, scratch, t) })?
}

/// Scratch floats [`conv`] will use for these shapes (0 on the direct and
/// pointwise paths).
pub fn scratch_len(x_shape: &[usize], w_shape: &[usize], prm: &ConvParams) -> Result<usize, KernelError> {
    let g = geometry(x_shape, w_shape, prm)?;
    if (g.cin_g() == 1 && !g.pointwise()) || g.pointwise() {
        return Ok(0);
    }
    let rows = g.cin_g() * g.k_n();
    Ok(rows * chunk_width(rows, g.out_n()))
}

fn chunk_width(rows: usize, out_n: usize) -> usize {
    (COL_BUDGET / rows.max(1)).max(256).min(out_n.max(1))
}

fn im2col_gemm(g: &Geo, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], scratch: &mut Vec<f32>, t: usize) -> Result<(), KernelError> {
    let (cin_g, cout_g, kn, in_n, on) = (g.cin_g(), g.cout_g(), g.k_n(), g.in_n(), g.out_n());
    let rows = cin_g * kn;
    let cw = chunk_width(rows, on);
    let pointwise = g.pointwise();
    if !pointwise && scratch.len() < rows * cw {
        scratch.resize(rows * cw, 0.0);
    }
    for n in 0..g.n {
        for grp in 0..g.groups {
            let xg = &x[(n * g.cin + grp * cin_g) * in_n..][..cin_g * in_n];
            let wg = MatRef::row_major(&w[grp * cout_g * rows..][..cout_g * rows], cout_g, rows);
            let epi = bias.map_or(Epilogue::None, |b| Epilogue::BiasM(&b[grp * cout_g..(grp + 1) * cout_g]));
            let yg = &mut y[(n * g.cout + grp * cout_g) * on..][..cout_g * on];
            let mut p0 = 0;
            while p0 < on {
                let w_ = cw.min(on - p0);
                let cols = if pointwise {
                    MatRef { data: &xg[p0..], rows, cols: w_, rs: in_n, cs: 1 }
                } else {
                    let col = &mut scratch[..rows * w_];
                    threads::for_each_chunk(t, col, w_, |r, dst| {
                        gather_row(g, xg, r, p0, dst);
                        Ok(())
                    })?;
                    MatRef::row_major(col, rows, w_)
                };
                let yc = MatMut { data: &mut yg[p0..], rows: cout_g, cols: w_, rs: on, cs: 1 };
                gemm_in(yc, wg, cols, epi, t)?;
                p0 += w_;
            }
        }
    }
    Ok(())
}

/// im2col row `r = (c, kd, kh, kw)` for output positions `p0..p0+dst.len()`.
fn gather_row(g: &Geo, xg: &[f32], r: usize, p0: usize, dst: &mut [f32]) {
    let kn = g.k_n();
    let (c, kk) = (r / kn, r % kn);
    let (kd, kh, kw) = (kk / (g.k[1] * g.k[2]), (kk / g.k[2]) % g.k[1], kk % g.k[2]);
    let xc = &xg[c * g.in_n()..][..g.in_n()];
    let [_, ho, wo] = g.o;
    let (wlo, whi) = valid_range(g.i[2], wo, g.s[2], g.p[2], kw, g.d[2]);
    let mut p = p0;
    let end = p0 + dst.len();
    while p < end {
        let (od, oh, ow) = (p / (ho * wo), (p / wo) % ho, p % wo);
        let len = (wo - ow).min(end - p);
        let seg = &mut dst[p - p0..p - p0 + len];
        let id = (od * g.s[0] + kd * g.d[0]) as isize - g.p[0] as isize;
        let ih = (oh * g.s[1] + kh * g.d[1]) as isize - g.p[1] as isize;
        if id < 0 || id as usize >= g.i[0] || ih < 0 || ih as usize >= g.i[1] {
            seg.fill(0.0);
        } else {
            let xrow = &xc[(id as usize * g.i[1] + ih as usize) * g.i[2]..][..g.i[2]];
            // Output columns ow..ow+len; valid ones are [wlo, whi).
            let (a, b) = (wlo.clamp(ow, ow + len), whi.clamp(ow, ow + len));
            if a >= b {
                seg.fill(0.0);
                p += len;
                continue;
            }
            seg[..a - ow].fill(0.0);
            seg[b - ow..].fill(0.0);
            let base = a * g.s[2] + kw * g.d[2] - g.p[2]; // no underflow: a ≥ wlo
            if g.s[2] == 1 {
                seg[a - ow..b - ow].copy_from_slice(&xrow[base..base + (b - a)]);
            } else {
                for (q, v) in seg[a - ow..b - ow].iter_mut().enumerate() {
                    *v = xrow[base + q * g.s[2]];
                }
            }
        }
        p += len;
    }
}

/// One input channel per group: each output plane is a sum of shifted,
/// scaled input rows.
fn direct(g: &Geo, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], t: usize) -> Result<(), KernelError> {
    let (cout_g, kn, in_n, on) = (g.cout_g(), g.k_n(), g.in_n(), g.out_n());
    let [_, ho, wo] = g.o;
    threads::for_each_chunk(t, y, on, |plane, yo| {
        let (n, o) = (plane / g.cout, plane % g.cout);
        let ci = o / cout_g; // cin_g == 1: the group's only input channel
        let xc = &x[(n * g.cin + ci) * in_n..][..in_n];
        yo.fill(bias.map_or(0.0, |b| b[o]));
        for kk in 0..kn {
            let wv = w[o * kn + kk];
            let (kd, kh, kw) = (kk / (g.k[1] * g.k[2]), (kk / g.k[2]) % g.k[1], kk % g.k[2]);
            let (dlo, dhi) = valid_range(g.i[0], g.o[0], g.s[0], g.p[0], kd, g.d[0]);
            let (hlo, hhi) = valid_range(g.i[1], ho, g.s[1], g.p[1], kh, g.d[1]);
            let (wlo, whi) = valid_range(g.i[2], wo, g.s[2], g.p[2], kw, g.d[2]);
            if wlo >= whi {
                continue;
            }
            for od in dlo..dhi {
                let id = od * g.s[0] + kd * g.d[0] - g.p[0];
                for oh in hlo..hhi {
                    let ih = oh * g.s[1] + kh * g.d[1] - g.p[1];
                    let xrow = &xc[(id * g.i[1] + ih) * g.i[2]..][..g.i[2]];
                    let yrow = &mut yo[(od * ho + oh) * wo..][wlo..whi];
                    let base = wlo * g.s[2] + kw * g.d[2] - g.p[2];
                    if g.s[2] == 1 {
                        for (yv, xv) in yrow.iter_mut().zip(&xrow[base..base + (whi - wlo)]) {
                            *yv += wv * xv;
                        }
                    } else {
                        for (q, yv) in yrow.iter_mut().enumerate() {
                            *yv += wv * xrow[base + q * g.s[2]];
                        }
                    }
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
#[path = "tests/conv.rs"]
mod tests;
