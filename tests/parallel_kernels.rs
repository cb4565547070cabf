//! Generated kernels cut into row blocks on several threads (the
//! compiler's `cpu::parallel` analysis, the executor's `exec::split`):
//! the same artifact run with 1 and with several threads gives
//! bit-identical outputs, which match the IR's reference evaluator (a
//! small program built here) or the reference library (the FLUX fixture).

use crate::support::{fixture, omnic, run, text};
use omnic_codegen::AotOptions;
use omnic_ir::eval::{evaluate, Precision, Tensor};
use omnic_ir::{Builder, DType, Dim, Graph, Program, UnaryOp};
use omnic_runtime::artifact::{write_artifact, Control, Manifest, Step, WeightSource, FORMAT_VERSION};
use omnic_runtime::exec::{ExecOptions, Executable};
use omnic_runtime::HostTensor;
use std::collections::HashMap;
use std::path::Path;

/// Modulated layer norm on `[1, s, 64]`, a head split to `[1, 4, s, 16]`
/// (rows strided in the result), an rms norm with a rope-like table
/// `[s, 16]` on the heads (strided argument and result), the heads merged
/// back and a GELU: kernels split in place and staged.
fn graph() -> Graph {
    let s = Dim::sym("s");
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![1.into(), s.clone(), 64.into()]).unwrap();
    let sc = b.input("scale", DType::F32, vec![1.into(), 1.into(), 64.into()]).unwrap();
    let cos = b.input("cos", DType::F32, vec![s.clone(), 16.into()]).unwrap();
    let w = b.input("w", DType::F32, vec![16.into()]).unwrap();
    let n = b.layer_norm(x, None, None, 1e-6).unwrap();
    let one = b.add_scalar(sc, 1.0).unwrap();
    let m = b.mul(n, one).unwrap();
    let r = b.reshape(m, vec![1.into(), s.clone(), 4.into(), 16.into()]).unwrap();
    let t = b.transpose(r, &[0, 2, 1, 3]).unwrap();
    let q = b.rms_norm(t, Some(w), 1e-6).unwrap();
    let q = b.mul(q, cos).unwrap();
    let back = b.transpose(q, &[0, 2, 1, 3]).unwrap();
    let back = b.reshape(back, vec![1.into(), s.clone(), 64.into()]).unwrap();
    let g = b.unary(UnaryOp::GeluTanh, back).unwrap();
    b.output("q", q);
    b.output("g", g);
    b.finish().unwrap()
}

fn write(program: &Program, path: &Path) {
    let compiled = omnic_codegen::target("cpu").unwrap().compile(program, &AotOptions::default()).unwrap();
    let m = Manifest {
        format_version: FORMAT_VERSION,
        compiler: "omnic test".into(),
        target: compiled.object.target.clone(),
        pipeline: String::new(),
        metadata: Default::default(),
        control: Control::Forward { stage: "forward".into() },
        stages: compiled.schedule.stages.clone(),
        weights: WeightSource::Embedded,
    };
    write_artifact(path, &m, &[("cpu.so".into(), compiled.object.bytes.clone())], &[]).unwrap();
}

fn run_with(art: &Path, threads: usize, inputs: &[(String, HostTensor)]) -> Vec<(String, HostTensor)> {
    let exe = Executable::load(art, &ExecOptions { threads, ..Default::default() }).unwrap();
    exe.run_forward(inputs.iter().map(|(n, t)| (n.as_str(), t))).unwrap()
}

fn split_steps(art: &Path) -> usize {
    let exe = Executable::load(art, &ExecOptions { threads: 1, ..Default::default() }).unwrap();
    exe.artifact().manifest().stages.iter().flat_map(|s| &s.steps).filter(|s| matches!(s, Step::Kernel { split, .. } if !split.is_empty())).count()
}

fn same_bits(a: &[(String, HostTensor)], b: &[(String, HostTensor)], what: &str) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!((na, &ta.shape), (nb, &tb.shape), "{what}");
        assert!(ta.data == tb.data, "{what}: output `{na}` differs between 1 thread and several");
    }
}

#[test]
fn split_kernels_match_one_thread_and_the_evaluator() {
    let g = graph();
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("split.omni");
    write(&Program::single("forward", g.clone()), &art);
    let splits = split_steps(&art);
    assert!(splits >= 3, "only {splits} kernel steps can be split");
    let seq = 301; // not a multiple of the block counts
    let gen = |n: usize, k: f32| (0..n).map(|i| (i as f32 * k).sin() * 2.0).collect::<Vec<f32>>();
    let host = [
        ("x", vec![1, seq, 64], gen(seq * 64, 0.37)),
        ("scale", vec![1, 1, 64], gen(64, 1.3)),
        ("cos", vec![seq, 16], gen(seq * 16, 0.11)),
        ("w", vec![16], gen(16, 0.7)),
    ];
    let inputs: Vec<(String, HostTensor)> = host.iter().map(|(n, s, v)| (n.to_string(), HostTensor::from_f32(s, v))).collect();
    let one = run_with(&art, 1, &inputs);
    for threads in [2, 3, 4] {
        same_bits(&one, &run_with(&art, threads, &inputs), &format!("{threads} threads"));
    }
    let ev_in: HashMap<String, Tensor> = host.iter().map(|(n, s, v)| (n.to_string(), Tensor::from_f32(s, v))).collect();
    let want = evaluate(&g, &ev_in, &HashMap::<String, Tensor>::new(), Precision::F32).unwrap();
    for (name, t) in &one {
        let r = want[name].to_f32_vec();
        let got = t.to_f32_vec();
        assert_eq!(got.len(), r.len(), "{name}");
        let worst = got.iter().zip(&r).map(|(a, b)| (a - b).abs() as f64 / (1.0 + b.abs() as f64)).fold(0.0, f64::max);
        eprintln!("{name}: max error vs evaluator {worst:.2e}");
        assert!(worst <= 1e-5, "{name}: {worst:e} vs the evaluator");
    }
}

#[test]
fn split_flux_matches_one_thread_and_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("flux.omni");
    let src = fixture("flux");
    let o = run(&omnic(), &["compile", src.to_str().unwrap(), "-o", art.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(split_steps(&art) > 0);
    let io = omnic_runtime::io::read_all(&src.join("io.safetensors")).unwrap();
    let one = run_with(&art, 1, &io);
    let three = run_with(&art, 3, &io);
    same_bits(&one, &three, "flux");
    let refs: HashMap<&str, &HostTensor> = io.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let r = refs["output.sample"];
    let (m, _) = one.iter().find(|(n, _)| n == "sample").unwrap().1.compare(r).unwrap();
    assert!(m <= 1e-4, "flux sample: max abs {m:e}");
}
