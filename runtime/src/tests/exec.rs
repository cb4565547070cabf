use super::*;
use crate::artifact::{
    host, write_artifact, Control, DimExpr, Manifest, StageSchedule, Step, TargetInfo, Ukernel, ValueDef, ValueSpec, WeightSource, FORMAT_VERSION,
};

const F: ElemType = ElemType::F32;

fn sym(s: &str) -> DimExpr {
    DimExpr::Sym(s.into())
}
fn c(v: i64) -> DimExpr {
    DimExpr::Const(v)
}
fn val(id: u32, dtype: ElemType, shape: Vec<DimExpr>, def: ValueDef) -> ValueSpec {
    ValueSpec { id, dtype, shape, def }
}

fn manifest(stage: StageSchedule) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        compiler: "omnic test".into(),
        target: TargetInfo { name: "cpu".into(), triple: host::host_triple(), cpu: "generic".into(), features: vec![] },
        pipeline: String::new(),
        metadata: Default::default(),
        control: Control::Forward { stage: stage.name.clone() },
        stages: vec![stage],
        weights: WeightSource::Embedded,
    }
}

fn f32s(t: &HostTensor) -> Vec<f32> {
    t.to_f32_vec()
}

/// x [batch, 4] → linear(w [3, 4], b [3]) → h [batch, 3] → view [batch·3] ;
/// matmul(view(h) [batch, 1, 3], m [3, 2]) → y [batch, 1, 2]; also a
/// constant output and an output that views an input.
fn ukernel_stage() -> StageSchedule {
    let bmul = |k: i64| DimExpr::Mul(vec![sym("batch"), c(k)]);
    StageSchedule {
        name: "forward".into(),
        inputs: vec![0],
        outputs: vec![("y".into(), 6), ("flat".into(), 4), ("k".into(), 7), ("xv".into(), 8)],
        values: vec![
            val(0, F, vec![sym("batch"), c(4)], ValueDef::Input { name: "x".into() }),
            val(1, F, vec![c(3), c(4)], ValueDef::Weight { name: "w".into() }),
            val(2, F, vec![c(3)], ValueDef::Weight { name: "b".into() }),
            val(3, F, vec![sym("batch"), c(3)], ValueDef::Computed),
            val(4, F, vec![bmul(3)], ValueDef::View { of: 3 }),
            val(5, F, vec![sym("batch"), c(1), c(3)], ValueDef::View { of: 4 }),
            val(6, F, vec![sym("batch"), c(1), c(2)], ValueDef::Computed),
            val(7, F, vec![c(3), c(2)], ValueDef::Constant { values: vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0] }),
            val(8, F, vec![bmul(4)], ValueDef::View { of: 0 }),
        ],
        steps: vec![
            Step::Ukernel { op: Ukernel::Linear { bias: true }, args: vec![0, 1, 2], results: vec![3] },
            Step::Ukernel { op: Ukernel::MatMul, args: vec![5, 7], results: vec![6] },
        ],
        flops: vec![],
    }
}

fn write(dir: &Path, name: &str, m: &Manifest, code: &[(String, Vec<u8>)], weights: &[(String, HostTensor)]) -> PathBuf {
    let p = dir.join(name);
    write_artifact(&p, m, code, weights).unwrap();
    p
}

fn toy_weights() -> Vec<(String, HostTensor)> {
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    vec![("w".into(), HostTensor::from_f32(&[3, 4], &w)), ("b".into(), HostTensor::from_f32(&[3], &[0.5, -0.5, 2.0]))]
}

