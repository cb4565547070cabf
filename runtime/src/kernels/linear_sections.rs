//! The `LinearSections` ukernel: `Linear` whose input is a `concat` and
//! whose result is a `split`, both along the last axis, done in place by
//! the GEMM (see [`crate::artifact::manifest::Ukernel::LinearSections`]).
//!
//! The compiler emits it for `linear → split` and `concat → linear`, so the
//! split/concat copies around the GEMM disappear. Operands:
//! `(x_0 [*, K_0], …, x_{m−1} [*, K_{m−1}], w [N, ΣK], [b [N]])`, results
//! `y_o [*, N_o]` with `ΣN_o = N`; all `x_i` and `y_o` share the leading
//! dims.
//!
//! With a panel-packed weight (the executor's usual case) it is one call of
//! [`gemm_packed::linear_packed_sections`] (every `N_o` but the last must be
//! a multiple of [`gemm_packed::NR`]). With a plain `[N, K]` weight (an
//! unpacked artifact, a test executor) it is one `gemm` call per (output
//! section, input section): the first input section with the bias, the
//! others accumulating; any widths.

use super::gemm::{self, Epilogue, MatMut, MatRef};
use super::gemm_packed;
use super::{KernelError, TensorMut, TensorRef};

const NAME: &str = "linear";

/// Runs `LinearSections { bias, inputs }`; `packed` says the weight holds
/// the panel layout of [`gemm_packed`] (declared shape still `[N, K]`).
pub fn run(bias: bool, inputs: usize, args: &[TensorRef], results: &mut [TensorMut], packed: bool, threads: usize) -> Result<(), KernelError> {
    let want_args = inputs + 1 + bias as usize;
    if inputs == 0 || args.len() != want_args || results.is_empty() {
        let msg = format!(
            "{} operands and {} results, expected {want_args} ({inputs} input sections, weight, bias {bias}) and at least 1",
            args.len(),
            results.len()
        );
        return Err(KernelError::new(NAME, msg));
    }
    let w = &args[inputs];
    let &[n, k] = w.shape else { return Err(KernelError::new(NAME, format!("weight {:?} needs rank 2", w.shape))) };
    let Some((_, lead)) = args[0].shape.split_last() else {
        return Err(KernelError::new(NAME, format!("input section 0 {:?} needs rank ≥ 1", args[0].shape)));
    };
    let mut xs = Vec::with_capacity(inputs);
    let mut ks = Vec::with_capacity(inputs);
    for (i, x) in args[..inputs].iter().enumerate() {
        match x.shape.split_last() {
            Some((&kk, l)) if l == lead => ks.push(kk),
            _ => return Err(KernelError::new(NAME, format!("input section {i} has shape {:?}, expected {lead:?} + [K_{i}]", x.shape))),
        }
        xs.push(x.f32s(NAME, &format!("input section {i}"))?);
    }
    if ks.iter().sum::<usize>() != k {
        return Err(KernelError::new(NAME, format!("input sections {ks:?} add up to K = {}, weight {:?}", ks.iter().sum::<usize>(), w.shape)));
    }
    let wd = w.f32s(NAME, "weight")?;
    let bd = if bias {
        if args[inputs + 1].shape != [n] {
            return Err(KernelError::new(NAME, format!("bias has shape {:?}, expected [{n}]", args[inputs + 1].shape)));
        }
        Some(args[inputs + 1].f32s(NAME, "bias")?)
    } else {
        None
    };
    let mut ns = Vec::with_capacity(results.len());
    for (o, y) in results.iter().enumerate() {
        match y.shape.split_last() {
            Some((&nn, l)) if l == lead => ns.push(nn),
            _ => return Err(KernelError::new(NAME, format!("result section {o} has shape {:?}, expected {lead:?} + [N_{o}]", y.shape))),
        }
    }
    if ns.iter().sum::<usize>() != n {
        return Err(KernelError::new(NAME, format!("result sections {ns:?} add up to N = {}, weight {:?}", ns.iter().sum::<usize>(), w.shape)));
    }
    let rows: usize = lead.iter().product();
    let mut ys: Vec<&mut [f32]> = Vec::with_capacity(results.len());
    for (o, y) in results.iter_mut().enumerate() {
        ys.push(y.f32s_mut(NAME, &format!("result section {o}"))?);
    }
    if packed {
        return gemm_packed::linear_packed_sections(&xs, &ks, rows, wd, n, bd, &mut ys, &ns, threads);
    }
    unpacked(&xs, &ks, rows, wd, n, k, bd, &mut ys, &ns, threads)
}

/// One `gemm` call per (output section, input section) on the plain
/// `w[N, K]` (module doc).
#[allow(clippy::too_many_arguments)]
fn unpacked(
    xs: &[&[f32]],
    ks: &[usize],
    rows: usize,
    w: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    ys: &mut [&mut [f32]],
    ns: &[usize],
    threads: usize,
) -> Result<(), KernelError> {
    gemm::need("weight", w.len(), n, k)?;
    let mut noff = 0;
    for (y, &nn) in ys.iter_mut().zip(ns) {
        if rows == 0 || nn == 0 {
            noff += nn;
            continue;
        }
        let bsec = bias.map(|b| &b[noff..noff + nn]);
        if k == 0 {
            for r in y.chunks_mut(nn) {
                match bsec {
                    Some(b) => r.copy_from_slice(b),
                    None => r.fill(0.0),
                }
            }
        }
        let mut koff = 0;
        let mut first = true;
        for (x, &kk) in xs.iter().zip(ks) {
            if kk == 0 {
                continue;
            }
            // Rows noff..noff+nn, columns koff..koff+kk of w, transposed.
            let b = MatRef { data: &w[noff * k + koff..], rows: kk, cols: nn, rs: 1, cs: k };
            let epi = match (first, bsec) {
                (true, Some(b)) => Epilogue::BiasN(b),
                (true, None) => Epilogue::None,
                (false, _) => Epilogue::Accumulate,
            };
            gemm::gemm(MatMut::row_major(y, rows, nn), MatRef::row_major(x, rows, kk), b, epi, threads)?;
            koff += kk;
            first = false;
        }
        noff += nn;
    }
    Ok(())
}

#[cfg(test)]
#[path = "tests/linear_sections.rs"]
mod tests;
