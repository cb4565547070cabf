use super::*;
use crate::kernels::run_ukernel;
use crate::kernels::testutil::Rng;

#[test]
fn linear_only_weights_excludes_other_uses() {
    // Values: 0 x, 1 w (Linear only), 2 w2 (Linear weight and an output), 3 w3 (Linear input), 4 view of 1, 5 y, 6 bf16.
    let values = [(0, true), (1, true), (2, true), (3, true), (1, true), (5, true), (6, false)];
    let steps = vec![(Some(1), vec![0, 1]), (Some(1), vec![0, 2]), (Some(1), vec![1, 0]), (None, vec![5]), (Some(1), vec![0, 6])];
    let got = linear_only_weights(&values, &steps, &[2]);
    assert_eq!(got, vec![false, false, false, false, false, false, false], "w is also read as an input by step 2");
    let steps = vec![(Some(1), vec![0, 1]), (Some(1), vec![0, 2]), (Some(1), vec![0, 6]), (Some(1), vec![0, 4])];
    let got = linear_only_weights(&values, &steps, &[2]);
    assert_eq!(got, vec![false, false, false, false, false, false, false], "a view of w is read");
    let got = linear_only_weights(&values, &steps[..3], &[2]);
    assert_eq!(got, vec![false, true, false, false, false, false, false]);
    // A LinearSections step with two input sections reads its weight as arg 2:
    // w (1) there is a weight use; x (0) and 3 as sections are not.
    let steps = vec![(Some(2), vec![0, 3, 1]), (Some(1), vec![0, 2])];
    let got = linear_only_weights(&values, &steps, &[2]);
    assert_eq!(got, vec![false, true, false, false, false, false, false]);
    let steps = vec![(Some(2), vec![1, 3, 0])];
    let got = linear_only_weights(&values, &steps, &[]);
    assert_eq!(got, vec![true, false, false, false, false, false, false], "w read as a section is not a weight use");
}

#[test]
fn linear_on_a_packed_weight_equals_linear() {
    let mut rng = Rng::new(7);
    for (bias, rows, k, n) in [(true, 5, 17, 9), (false, 33, 64, 48), (true, 1, 3, 130), (true, 20, 300, 70)] {
        let x = rng.vec(rows * k);
        let w = rng.vec(n * k);
        let b = rng.vec(n);
        let mut wt = vec![0f32; n * k];
        gemm_packed::pack_panels(&w, n, k, &mut wt);
        let (xs, ws, bs, ys) = ([rows, k], [n, k], [n], [rows, n]);
        let op = Ukernel::Linear { bias };
        let mut want = vec![0f32; rows * n];
        let mut got = vec![0f32; rows * n];
        let mut args = vec![TensorRef::from_f32(&xs, &x), TensorRef::from_f32(&ws, &w)];
        let mut args_t = vec![TensorRef::from_f32(&xs, &x), TensorRef::from_f32(&ws, &wt)];
        if bias {
            args.push(TensorRef::from_f32(&bs, &b));
            args_t.push(TensorRef::from_f32(&bs, &b));
        }
        run_ukernel(&op, &args, &mut [TensorMut::from_f32(&ys, &mut want)], 1).unwrap();
        run_linear_t(&op, &args_t, &mut [TensorMut::from_f32(&ys, &mut got)], 2).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "bias {bias} {rows}x{k}x{n}: {g} vs {w}");
        }
    }
}

#[test]
fn linear_t_rejects_a_mismatched_weight() {
    let (x, w) = (vec![0f32; 6], vec![0f32; 8]);
    let (xs, ws, ys) = ([2, 3], [4, 2], [2, 4]);
    let mut y = vec![0f32; 8];
    let e = run_linear_t(
        &Ukernel::Linear { bias: false },
        &[TensorRef::from_f32(&xs, &x), TensorRef::from_f32(&ws, &w)],
        &mut [TensorMut::from_f32(&ys, &mut y)],
        1,
    )
    .unwrap_err();
    assert!(e.to_string().contains("input K = 3"), "{e}");
}

mod stored_packed {
    use crate::artifact::{
        host, write_artifact, Control, DimExpr, Manifest, StageSchedule, Step, TargetInfo, Ukernel, ValueDef, ValueSpec, WeightSource, FORMAT_VERSION,
    };
    use crate::exec::{linear_panel_weights, ExecOptions, Executable, PACKED_KEY};
    use crate::kernels::gemm_packed::pack_panels;
    use crate::kernels::testutil::Rng;
    use crate::tensor::{ElemType, HostTensor};

