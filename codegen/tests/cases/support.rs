//! Shared helpers: compile a stage ahead of time (schedule + shared object),
//! load it with `dlopen`, run its schedule with a small executor (kernels
//! through the C interface with memref descriptors built here, ukernels
//! through the runtime's kernels), and compare with the reference
//! evaluator.

use libloading::Library;
use omnic_codegen::cpu::aot;
use omnic_codegen::{schedule_stage, AotOptions, KernelCache, KernelSource};
use omnic_ir::eval::{evaluate, Precision, Tensor};
use omnic_ir::{DType, Graph, Stage};
use omnic_runtime::artifact::dim::{bind, eval_shape};
use omnic_runtime::artifact::manifest::{StageSchedule, Step, ValueDef};
use omnic_runtime::kernels::{run_ukernel, TensorMut, TensorRef};
use omnic_runtime::ElemType;
use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;

/// `|got - ref| <= rtol·|ref| + atol` elementwise, against the evaluator in
/// `Precision::F32` (every op computed in f64 and rounded to its dtype).
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub rtol: f64,
    pub atol: f64,
}

/// The tolerance of the brief: 1e-6 relative plus 1e-6 absolute.
pub const TOL: Tol = Tol { rtol: 1e-6, atol: 1e-6 };

/// Largest error seen, in units of the allowed error (≤ 1 passes).
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    pub worst: f64,
    pub max_rel: f64,
    pub max_abs: f64,
}

pub fn stage(name: &str, graph: Graph) -> Stage {
    Stage { name: name.to_string(), graph }
}

/// A stage compiled to a loaded shared object.
pub struct Compiled {
    pub schedule: StageSchedule,
    pub kernels: Vec<KernelSource>,
    pub lib: Library,
    /// Seconds spent inside kernel and ukernel calls by the last [`Compiled::run`].
    pub step_secs: std::cell::Cell<f64>,
    _dir: TempDir,
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let tag: String = tag.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let p = std::env::temp_dir().join(format!("omnic-cg-test-{}-{}-{tag}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Schedule and compile `st`, write the `.so` and load it.
pub fn compile(st: &Stage) -> Result<Compiled, omnic_codegen::CodegenError> {
    let mut cache = KernelCache::new();
    let schedule = schedule_stage(st, &mut cache)?;
    let so = aot::compile(&cache.kernels, &AotOptions::default())?;
    let dir = TempDir::new(&st.name);
    let path = dir.0.join("kernels.so");
    std::fs::write(&path, &so.bytes).unwrap();
    // SAFETY: a shared object we just built; its initialisers are LLVM's.
    let lib = unsafe { Library::new(&path) }.unwrap_or_else(|e| panic!("dlopen {}: {e}", path.display()));
    for s in &so.symbols {
        // SAFETY: looking a symbol up does not call it.
        unsafe { lib.get::<*const c_void>(format!("_mlir_ciface_{s}\0").as_bytes()) }.unwrap_or_else(|e| panic!("symbol _mlir_ciface_{s}: {e}"));
    }
    Ok(Compiled { schedule, kernels: cache.kernels, lib, step_secs: std::cell::Cell::new(0.0), _dir: dir })
}

/// Dense buffer of `n` bytes, 8-byte aligned.
struct Buf {
    words: Vec<u64>,
    len: usize,
}

impl Buf {
    fn new(len: usize, fill: u8) -> Buf {
        let mut b = Buf { words: vec![0; len.div_ceil(8).max(1)], len };
        b.bytes_mut().fill(fill);
        b
    }
    fn from_bytes(bytes: &[u8]) -> Buf {
        let mut b = Buf::new(bytes.len(), 0);
        b.bytes_mut().copy_from_slice(bytes);
        b
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

pub fn dtype_of(e: ElemType) -> DType {
    match e {
        ElemType::F32 => DType::F32,
        ElemType::F16 => DType::F16,
        ElemType::BF16 => DType::BF16,
        ElemType::I64 => DType::I64,
        ElemType::I32 => DType::I32,
        ElemType::Bool => DType::Bool,
        ElemType::F64 => panic!("f64 is not an IR dtype"),
    }
}

fn encode(dt: DType, values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dt.size_bytes());
    for &v in values {
        match dt {
            DType::F32 => out.extend((v as f32).to_le_bytes()),
            DType::F16 => out.extend(half::f16::from_f64(v).to_le_bytes()),
            DType::BF16 => out.extend(half::bf16::from_f64(v).to_le_bytes()),
            DType::I64 => out.extend((v as i64).to_le_bytes()),
            DType::I32 => out.extend((v as i64 as i32).to_le_bytes()),
            DType::Bool => out.push(u8::from(v != 0.0)),
        }
    }
    out
}

fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    match &t.data {
        omnic_ir::eval::Data::I(v) => {
            let mut out = Vec::new();
            for &x in v {
                match t.dtype {
                    DType::I32 => out.extend((x as i32).to_le_bytes()),
                    _ => out.extend(x.to_le_bytes()),
                }
            }
            out
        }
        _ => encode(t.dtype, &t.to_f64_vec()),
    }
}

fn decode(dt: DType, shape: &[usize], b: &[u8]) -> Tensor {
    match dt {
        DType::F32 => Tensor::from_f32(shape, &b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()),
        DType::F16 => Tensor::from_f64(dt, shape, b.chunks_exact(2).map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f64()).collect()),
        DType::BF16 => Tensor::from_f64(dt, shape, b.chunks_exact(2).map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f64()).collect()),
        DType::I64 => Tensor::from_i64(dt, shape, b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()),
        DType::I32 => Tensor::from_i64(dt, shape, b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect()),
        DType::Bool => Tensor::from_bool(shape, b.iter().map(|&x| x != 0).collect()),
    }
}

type P = *mut c_void;

/// Call `f(args…)` with as many pointer arguments as `args` holds.
unsafe fn call(f: *const c_void, a: &[P]) {
    macro_rules! arity {
        (@p $i:literal) => { P };
        ($($n:literal: [$($i:literal),*]),* $(,)?) => {
            match a.len() {
                $($n => {
                    let g: unsafe extern "C" fn($(arity!(@p $i)),*) = std::mem::transmute(f);
                    g($(a[$i]),*)
                })*
                n => panic!("kernel with {n} descriptors: extend `call`"),
            }
        };
    }
    arity!(
        1: [0], 2: [0, 1], 3: [0, 1, 2], 4: [0, 1, 2, 3], 5: [0, 1, 2, 3, 4], 6: [0, 1, 2, 3, 4, 5], 7: [0, 1, 2, 3, 4, 5, 6],
        8: [0, 1, 2, 3, 4, 5, 6, 7], 9: [0, 1, 2, 3, 4, 5, 6, 7, 8], 10: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        11: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 12: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        13: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 14: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
        15: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], 16: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        17: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        18: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
        19: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18],
        20: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19],
        21: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
        22: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21],
        23: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22],
        24: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23],
        25: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24],
        26: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25],
        27: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26],
        28: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27],
        29: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28],
        30: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29],
        31: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30],
        32: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31],
    )
}