#[test]
fn ukernel_schedule_runs_with_views_constants_and_symbolic_dims() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "toy.omni", &manifest(ukernel_stage()), &[], &toy_weights());
    let exe = Executable::load(&p, &ExecOptions { threads: 2, ..Default::default() }).unwrap();
    assert_eq!(exe.threads(), 2);
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let b = [0.5f32, -0.5, 2.0];
    for batch in [1usize, 3] {
        let x: Vec<f32> = (0..batch * 4).map(|i| (i as f32 * 0.37).sin()).collect();
        let xt = HostTensor::from_f32(&[batch, 4], &x);
        let extra = HostTensor::from_f32(&[1], &[0.0]);
        let out = exe.run_forward([("input.x", &xt), ("unrelated", &extra)]).unwrap();
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["y", "flat", "k", "xv"]);
        let h: Vec<f32> = (0..batch * 3).map(|i| (0..4).map(|k| x[(i / 3) * 4 + k] * w[(i % 3) * 4 + k]).sum::<f32>() + b[i % 3]).collect();
        assert_eq!(out[1].1.shape, vec![batch * 3]);
        for (a, e) in f32s(&out[1].1).iter().zip(&h) {
            assert!((a - e).abs() < 1e-5, "{a} vs {e}");
        }
        let y = f32s(&out[0].1);
        assert_eq!(out[0].1.shape, vec![batch, 1, 2]);
        for r in 0..batch {
            let (h0, h1, h2) = (h[r * 3], h[r * 3 + 1], h[r * 3 + 2]);
            assert!((y[r * 2] - (h0 + h2)).abs() < 1e-5);
            assert!((y[r * 2 + 1] - (h1 + h2)).abs() < 1e-5);
        }
        assert_eq!(f32s(&out[2].1), vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(f32s(&out[3].1), x);
        // Bare names work too.
        let again = exe.run("forward", [("x", &xt)]).unwrap();
        assert_eq!(again, out);
    }
    assert_eq!(exe.unused_inputs("forward", ["input.x", "x", "input.y", "output.y"]).unwrap(), vec!["input.y", "output.y"]);
    let ins = exe.inputs("forward").unwrap();
    assert_eq!((ins[0].name.as_str(), ins[0].dtype), ("x", F));
}

#[test]
fn dead_values_are_freed_after_their_last_use() {
    // x → linear → a → linear → b → linear → out: a dies after step 1, b after step 2.
    let s = StageSchedule {
        name: "forward".into(),
        inputs: vec![0],
        outputs: vec![("out".into(), 4)],
        values: vec![
            val(0, F, vec![c(2), c(3)], ValueDef::Input { name: "x".into() }),
            val(1, F, vec![c(3), c(3)], ValueDef::Weight { name: "w".into() }),
            val(2, F, vec![c(2), c(3)], ValueDef::Computed),
            val(3, F, vec![c(2), c(3)], ValueDef::Computed),
            val(4, F, vec![c(2), c(3)], ValueDef::Computed),
            val(5, F, vec![c(6)], ValueDef::View { of: 3 }),
        ],
        steps: vec![
            Step::Ukernel { op: Ukernel::Linear { bias: false }, args: vec![0, 1], results: vec![2] },
            Step::Ukernel { op: Ukernel::Linear { bias: false }, args: vec![2, 1], results: vec![3] },
            Step::Ukernel { op: Ukernel::Linear { bias: false }, args: vec![3, 1], results: vec![4] },
        ],
        flops: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let eye = HostTensor::from_f32(&[3, 3], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    let p = write(dir.path(), "chain.omni", &manifest(s), &[], &[("w".into(), eye)]);
    let exe = Executable::load(&p, &ExecOptions::default()).unwrap();
    assert_eq!(exe.stages[0].free_after, vec![vec![], vec![2], vec![3]]);
    let x = HostTensor::from_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let out = exe.run_forward([("x", &x)]).unwrap();
    assert_eq!(out[0].1, x);
}

#[test]
fn bad_inputs_are_errors_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "toy.omni", &manifest(ukernel_stage()), &[], &toy_weights());
    let exe = Executable::load(&p, &ExecOptions::default()).unwrap();
    let other = HostTensor::from_f32(&[2, 4], &[0.0; 8]);
    let e = exe.run_forward([("input.z", &other)]).unwrap_err().to_string();
    assert!(e.contains("input `x` is missing") && e.contains("x: f32[batch,4]"), "{e}");
    let ints = HostTensor::from_i64(&[2, 4], &[0; 8]);
    let e = exe.run_forward([("x", &ints)]).unwrap_err().to_string();
    assert!(e.contains("input `x`") && e.contains("i64[2, 4]") && e.contains("f32[batch,4]"), "{e}");
    let wrong = HostTensor::from_f32(&[2, 5], &[0.0; 10]);
    let e = exe.run_forward([("x", &wrong)]).unwrap_err().to_string();
    assert!(e.contains("input `x`") && e.contains("[2, 5]") && e.contains("[batch,4]"), "{e}");
    let rank = HostTensor::from_f32(&[8], &[0.0; 8]);
    let e = exe.run_forward([("x", &rank)]).unwrap_err().to_string();
    assert!(e.contains("`x`") && e.contains("[8]"), "{e}");
    let short = HostTensor { dtype: F, shape: vec![2, 4], data: vec![0; 7] };
    let e = exe.run_forward([("x", &short)]).unwrap_err().to_string();
    assert!(e.contains("input `x`") && e.contains("7 bytes"), "{e}");
    let e = exe.run("backward", [("x", &other)]).unwrap_err().to_string();
    assert!(e.contains("no stage `backward`") && e.contains("`forward`"), "{e}");
}