    const F: ElemType = ElemType::F32;
    const ROWS: usize = 3;
    const K: usize = 40;
    const N: usize = 70;

    /// x [3, 40] → linear(w [70, 40], b [70]) → y; with `also_mm`, a
    /// MatMul step reads `w` too.
    fn stage(also_mm: bool) -> StageSchedule {
        let c = |v: usize| DimExpr::Const(v as i64);
        let val = |id, shape: Vec<DimExpr>, def| ValueSpec { id, dtype: F, shape, def };
        let mut s = StageSchedule {
            name: "forward".into(),
            inputs: vec![0],
            outputs: vec![("y".into(), 3)],
            values: vec![
                val(0, vec![c(ROWS), c(K)], ValueDef::Input { name: "x".into() }),
                val(1, vec![c(N), c(K)], ValueDef::Weight { name: "w".into() }),
                val(2, vec![c(N)], ValueDef::Weight { name: "b".into() }),
                val(3, vec![c(ROWS), c(N)], ValueDef::Computed),
            ],
            steps: vec![Step::Ukernel { op: Ukernel::Linear { bias: true }, args: vec![0, 1, 2], results: vec![3] }],
            flops: vec![],
        };
        if also_mm {
            s.values.push(val(4, vec![c(ROWS), c(K)], ValueDef::Computed));
            s.outputs.push(("z".into(), 4));
            s.steps.push(Step::Ukernel { op: Ukernel::MatMul, args: vec![3, 1], results: vec![4] });
        }
        s
    }

    fn manifest(stage: StageSchedule, packed: bool) -> Manifest {
        let mut metadata = std::collections::BTreeMap::new();
        if packed {
            metadata.insert(PACKED_KEY.to_string(), r#"["w"]"#.to_string());
        }
        Manifest {
            format_version: FORMAT_VERSION,
            compiler: "omnic test".into(),
            target: TargetInfo { name: "cpu".into(), triple: host::host_triple(), cpu: "generic".into(), features: vec![] },
            pipeline: String::new(),
            metadata,
            control: Control::Forward { stage: stage.name.clone() },
            stages: vec![stage],
            weights: WeightSource::Embedded,
        }
    }

    #[test]
    fn eligibility_on_schedules() {
        assert_eq!(linear_panel_weights(&[stage(false)]).into_iter().collect::<Vec<_>>(), ["w"]);
        assert!(linear_panel_weights(&[stage(true)]).is_empty(), "w is also a MatMul operand");
        assert!(linear_panel_weights(&[stage(false), stage(true)]).is_empty(), "one stage reads w otherwise");
    }

    #[test]
    fn stored_packed_and_load_time_packed_weights_give_the_same_result() {
        let mut rng = Rng::new(5);
        let (x, w, b) = (rng.vec(ROWS * K), rng.vec(N * K), rng.vec(N));
        let mut wp = vec![0f32; N * K];
        pack_panels(&w, N, K, &mut wp);
        let dir = tempfile::tempdir().unwrap();
        let xt = HostTensor::from_f32(&[ROWS, K], &x);
        let mut outs = Vec::new();
        for (packed, wdata) in [(false, &w), (true, &wp)] {
            let p = dir.path().join(format!("p{packed}.omni"));
            let weights = vec![("w".to_string(), HostTensor::from_f32(&[N, K], wdata)), ("b".to_string(), HostTensor::from_f32(&[N], &b))];
            write_artifact(&p, &manifest(stage(false), packed), &[], &weights).unwrap();
            let exe = Executable::load(&p, &ExecOptions { threads: 1, ..Default::default() }).unwrap();
            outs.push(exe.run_forward([("x", &xt)]).unwrap()[0].1.to_f32_vec());
        }
        for i in 0..ROWS {
            for j in 0..N {
                let want: f32 = (0..K).map(|p| x[i * K + p] * w[j * K + p]).sum::<f32>() + b[j];
                for o in &outs {
                    assert!((o[i * N + j] - want).abs() < 1e-4, "({i}, {j}): {} vs {want}", o[i * N + j]);
                }
            }
        }
    }

    #[test]
    fn a_packed_weight_read_otherwise_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.omni");
        let weights = vec![("w".to_string(), HostTensor::from_f32(&[N, K], &vec![0.0; N * K])), ("b".to_string(), HostTensor::from_f32(&[N], &vec![0.0; N]))];
        write_artifact(&p, &manifest(stage(true), true), &[], &weights).unwrap();
        let e = Executable::load(&p, &ExecOptions::default()).unwrap_err().to_string();
        assert!(e.contains("weight `w` is stored packed") && e.contains("stage `forward`"), "{e}");
    }