/// A rank-`r` memref descriptor for a dense row-major buffer.
fn descriptor(ptr: *mut u8, shape: &[usize]) -> Vec<i64> {
    let mut d = vec![ptr as i64, ptr as i64, 0];
    d.extend(shape.iter().map(|&s| s as i64));
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1] as i64;
    }
    d.extend(strides);
    d
}

impl Compiled {
    /// Run the schedule on named inputs and weights; returns the named outputs.
    pub fn run(&self, inputs: &HashMap<String, Tensor>, weights: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
        let s = &self.schedule;
        let spec = |id: u32| s.value(id).unwrap_or_else(|| panic!("value {id} missing"));
        // Bind symbols from the inputs.
        let mut decls = Vec::new();
        for &id in &s.inputs {
            let ValueDef::Input { name } = &spec(id).def else { panic!("input {id} is not an input") };
            let t = inputs.get(name).unwrap_or_else(|| panic!("missing input `{name}`"));
            decls.push((name.as_str(), spec(id).shape.as_slice(), t.shape.as_slice()));
        }
        let b = bind(&decls).expect("binding input shapes");
        let shapes: HashMap<u32, Vec<usize>> = s.values.iter().map(|v| (v.id, eval_shape(&v.shape, &b).expect("value shape"))).collect();
        // Buffers by root value.
        let root = |mut id: u32| {
            while let ValueDef::View { of } = &spec(id).def {
                id = *of;
            }
            id
        };
        let mut bufs: HashMap<u32, Buf> = HashMap::new();
        for v in &s.values {
            let dt = dtype_of(v.dtype);
            let n: usize = shapes[&v.id].iter().product();
            let buf = match &v.def {
                ValueDef::Input { name } => Buf::from_bytes(&tensor_bytes(&inputs[name])),
                ValueDef::Weight { name } => {
                    let w = weights.get(name).unwrap_or_else(|| panic!("missing weight `{name}`"));
                    assert_eq!(w.shape, shapes[&v.id], "weight `{name}` shape");
                    Buf::from_bytes(&tensor_bytes(w))
                }
                ValueDef::Constant { values } => Buf::from_bytes(&encode(dt, values)),
                ValueDef::Computed => Buf::new(n * dt.size_bytes(), 0xA5),
                ValueDef::View { .. } => continue,
            };
            bufs.insert(v.id, buf);
        }
        let mut step_secs = 0.0;
        for step in &s.steps {
            let t = std::time::Instant::now();
            match step {
                Step::Kernel { symbol, args, results, .. } => {
                    let mut descs: Vec<Vec<i64>> = Vec::new();
                    for &id in args.iter().chain(results) {
                        let r = root(id);
                        let ptr = bufs.get_mut(&r).unwrap().words.as_mut_ptr().cast::<u8>();
                        descs.push(descriptor(ptr, &shapes[&id]));
                    }
                    let ptrs: Vec<P> = descs.iter_mut().map(|d| d.as_mut_ptr().cast::<c_void>()).collect();
                    // SAFETY: the symbol is a kernel of this object taking one
                    // descriptor pointer per argument and result; every
                    // buffer is dense, row-major and as large as its shape.
                    unsafe {
                        let f = *self.lib.get::<*const c_void>(format!("_mlir_ciface_{symbol}\0").as_bytes()).unwrap();
                        call(f, &ptrs);
                    }
                }
                Step::Ukernel { op, args, results } => {
                    let mut outs: Vec<(u32, Buf)> = results.iter().map(|&id| (id, bufs.remove(&root(id)).unwrap())).collect();
                    let arg_refs: Vec<TensorRef> = args.iter().map(|&id| TensorRef::new(spec(id).dtype, &shapes[&id], bufs[&root(id)].bytes())).collect();
                    let mut res: Vec<TensorMut> = outs.iter_mut().map(|(id, b)| TensorMut::new(spec(*id).dtype, &shapes[id], b.bytes_mut())).collect();
                    run_ukernel(op, &arg_refs, &mut res, 1).unwrap_or_else(|e| panic!("ukernel: {e}"));
                    drop(res);
                    drop(arg_refs);
                    for (id, b) in outs {
                        bufs.insert(root(id), b);
                    }
                }
            }
            step_secs += t.elapsed().as_secs_f64();
        }
        self.step_secs.set(step_secs);
        s.outputs.iter().map(|(name, id)| (name.clone(), decode(dtype_of(spec(*id).dtype), &shapes[id], bufs[&root(*id)].bytes()))).collect()
    }
}

