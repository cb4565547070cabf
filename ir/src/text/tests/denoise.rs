//! `control denoise`: a hand-written loop parsed into the exact spec, round
//! trips of specs exercising every field, and one test per error kind.

use crate::program::{CachePolicy, Control, DenoiseSpec, Guidance, SigmaSchedule, TeaCacheSpec};
use crate::text::{parse_program, print_program};
use crate::verify::verify_program;
use crate::IrError;

const STAGE: &str = "stage \"transformer\" {\n  %0 = input \"hidden_states\" : f32[batch,4]\n  %1 = input \"timestep\" : f32[batch]\n  %2 = input \"encoder_hidden_states\" : f32[batch,4]\n  %3 = add(%0, %2) : f32[batch,4]\n  output \"sample\" = %3\n}\n";

const FLUX_LOOP: &str = "control denoise \"transformer\" {
  scheduler \"{\\\"_class_name\\\": \\\"FlowMatchEulerDiscreteScheduler\\\",\\n \\\"shift\\\": 3.0}\"
  steps 8
  sigmas flow_linspace
  latents \"latents\" -> \"hidden_states\"
  timestep \"timestep\" / 1000.0
  prediction \"sample\"
  input \"prompt_embeds\" -> \"encoder_hidden_states\"
  guidance true_cfg 4.0
  negative \"negative_prompt_embeds\" -> \"encoder_hidden_states\"
  cfg_batch [\"hidden_states\", \"timestep\", \"encoder_hidden_states\"]
}
";

fn flux_spec() -> DenoiseSpec {
    DenoiseSpec {
        body: "transformer".into(),
        scheduler_config: "{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\",\n \"shift\": 3.0}".into(),
        steps: 8,
        sigmas: SigmaSchedule::FlowLinspace,
        latents: "latents".into(),
        latent_input: "hidden_states".into(),
        timestep_input: "timestep".into(),
        timestep_div: 1000.0,
        timestep_i64: false,
        prediction_output: "sample".into(),
        inputs: vec![("prompt_embeds".into(), "encoder_hidden_states".into())],
        guidance: Guidance::TrueCfg { scale: 4.0, negative: vec![("negative_prompt_embeds".into(), "encoder_hidden_states".into())] },
        cfg_batch: Some(vec!["hidden_states".into(), "timestep".into(), "encoder_hidden_states".into()]),
        cache: None,
    }
}

#[test]
fn hand_written_denoise_loop_parses_to_the_spec() {
    let text = format!("{STAGE}{FLUX_LOOP}");
    let p = parse_program(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.control, Control::Denoise(flux_spec()));
    assert_eq!(print_program(&p), text);
    verify_program(&p).unwrap();
    assert_eq!(p.control.stage_names(), vec!["transformer"]);
}

/// Specs covering every field value print, parse back equal and print the same.
#[test]
fn denoise_specs_round_trip() {
    let stage = |name: &str| STAGE.replace("\"transformer\"", &format!("\"{name}\""));
    let mut specs = vec![flux_spec()];
    let mut s = flux_spec();
    s.sigmas = SigmaSchedule::Scheduler;
    s.guidance = Guidance::None;
    s.cfg_batch = None;
    s.inputs.clear();
    s.timestep_div = 1.0;
    s.scheduler_config = "weird \"json\"\\ ✓\t\r".into();
    specs.push(s.clone());
    s.guidance = Guidance::Distilled { input: "guidance".into(), scale: 3.5 };
    s.cfg_batch = Some(vec![]);
    specs.push(s.clone());
    s.guidance = Guidance::ClassCfg { scale: 4.0, labels: "encoder_hidden_states".into(), null_class: 10 };
    s.timestep_i64 = true;
    specs.push(s.clone());
    let mut t = flux_spec();
    t.cache = Some(CachePolicy::TeaCache(TeaCacheSpec {
        threshold: 0.2,
        coefficients: vec![498.651651, -283.781631, 55.8554382, -3.82021401, 0.264230861],
        pre: "transformer.pre".into(),
        blocks: "transformer.blocks".into(),
        post: "transformer.post".into(),
        modulated: "%12".into(),
        residuals: vec![("%3".into(), "%40#1".into()), ("%4".into(), "%40#0".into())],
    }));
    specs.push(t.clone());
    if let Some(CachePolicy::TeaCache(tc)) = &mut t.cache {
        tc.residuals.clear();
        tc.threshold = 1e-300;
    }
    specs.push(t);
    for (i, spec) in specs.into_iter().enumerate() {
        let stages: String = spec.stage_names().iter().map(|n| stage(n)).collect();
        let text = format!(
            "meta \"family\" = \"flux\"\n{stages}{}",
            print_program(&crate::Program { stages: vec![], control: Control::Denoise(spec.clone()), metadata: Default::default() })
        );
        let p = parse_program(&text).unwrap_or_else(|e| panic!("spec {i}: {e}\n{text}"));
        assert_eq!(p.control, Control::Denoise(spec), "spec {i}");
        assert_eq!(print_program(&p), text, "spec {i}");
    }
}