#[test]
fn misaligned_inputs_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "toy.omni", &manifest(ukernel_stage()), &[], &toy_weights());
    let exe = Executable::load(&p, &ExecOptions::default()).unwrap();
    let x = HostTensor::from_f32(&[1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let want = exe.run_forward([("x", &x)]).unwrap();
    // Same bytes, starting at an odd address.
    let mut raw = vec![0u8; 17];
    let off = if (raw.as_ptr() as usize).is_multiple_of(2) { 1 } else { 0 };
    raw[off..off + 16].copy_from_slice(&x.data);
    let mut data = raw.split_off(off);
    data.truncate(16);
    let mis = HostTensor { dtype: F, shape: vec![1, 4], data };
    let got = exe.run_forward([("x", &mis)]).unwrap();
    assert_eq!(got, want);
}

/// A C compiler for the kernel tests (they are skipped without one).
fn cc() -> Option<String> {
    for c in ["cc", "gcc", "clang"] {
        if std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(c.to_string());
        }
    }
    None
}

/// Hand-written kernels with the MLIR C-interface ABI.
const KERNELS_C: &str = r#"
#include <stdint.h>
typedef struct { float *alloc, *data; int64_t off, sizes[2], strides[2]; } M2;
typedef struct { float *alloc, *data; int64_t off, sizes[1], strides[1]; } M1;
typedef struct { float *alloc, *data; int64_t off; } M0;
/* out[i][j] = a[i][j] * s + b[j] */
void _mlir_ciface_scale_add(M2 *a, M0 *s, M1 *b, M2 *out) {
    for (int64_t i = 0; i < a->sizes[0]; i++)
        for (int64_t j = 0; j < a->sizes[1]; j++)
            out->data[out->off + i * out->strides[0] + j * out->strides[1]] =
                a->data[a->off + i * a->strides[0] + j * a->strides[1]] * s->data[s->off] + b->data[b->off + j * b->strides[0]];
}
/* two results: row sums and the rank-2 copy with each element negated */
void _mlir_ciface_two(M2 *a, M1 *sums, M2 *neg) {
    for (int64_t i = 0; i < a->sizes[0]; i++) {
        float acc = 0;
        for (int64_t j = 0; j < a->sizes[1]; j++) {
            float v = a->data[a->off + i * a->strides[0] + j * a->strides[1]];
            acc += v;
            neg->data[i * neg->strides[0] + j] = -v;
        }
        sums->data[i * sums->strides[0]] = acc;
    }
}
"#;

fn build_so(dir: &Path) -> Option<Vec<u8>> {
    let cc = cc()?;
    let src = dir.join("k.c");
    let so = dir.join("k.so");
    std::fs::write(&src, KERNELS_C).unwrap();
    let st = std::process::Command::new(cc).args(["-O1", "-shared", "-fPIC", "-o"]).arg(&so).arg(&src).status().ok()?;
    assert!(st.success(), "compiling the test kernels failed");
    Some(std::fs::read(&so).unwrap())
}

fn kernel_stage(symbol2: &str) -> StageSchedule {
    StageSchedule {
        name: "forward".into(),
        inputs: vec![0],
        outputs: vec![("sums".into(), 4), ("neg".into(), 5), ("out".into(), 3)],
        values: vec![
            val(0, F, vec![sym("n"), c(3)], ValueDef::Input { name: "a".into() }),
            val(1, F, vec![], ValueDef::Constant { values: vec![2.0] }),
            val(2, F, vec![c(3)], ValueDef::Weight { name: "b".into() }),
            val(3, F, vec![sym("n"), c(3)], ValueDef::Computed),
            val(4, F, vec![sym("n")], ValueDef::Computed),
            val(5, F, vec![sym("n"), c(3)], ValueDef::Computed),
        ],
        steps: vec![
            Step::Kernel { symbol: "scale_add".into(), args: vec![0, 1, 2], results: vec![3], split: vec![] },
            Step::Kernel { symbol: symbol2.into(), args: vec![3], results: vec![4, 5], split: vec![] },
        ],
        flops: vec![],
    }
}

