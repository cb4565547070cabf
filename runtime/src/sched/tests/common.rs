use super::*;

#[test]
fn np_linspace_endpoints_and_steps() {
    let v = np_linspace(1.0, 0.125, 8);
    assert_eq!(v, vec![1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]);
    assert_eq!(np_linspace(0.0, 999.0, 1), vec![0.0]);
    assert!(np_linspace(0.0, 1.0, 0).is_empty());
}

#[test]
fn np_arange_float_step() {
    let v = np_arange(1000.0, 0.0, -1000.0 / 15.0);
    assert_eq!(v.len(), 15);
    assert_eq!(v[0], 1000.0);
    assert!((v[14] - 66.666_666_666_666_67).abs() < 1e-9);
    assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 30.0).len(), 30);
}

#[test]
fn rescaled_betas_end_at_zero_snr() {
    let b = BetaSchedule::ScaledLinear { beta_start: 0.00085, beta_end: 0.012 }.betas(1000);
    let r = rescale_zero_terminal_snr(&b);
    let acp = alphas_cumprod(&r);
    assert_eq!(*acp.last().unwrap(), 0.0);
    assert!((acp[0] - alphas_cumprod(&b)[0]).abs() < 1e-6);
}