fn err_at(src: &str, line: usize, at: &str, msg: &str) {
    let text = src.lines().nth(line - 1).unwrap_or("");
    let col =
        if at == "$" { text.chars().count() + 1 } else { text[..text.find(at).unwrap_or_else(|| panic!("`{at}` not on line {line}"))].chars().count() + 1 };
    match parse_program(src) {
        Err(IrError::Parse { line: l, col: c, message }) => {
            assert!(message.contains(msg), "message `{message}` lacks `{msg}`");
            assert_eq!((l, c), (line, col), "position of `{message}`");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn denoise_parse_errors() {
    // The stage takes 7 lines; the control starts at line 8.
    let base = format!("{STAGE}{FLUX_LOOP}");
    let with = |from: &str, to: &str| base.replacen(from, to, 1);
    err_at(&with("  steps 8\n", "  steps 8\n  steps 9\n"), 11, "steps", "duplicate denoise field `steps` (first at line 10)");
    err_at(&with("  steps 8\n", "  steps 0\n"), 10, "0", "at least one step");
    err_at(&with("  steps 8\n", ""), 18, "}", "`control denoise` is missing `steps`");
    err_at(&with("flow_linspace", "karras"), 11, "karras", "unknown sigma schedule `karras`");
    err_at(&with("true_cfg 4.0", "cfg 4.0"), 16, "cfg", "unknown guidance `cfg`");
    err_at(&with("true_cfg 4.0", "none"), 17, "negative", "`negative` inputs need `guidance true_cfg`");
    err_at(&with("  prediction", "  residual \"a\" -> \"b\"\n  prediction"), 14, "residual", "`residual` streams need a `teacache` line");
    err_at(&with("  steps 8\n", "  stepz 8\n"), 10, "stepz", "unknown denoise field `stepz`");
    err_at(&with("-> \"hidden_states\"", "\"hidden_states\""), 12, "\"hidden_states\"", "expected `-`");
    err_at(&with("/ 1000.0", "1000.0"), 13, "1000.0", "expected `/`");
    err_at(&with("control denoise \"transformer\"", "control denoise \"other\""), 8, "\"other\"", "control refers to unknown stage \"other\"");
    err_at(
        &base.replace("}\n", "").replacen("output \"sample\" = %3\n", "output \"sample\" = %3\n}\n", 1),
        19,
        "$",
        "expected `}` closing `control denoise` from line 8",
    );
    err_at(&with("  cfg_batch", "  teacache 0.1 [1.0] pre \"a\" blocks \"b\" post\n  cfg_batch"), 18, "$", "expected the quoted `post` name");
}

#[test]
fn verify_checks_denoise_names() {
    let check = |spec: DenoiseSpec, msg: &str| {
        let mut p = parse_program(&format!("{STAGE}{FLUX_LOOP}")).unwrap();
        p.control = Control::Denoise(spec);
        let e = verify_program(&p).unwrap_err().to_string();
        assert!(e.contains(msg), "`{e}` lacks `{msg}`");
    };
    let mut s = flux_spec();
    s.latent_input = "x".into();
    check(s, "latent input `x` is not an input of stage `transformer`");
    let mut s = flux_spec();
    s.prediction_output = "noise".into();
    check(s, "prediction output `noise` is not an output of stage `transformer`");
    let mut s = flux_spec();
    s.guidance = Guidance::TrueCfg { scale: 4.0, negative: vec![("n".into(), "pooled".into())] };
    check(s, "negative input `pooled` is not an input");
    let mut s = flux_spec();
    s.cfg_batch = Some(vec!["txt_ids".into()]);
    check(s, "cfg-batched input `txt_ids`");
    let mut s = flux_spec();
    s.body = "missing".into();
    check(s, "control refers to missing stage `missing`");
}