    /// x0 [3, 16] ‖ x1 [3, 24] → linear(w [70, 40], b [70]) → y0 [3, 64], y1 [3, 6]
    /// as one `LinearSections` step (weight at arg 2); `n0` is y0's width.
    fn sections_stage(n0: usize) -> StageSchedule {
        let c = |v: usize| DimExpr::Const(v as i64);
        let val = |id, shape: Vec<DimExpr>, def| ValueSpec { id, dtype: F, shape, def };
        StageSchedule {
            name: "forward".into(),
            inputs: vec![0, 4],
            outputs: vec![("y0".into(), 3), ("y1".into(), 5)],
            values: vec![
                val(0, vec![c(ROWS), c(16)], ValueDef::Input { name: "x0".into() }),
                val(1, vec![c(N), c(K)], ValueDef::Weight { name: "w".into() }),
                val(2, vec![c(N)], ValueDef::Weight { name: "b".into() }),
                val(3, vec![c(ROWS), c(n0)], ValueDef::Computed),
                val(4, vec![c(ROWS), c(K - 16)], ValueDef::Input { name: "x1".into() }),
                val(5, vec![c(ROWS), c(N - n0)], ValueDef::Computed),
            ],
            steps: vec![Step::Ukernel { op: Ukernel::LinearSections { bias: true, inputs: 2 }, args: vec![0, 4, 1, 2], results: vec![3, 5] }],
            flops: vec![],
        }
    }

    #[test]
    fn linear_sections_steps_find_their_weight_and_run_packed() {
        assert_eq!(linear_panel_weights(&[sections_stage(64)]).into_iter().collect::<Vec<_>>(), ["w"]);
        let mut rng = Rng::new(9);
        let (x, w, b) = (rng.vec(ROWS * K), rng.vec(N * K), rng.vec(N));
        let x0: Vec<f32> = (0..ROWS).flat_map(|i| x[i * K..i * K + 16].to_vec()).collect();
        let x1: Vec<f32> = (0..ROWS).flat_map(|i| x[i * K + 16..(i + 1) * K].to_vec()).collect();
        let mut wp = vec![0f32; N * K];
        pack_panels(&w, N, K, &mut wp);
        let dir = tempfile::tempdir().unwrap();
        let (x0t, x1t) = (HostTensor::from_f32(&[ROWS, 16], &x0), HostTensor::from_f32(&[ROWS, K - 16], &x1));
        for (packed, wdata) in [(false, &w), (true, &wp)] {
            let p = dir.path().join(format!("s{packed}.omni"));
            let weights = vec![("w".to_string(), HostTensor::from_f32(&[N, K], wdata)), ("b".to_string(), HostTensor::from_f32(&[N], &b))];
            write_artifact(&p, &manifest(sections_stage(64), packed), &[], &weights).unwrap();
            let exe = Executable::load(&p, &ExecOptions { threads: 2, ..Default::default() }).unwrap();
            let out = exe.run_forward([("x0", &x0t), ("x1", &x1t)]).unwrap();
            let (y0, y1) = (out[0].1.to_f32_vec(), out[1].1.to_f32_vec());
            for i in 0..ROWS {
                for j in 0..N {
                    let want: f32 = (0..K).map(|p| x[i * K + p] * w[j * K + p]).sum::<f32>() + b[j];
                    let got = if j < 64 { y0[i * 64 + j] } else { y1[i * (N - 64) + j - 64] };
                    assert!((got - want).abs() < 1e-4, "stored packed {packed} ({i}, {j}): {got} vs {want}");
                }
            }
        }
        // A first section off the 32-column panel grid: an error naming the step.
        let p = dir.path().join("off_grid.omni");
        let weights = vec![("w".to_string(), HostTensor::from_f32(&[N, K], &w)), ("b".to_string(), HostTensor::from_f32(&[N], &b))];
        write_artifact(&p, &manifest(sections_stage(40), false), &[], &weights).unwrap();
        let exe = Executable::load(&p, &ExecOptions { threads: 1, ..Default::default() }).unwrap();
        let e = exe.run_forward([("x0", &x0t), ("x1", &x1t)]).unwrap_err().to_string();
        assert!(e.contains("stage `forward` step 0") && e.contains("output section 0 is 40 columns wide"), "{e}");
    }
}
