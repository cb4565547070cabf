use super::*;
use serde_json::json;

#[test]
fn unknown_class_lists_the_supported_ones() {
    let e = from_config_value(&json!({"_class_name": "PNDMScheduler"}), "x/scheduler_config.json").unwrap_err().to_string();
    assert!(e.contains("x/scheduler_config.json") && e.contains("PNDMScheduler"), "{e}");
    for c in SUPPORTED_CLASSES {
        assert!(e.contains(c), "{e}");
    }
    let e = from_config_value(&json!({"shift": 3.0}), "cfg.json").unwrap_err().to_string();
    assert!(e.contains("cfg.json") && e.contains("`_class_name`") && e.contains("DDIMScheduler"), "{e}");
}

#[test]
fn errors_name_file_and_field() {
    let cases = [
        (json!({"_class_name": "DDIMScheduler", "beta_schedule": "sigmoid"}), "beta_schedule"),
        (json!({"_class_name": "DDIMScheduler", "num_train_timesteps": "many"}), "num_train_timesteps"),
        (json!({"_class_name": "DDIMScheduler", "thresholding": true}), "thresholding"),
        (json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "stochastic_sampling": true}), "stochastic_sampling"),
        (json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_beta_sigmas": true}), "use_beta_sigmas"),
        (json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "time_shift_type": "cubic"}), "time_shift_type"),
        (json!({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}), "algorithm_type"),
        (json!({"_class_name": "DPMSolverMultistepScheduler", "variance_type": "learned_range"}), "variance_type"),
        (json!({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 4}), "solver_order"),
        (json!({"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true, "use_exponential_sigmas": true}), "use_exponential_sigmas"),
    ];
    for (v, field) in cases {
        let e = from_config_value(&v, "some/scheduler_config.json").unwrap_err().to_string();
        assert!(e.contains("some/scheduler_config.json") && e.contains(&format!("`{field}`")), "{field}: {e}");
    }
}

#[test]
fn config_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("scheduler_config.json");
    std::fs::write(&p, "{not json").unwrap();
    let e = from_config_file(&p).unwrap_err().to_string();
    assert!(e.contains("scheduler_config.json") && e.contains("JSON"), "{e}");
    let e = from_config_file(&dir.path().join("missing.json")).unwrap_err().to_string();
    assert!(e.contains("missing.json"), "{e}");
}

#[test]
fn calculate_shift_matches_flux_defaults() {
    assert!((calculate_shift(256, 256, 4096, 0.5, 1.15) - 0.5).abs() < 1e-15);
    assert!((calculate_shift(4096, 256, 4096, 0.5, 1.15) - 1.15).abs() < 1e-15);
    // tests/fixtures/denoise: 24 tokens -> mu = 0.460729 (README)
    assert!((calculate_shift(24, 256, 4096, 0.5, 1.15) - 0.460729).abs() < 1e-6);
}