#[test]
fn kernel_steps_call_the_code_object_through_memref_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let Some(so) = build_so(dir.path()) else {
        eprintln!("no C compiler: skipping");
        return;
    };
    let b = HostTensor::from_f32(&[3], &[1.0, 2.0, 3.0]);
    let p = write(dir.path(), "k.omni", &manifest(kernel_stage("two")), &[("cpu.so".into(), so.clone())], &[("b".into(), b)]);
    let exe = Executable::load(&p, &ExecOptions::default()).unwrap();
    let a = HostTensor::from_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let out = exe.run_forward([("a", &a)]).unwrap();
    let outv: Vec<f32> = vec![3.0, 6.0, 9.0, 9.0, 12.0, 15.0];
    assert_eq!(out[2].1, HostTensor::from_f32(&[2, 3], &outv));
    assert_eq!(out[0].1, HostTensor::from_f32(&[2], &[18.0, 36.0]));
    assert_eq!(out[1].1, HostTensor::from_f32(&[2, 3], &outv.iter().map(|v| -v).collect::<Vec<_>>()));

    // A symbol the code object lacks: a load error naming it.
    let p =
        write(dir.path(), "missing.omni", &manifest(kernel_stage("nope")), &[("cpu.so".into(), so)], &[("b".into(), HostTensor::from_f32(&[3], &[0.0; 3]))]);
    let e = Executable::load(&p, &ExecOptions::default()).unwrap_err().to_string();
    assert!(e.contains("_mlir_ciface_nope") && e.contains("cpu.so") && e.contains("step 1"), "{e}");

    // A code object that is not a shared object.
    let p = write(
        dir.path(),
        "junk.omni",
        &manifest(kernel_stage("two")),
        &[("cpu.so".into(), vec![0; 10])],
        &[("b".into(), HostTensor::from_f32(&[3], &[0.0; 3]))],
    );
    let e = Executable::load(&p, &ExecOptions::default()).unwrap_err().to_string();
    assert!(e.contains("code object `cpu.so`"), "{e}");
}

#[test]
fn too_many_kernel_arguments_is_a_load_error() {
    let mut values = vec![val(0, F, vec![c(1)], ValueDef::Input { name: "x".into() })];
    for i in 1..=32 {
        values.push(val(i, F, vec![c(1)], ValueDef::Computed));
    }
    let s = StageSchedule {
        name: "forward".into(),
        inputs: vec![0],
        outputs: vec![("o".into(), 1)],
        values,
        steps: vec![Step::Kernel { symbol: "wide".into(), args: vec![0], results: (1..=32).collect(), split: vec![] }],
        flops: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(so) = build_so(dir.path()) else {
        eprintln!("no C compiler: skipping");
        return;
    };
    let p = write(dir.path(), "wide.omni", &manifest(s), &[("cpu.so".into(), so)], &[]);
    let e = Executable::load(&p, &ExecOptions::default()).unwrap_err().to_string();
    assert!(e.contains("`wide`") && e.contains("33 memref arguments") && e.contains("at most 32"), "{e}");
}

#[test]
fn descriptors_are_row_major() {
    let p = 64 as *mut u8;
    assert_eq!(descriptor(p, &[2, 3, 4]), vec![64, 64, 0, 2, 3, 4, 12, 4, 1]);
    assert_eq!(descriptor(p, &[]), vec![64, 64, 0]);
    assert_eq!(descriptor(p, &[5]), vec![64, 64, 0, 5, 1]);
}

#[test]
fn call_kernel_supports_every_arity_up_to_32() {
    extern "C" fn count(a: *mut c_void, b: *mut c_void) {
        // Writes the address difference into the first argument's target.
        // SAFETY: the test passes two valid i64 pointers.
        unsafe { *(a as *mut i64) = b as i64 - a as i64 };
    }
    let mut x = [0i64; 2];
    let pa = x.as_mut_ptr();
    let mut args = [pa.cast::<c_void>(), pa.wrapping_add(1).cast::<c_void>()];
    let f = code::KernelPtr::from_fn_addr(count as *const () as usize);
    unsafe { call_kernel(f, &mut args) }.unwrap();
    assert_eq!(x[0], 8);
    let mut many = vec![std::ptr::null_mut::<c_void>(); 33];
    assert_eq!(unsafe { call_kernel(f, &mut many) }, Err(33));
}

#[test]
fn executables_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Executable>();
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "toy.omni", &manifest(ukernel_stage()), &[], &toy_weights());
    let exe = Executable::load(&p, &ExecOptions { threads: 1, ..Default::default() }).unwrap();
    let x = HostTensor::from_f32(&[2, 4], &[0.5; 8]);
    let want = exe.run_forward([("x", &x)]).unwrap();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..3).map(|_| s.spawn(|| exe.run_forward([("x", &x)]).unwrap())).collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), want);
        }
    });
}
