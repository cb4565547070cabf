use super::*;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn detects_diffusers_and_transformers_classes() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "config.json", r#"{"_class_name": "DiTTransformer2DModel", "num_layers": 2}"#);
    assert_eq!(ModelDir::open(d.path()).unwrap().class, "DiTTransformer2DModel");
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "config.json", r#"{"architectures": ["Qwen3ForCausalLM"]}"#);
    assert_eq!(ModelDir::open(d.path()).unwrap().class, "Qwen3ForCausalLM");
}

#[test]
fn pipeline_directories_use_the_transformer_component() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "model_index.json", r#"{"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"], "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}"#);
    write(d.path(), "transformer/config.json", r#"{"_class_name": "FluxTransformer2DModel"}"#);
    std::fs::create_dir_all(d.path().join("scheduler")).unwrap();
    let m = ModelDir::open(d.path()).unwrap();
    assert_eq!(m.class, "FluxTransformer2DModel");
    assert!(m.model.ends_with("transformer"));
    assert!(m.component("scheduler").is_some());
    assert!(m.component("vae").is_none());
    // Same layout without model_index.json.
    let d2 = tempfile::tempdir().unwrap();
    write(d2.path(), "transformer/config.json", r#"{"_class_name": "FluxTransformer2DModel"}"#);
    write(d2.path(), "scheduler/scheduler_config.json", "{}");
    let m2 = ModelDir::open(d2.path()).unwrap();
    assert!(m2.component("scheduler").is_some());
}

#[test]
fn errors_name_the_directory_file_and_position() {
    let e = ModelDir::open(Path::new("/nonexistent/model")).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/model") && e.contains("does not exist"), "{e}");
    let d = tempfile::tempdir().unwrap();
    let e = ModelDir::open(d.path()).unwrap_err().to_string();
    assert!(e.contains("config.json"), "{e}");
    write(d.path(), "config.json", "{\n  \"_class_name\": \"X\",\n  \"a\": [1, 2,\n}");
    let e = ModelDir::open(d.path()).unwrap_err().to_string();
    assert!(e.contains("config.json:4:1") && e.contains("malformed JSON"), "{e}");
    write(d.path(), "config.json", r#"{"num_layers": 2}"#);
    let e = ModelDir::open(d.path()).unwrap_err().to_string();
    assert!(e.contains("_class_name"), "{e}");
}

#[test]
fn typed_config_errors_name_the_field() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct C {
        num_layers: usize,
    }
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "config.json", r#"{"_class_name": "X", "num_layers": "two"}"#);
    let e = ModelDir::open(d.path()).unwrap().config.parse::<C>().unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("invalid type"), "{e}");
    write(d.path(), "config.json", r#"{"_class_name": "X"}"#);
    let e = ModelDir::open(d.path()).unwrap().config.parse::<C>().unwrap_err().to_string();
    assert!(e.contains("num_layers"), "{e}");
}