/// Compile `st`, run it and the reference evaluator on `inputs` (and
/// `weights`), and check every output within `tol`.
pub fn check(st: &Stage, inputs: &HashMap<String, Tensor>, weights: &HashMap<String, Tensor>, tol: Tol) -> Report {
    let c = compile(st).unwrap_or_else(|e| panic!("compiling `{}` failed: {e}", st.name));
    let got = c.run(inputs, weights);
    let want = evaluate(&st.graph, inputs, weights, Precision::F32).expect("reference evaluation");
    compare(&st.name, &got, &want, tol)
}

pub fn compare(what: &str, got: &HashMap<String, Tensor>, want: &HashMap<String, Tensor>, tol: Tol) -> Report {
    assert_eq!(got.len(), want.len(), "{what}: number of outputs");
    let mut r = Report::default();
    for (name, w) in want {
        let g = got.get(name).unwrap_or_else(|| panic!("{what}: output `{name}` missing"));
        assert_eq!(g.shape, w.shape, "{what}: shape of `{name}`");
        assert_eq!(g.dtype, w.dtype, "{what}: dtype of `{name}`");
        let (gv, wv) = (g.to_f64_vec(), w.to_f64_vec());
        for (i, (&a, &b)) in gv.iter().zip(&wv).enumerate() {
            if a.is_nan() && b.is_nan() || a == b {
                continue;
            }
            let d = (a - b).abs();
            let allowed = tol.rtol * b.abs() + tol.atol;
            r.worst = r.worst.max(d / allowed);
            r.max_abs = r.max_abs.max(d);
            if b != 0.0 {
                r.max_rel = r.max_rel.max(d / b.abs());
            }
            assert!(d <= allowed, "{what}: output `{name}`[{i}] = {a:e}, reference {b:e}: error {d:e} exceeds {allowed:e} ({tol:?})");
        }
    }
    r
}
