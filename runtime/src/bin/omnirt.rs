//! `omnirt`: the omnic runtime command line. Links no compiler.

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use omnic_runtime::io;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "omnirt", version, about = "omnic runtime: runs compiled .omni artifacts and inspects tensors")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the tensors of a safetensors file with dtype, shape and statistics.
    Tensors {
        /// A .safetensors file.
        file: PathBuf,
    },
    /// Compare same-named tensors of two safetensors files (max abs and relative L2 error).
    Compare {
        /// Tensors to check.
        actual: PathBuf,
        /// Reference tensors.
        reference: PathBuf,
        /// Only compare names starting with this prefix (e.g. `output.`).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Fail (exit 1) when a max abs error exceeds this.
        #[arg(long, default_value_t = 1e-4)]
        atol: f64,
    },
    /// Verify a .omni artifact and print its manifest: target, pipeline, weights, code objects and stage signatures.
    Inspect {
        /// A .omni artifact.
        artifact: PathBuf,
        /// Print the manifest as JSON instead.
        #[arg(long)]
        json: bool,
        /// Do not check that this machine can run it (target triple, CPU features, external weights files).
        #[arg(long)]
        any_host: bool,
    },
    /// Run a .omni artifact on the inputs of a safetensors file and write its outputs (`output.<name>`).
    Run {
        /// A .omni artifact.
        artifact: PathBuf,
        /// safetensors file with the inputs (`input.<name>` or `<name>`); tensors the program does not take are ignored.
        #[arg(long)]
        inputs: PathBuf,
        /// Write the outputs here as `output.<name>`.
        #[arg(long)]
        outputs: PathBuf,
        /// Worker threads for the runtime kernels (0 = the number of physical cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Run this many times (each run is timed; the outputs of the last are written).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
        /// Look for external weights files in this directory.
        #[arg(long)]
        weights_dir: Option<PathBuf>,
        /// Also print the inputs, the ignored tensors and the outputs.
        #[arg(long)]
        verbose: bool,
        /// Bind a LoRA adapter to the program's slots (compiled with `omnic compile --lora-slots`): a PEFT directory or a diffusers-layout .safetensors file, scale 1 by default; repeatable, one slot each. None: the base model.
        #[arg(long = "lora", value_name = "ADAPTER[:SCALE]")]
        lora: Vec<String>,
        #[command(flatten)]
        denoise: DenoiseArgs,
    },
    /// Time the forward stage of a .omni artifact: per-kernel-class table, peak memory, optional Chrome/Perfetto trace.
    Bench {
        /// A .omni artifact.
        artifact: PathBuf,
        /// safetensors file with the inputs (`input.<name>` or `<name>`).
        #[arg(long)]
        inputs: PathBuf,
        /// Worker threads for the runtime kernels (0 = the number of physical cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Timed runs (the median is reported).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
        iters: u32,
        /// Untimed runs first.
        #[arg(long, default_value_t = 2)]
        warmup: u32,
        /// Write a Chrome/Perfetto trace (JSON) of every dispatch of the timed runs here.
        #[arg(long, value_name = "TRACE.json")]
        profile: Option<PathBuf>,
        /// Look for external weights files in this directory.
        #[arg(long)]
        weights_dir: Option<PathBuf>,
    },
    /// Generate: tokens from a causal-LM decode artifact (--prompt-ids / --prompt), or images from a class-conditional denoise artifact (DiT, written as a PNG row upscaled ×8).
    Generate {
        /// A .omni artifact of a decode program or of a class-conditional denoise program.
        artifact: PathBuf,
        /// Classes to draw, one image each (default: every class).
        #[arg(long, value_delimiter = ',')]
        class: Vec<i64>,
        /// Number of inference steps (default: the program's).
        #[arg(long)]
        steps: Option<usize>,
        /// Classifier-free guidance scale (default: the program's).
        #[arg(long)]
        guidance: Option<f64>,
        /// Noise seed (sample noise depends on seed, class and repeat; see `program::generate`).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// TeaCache threshold (artifacts compiled with `omnic compile --teacache`; default: the compiled one; 0 never skips).
        #[arg(long)]
        teacache: Option<f64>,
        /// Bind a LoRA adapter to the program's slots (`omnic compile --lora-slots`): a PEFT directory or a diffusers-layout .safetensors file, scale 1 by default; repeatable. None: the base model.
        #[arg(long = "lora", value_name = "ADAPTER[:SCALE]")]
        lora: Vec<String>,
        /// The PNG to write (denoise programs).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Worker threads for the runtime kernels (0 = the number of physical cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[command(flatten)]
        text: TextArgs,
    },
}

/// Options of a decode program's generation (causal LMs).
#[derive(clap::Args, Clone, Debug)]
struct TextArgs {
    /// The prompt as token ids, e.g. `1,2,3`.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    prompt_ids: Vec<i64>,
    /// The prompt as text (needs a tokenizer: embedded at compile time from the model's tokenizer.json, or --tokenizer).
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// A tokenizer.json to use instead of the embedded one.
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
    /// New tokens at most.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Sample among the k most likely tokens only (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling mass in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// More stop tokens (besides the program's eos_token_id from generation_config.json).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    stop: Vec<i64>,
    /// Do not stop at the program's eos tokens (only at --stop ones).
    #[arg(long)]
    ignore_eos: bool,
}

/// Options of a denoise program's sampling loop (ignored otherwise).
#[derive(clap::Args, Clone, Debug, Default)]
struct DenoiseArgs {
    /// Number of inference steps (default: the program's).
    #[arg(long)]
    steps: Option<usize>,
    /// True-CFG scale (> 1 with negative inputs turns true CFG on).
    #[arg(long)]
    true_cfg_scale: Option<f64>,
    /// Distilled guidance scale.
    #[arg(long)]
    guidance_scale: Option<f64>,
    /// TeaCache threshold (programs compiled with `omnic compile --teacache`; 0 never skips).
    #[arg(long)]
    teacache: Option<f64>,
    /// Also write the per-step tensors (`step.*`, `schedule.*`).
    #[arg(long)]
    dump_steps: bool,
}

fn main() {
    omnic_runtime::process::default_sigpipe();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("omnirt: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Tensors { file } => {
            for (name, t) in io::read_all(&file)? {
                let (min, max, mean, rms) = t.stats();
                println!(
                    "{name:<48} {:<5} {:<18} min {min:>11.4e} max {max:>11.4e} mean {mean:>11.4e} rms {rms:>10.4e}",
                    t.dtype.name(),
                    format!("{:?}", t.shape)
                );
            }
            Ok(())
        }
        Cmd::Compare { actual, reference, prefix, atol } => {
            let a: BTreeMap<_, _> = io::read_all(&actual)?.into_iter().collect();
            let r: BTreeMap<_, _> = io::read_all(&reference)?.into_iter().collect();
            let mut compared = 0;
            let mut failed = Vec::new();
            for (name, rt) in r.iter().filter(|(n, _)| n.starts_with(&prefix)) {
                let Some(at) = a.get(name) else { continue };
                compared += 1;
                match at.compare(rt) {
                    Some((max_abs, rel)) => {
                        let ok = max_abs <= atol;
                        println!("{name:<40} max_abs {max_abs:.3e}  rel_l2 {rel:.3e}  {}", if ok { "ok" } else { "FAIL" });
                        if !ok {
                            failed.push(name.clone());
                        }
                    }
                    None => {
                        println!("{name:<40} shape {:?} vs reference {:?}  FAIL", at.shape, rt.shape);
                        failed.push(name.clone());
                    }
                }
            }
            if compared == 0 {
                bail!("no tensor named `{prefix}*` is in both {} and {}", actual.display(), reference.display());
            }
            if !failed.is_empty() {
                bail!("{} of {compared} tensors exceed max abs {atol:e}: {}", failed.len(), failed.join(", "));
            }
            println!("{compared} tensors within max abs {atol:e}");
            Ok(())
        }
        Cmd::Inspect { artifact, json, any_host } => inspect(&artifact, json, any_host),
        Cmd::Run { artifact, inputs, outputs, threads, runs, weights_dir, verbose, lora, denoise } => {
            run_artifact(&artifact, &inputs, &outputs, threads, runs, weights_dir, verbose, &lora, &denoise)
        }
        Cmd::Bench { artifact, inputs, threads, iters, warmup, profile, weights_dir } => {
            bench(&artifact, &inputs, threads, iters, warmup, profile.as_deref(), weights_dir)
        }
        Cmd::Generate { artifact, class, steps, guidance, seed, teacache, lora, output, threads, text } => {
            if let Some(exe) = load_decode_artifact(&artifact, threads)? {
                return generate_tokens(exe, seed, &text);
            }
            let Some(output) = output else { bail!("{}: a denoise program draws images: give the PNG to write with -o FILE", artifact.display()) };
            generate(&artifact, class, steps, guidance, seed, teacache, &lora, &output, threads)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_artifact(
    path: &std::path::Path,
    inputs: &std::path::Path,
    outputs: &std::path::Path,
    threads: usize,
    runs: u32,
    weights_dir: Option<PathBuf>,
    verbose: bool,
    lora: &[String],
    denoise: &DenoiseArgs,
) -> Result<()> {
    use omnic_runtime::artifact::dim::shape_str;
    use omnic_runtime::exec::{ExecOptions, Executable};
    use std::time::Instant;
    let t0 = Instant::now();
    let mut exe = Executable::load(path, &ExecOptions { threads, weights_dir })?;
    if let omnic_runtime::artifact::Control::Denoise(spec) = &exe.artifact().manifest().control {
        let spec = spec.clone();
        println!("loaded {} in {:.1} ms ({} threads)", path.display(), t0.elapsed().as_secs_f64() * 1e3, exe.threads());
        let lora_inputs = lora_inputs(&exe, lora)?;
        return run_denoise_loop(&mut exe, &spec, inputs, outputs, runs, verbose, lora_inputs, denoise);
    }
    let stage = exe.forward_stage().to_string();
    println!("loaded {} in {:.1} ms ({} threads)", path.display(), t0.elapsed().as_secs_f64() * 1e3, exe.threads());
    let mut given = io::read_all(inputs)?;
    given.extend(lora_inputs(&exe, lora)?);
    if verbose {
        for i in exe.inputs(&stage)? {
            println!("  input   {}: {}{}", i.name, i.dtype, shape_str(&i.shape));
        }
        let ignored = exe.unused_inputs(&stage, given.iter().map(|(n, _)| n.as_str()))?;
        if !ignored.is_empty() {
            println!("  ignored {} tensor(s) of {} the program does not take: {}", ignored.len(), inputs.display(), ignored.join(", "));
        }
    }
    let mut out = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        out = exe.run(&stage, given.iter().map(|(n, t)| (n.as_str(), t)))?;
        let label = if runs > 1 { format!("run {}/{runs}", i + 1) } else { "run".to_string() };
        println!("{label}: {:.3} ms", t.elapsed().as_secs_f64() * 1e3);
    }
    let named: Vec<(String, omnic_runtime::HostTensor)> = out.into_iter().map(|(n, t)| (format!("output.{n}"), t)).collect();
    if verbose {
        for (n, t) in &named {
            let (min, max, mean, rms) = t.stats();
            println!("  {n:<32} {:<5} {:<18} min {min:>11.4e} max {max:>11.4e} mean {mean:>11.4e} rms {rms:>10.4e}", t.dtype.name(), format!("{:?}", t.shape));
        }
    }
    if let Some(parent) = outputs.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
    }
    io::write(outputs, &named, None)?;
    println!("wrote {} output(s) to {}", named.len(), outputs.display());
    Ok(())
}

/// `omnirt bench`: see [`omnic_runtime::bench`]; the last line is `median_ms=<ms> iters=<n>`.
fn bench(
    path: &std::path::Path,
    inputs: &std::path::Path,
    threads: usize,
    iters: u32,
    warmup: u32,
    profile: Option<&std::path::Path>,
    weights_dir: Option<PathBuf>,
) -> Result<()> {
    use omnic_runtime::bench::{bench, BenchOptions};
    use omnic_runtime::exec::{ExecOptions, Executable};
    // Fail on an unwritable trace path before running.
    let trace = match profile {
        Some(p) => Some((p, std::fs::File::create(p).map_err(|e| anyhow::anyhow!("--profile: cannot write {}: {e}", p.display()))?)),
        None => None,
    };
    let exe = Executable::load(path, &ExecOptions { threads, weights_dir })?;
    let stage = exe.forward_stage().to_string();
    let given = io::read_all(inputs)?;
    let r = bench(&exe, &stage, &given, BenchOptions { iters: iters as usize, warmup: warmup as usize })?;
    print!("{}", r.table());
    if let Some((p, file)) = trace {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut w, &r.trace_json()).map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))?;
        w.flush().map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))?;
        println!("trace: {} dispatch events written to {}", r.profiler.events().len(), p.display());
    }
    println!("median_ms={:.4} iters={}", r.median_ms(), r.times_ms.len());
    Ok(())
}

/// The LoRA slot inputs of one request (`--lora` adapters, read once; none:
/// zeros, the base model), empty for a program without slots.
fn lora_inputs(exe: &omnic_runtime::exec::Executable, lora: &[String]) -> Result<Vec<(String, omnic_runtime::HostTensor)>> {
    use omnic_runtime::lora::{AdapterSpec, LoraRuntime};
    let specs = lora.iter().map(|s| AdapterSpec::parse(s)).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("--lora {e}"))?;
    let mut rt = LoraRuntime::new(exe, specs.len().max(1))?;
    let t = rt.inputs(&specs).map_err(|e| anyhow::anyhow!("--lora: {e}"))?;
    if let Some(s) = rt.slots().filter(|_| !specs.is_empty()) {
        println!("lora: {} adapter(s) bound to {} of {} slot(s) (rank {}) on {} module(s)", specs.len(), specs.len(), s.slots, s.rank, s.modules.len());
    }
    Ok(t)
}

/// `omnirt run` on a denoise program: the sampling loop over the artifact's stages.
#[allow(clippy::too_many_arguments)]
fn run_denoise_loop(
    exe: &mut omnic_runtime::exec::Executable,
    spec: &omnic_runtime::program::DenoiseSpec,
    inputs: &std::path::Path,
    outputs: &std::path::Path,
    runs: u32,
    verbose: bool,
    lora_inputs: Vec<(String, omnic_runtime::HostTensor)>,
    a: &DenoiseArgs,
) -> Result<()> {
    use omnic_runtime::program::{run_denoise, DenoiseOptions, Tensors};
    let given: Tensors = io::read_all(inputs)?.into_iter().collect();
    let opts = DenoiseOptions {
        steps: a.steps,
        true_cfg_scale: a.true_cfg_scale,
        guidance_scale: a.guidance_scale,
        teacache_threshold: a.teacache,
        cfg_batch: None,
        dump_steps: a.dump_steps,
        ..Default::default()
    };
    if a.teacache.is_some() && spec.teacache().is_none() {
        println!("note: --teacache ignored: the program was compiled without a TeaCache split (omnic compile --teacache)");
    }
    let mut last = None;
    for i in 0..runs {
        // LoRA slot tensors: built once, passed by reference to every step.
        let mut runner = omnic_runtime::lora::request::WithLora { exe, inputs: &lora_inputs };
        let out = run_denoise(spec, &mut runner, &given, &opts)?;
        let r = &out.report;
        let label = if runs > 1 { format!("run {}/{runs}", i + 1) } else { "run".to_string() };
        let per = 1e3 * r.seconds / r.steps.len().max(1) as f64;
        println!("{label}: {} steps in {:.3} ms ({per:.3} ms/step), {} computed, {} skipped", r.steps.len(), r.seconds * 1e3, r.computed, r.skipped);
        println!("{}", r.summary());
        if verbose {
            for s in &r.steps {
                println!(
                    "  step {:>3}  t {:>9.3}  {:.3} ms  {} stage call(s), {} computed, {} skipped",
                    s.index,
                    s.timestep,
                    s.seconds * 1e3,
                    s.stage_calls,
                    s.computed,
                    s.skipped
                );
            }
        }
        last = Some(out);
    }
    let Some(out) = last else { bail!("no run") };
    let named = out.tensors(spec);
    if let Some(parent) = outputs.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
    }
    io::write(outputs, &named, None)?;
    println!("wrote {} tensor(s) to {}", named.len(), outputs.display());
    Ok(())
}

/// `omnirt generate`: seeded samples of a class-conditional denoise program to a PNG.
#[allow(clippy::too_many_arguments)]
fn generate(
    path: &std::path::Path,
    class: Vec<i64>,
    steps: Option<usize>,
    guidance: Option<f64>,
    seed: u64,
    teacache: Option<f64>,
    lora: &[String],
    output: &std::path::Path,
    threads: usize,
) -> Result<()> {
    use omnic_runtime::exec::{ExecOptions, Executable};
    use omnic_runtime::program::generate::{class_labels_input, generate, GenerateOptions};
    use omnic_runtime::program::OnStep;
    let mut exe = Executable::load(path, &ExecOptions { threads, weights_dir: None })?;
    let omnic_runtime::artifact::Control::Denoise(spec) = &exe.artifact().manifest().control else {
        bail!("{}: not a denoise program; `omnirt generate` needs a class-conditional DiT artifact (use `omnirt run`)", path.display())
    };
    let (_, null) = class_labels_input(spec).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let classes = if class.is_empty() { (0..null).collect() } else { class };
    // Fail on an unwritable output before sampling.
    if let Some(parent) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
    }
    let file = std::fs::File::create(output).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
    let bar = indicatif::ProgressBar::new(steps.unwrap_or(spec.steps) as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    let b = bar.clone();
    let on_step = OnStep(Some(std::sync::Arc::new(move |s: &omnic_runtime::program::denoise::StepReport, n: usize| {
        b.set_length(n as u64);
        b.set_message(format!("{:.1} ms/step", s.seconds * 1e3));
        b.inc(1);
    })));
    if teacache.is_some() && spec.teacache().is_none() {
        println!("note: --teacache ignored: the program was compiled without a TeaCache split (omnic compile --teacache)");
    }
    // Slot tensors (base model when no adapter is given), built once for the request.
    let extra = lora_inputs(&exe, lora)?;
    let opts = GenerateOptions { classes: classes.clone(), seed, steps, guidance, teacache, on_step, extra };
    let out = generate(&mut exe, &opts);
    bar.finish_and_clear();
    let out = out?;
    let r = &out.report;
    let per = 1e3 * r.seconds / r.steps.len().max(1) as f64;
    println!(
        "generated {} image(s) {}x{} (classes {:?}, seed {seed}): {} steps computed in {:.1} ms ({per:.2} ms/step, {} threads), {} computed, {} skipped",
        out.samples.len(),
        out.width,
        out.height,
        classes,
        r.steps.len(),
        r.seconds * 1e3,
        exe.threads(),
        r.computed,
        r.skipped
    );
    println!("{}", r.summary());
    let images: Vec<_> = out.images().iter().map(|i| i.upscale(8)).collect();
    let Some(grid) = omnic_runtime::image::GrayImage::row(&images) else { bail!("no images to write") };
    grid.write_png(std::io::BufWriter::new(file)).map_err(|e| anyhow::anyhow!("writing {}: {e}", output.display()))?;
    println!("wrote {} ({}x{} PNG)", output.display(), grid.width, grid.height);
    Ok(())
}

/// The artifact, prepared to run, when it holds a decode program; `None` for other programs.
fn load_decode_artifact(path: &std::path::Path, threads: usize) -> Result<Option<omnic_runtime::exec::Executable>> {
    use omnic_runtime::artifact::{Artifact, Control, OpenOptions};
    use omnic_runtime::exec::{ExecOptions, Executable};
    let art = Artifact::open_with(path, &OpenOptions { check_host: true, weights_dir: None })?;
    if !matches!(art.manifest().control, Control::Decode(_)) {
        return Ok(None);
    }
    Ok(Some(Executable::from_artifact(art, &ExecOptions { threads, weights_dir: None })?))
}

/// `omnirt generate` on a decode program: prints the prompt and generated
/// ids, the text with a tokenizer, and the timing line
/// `prefill_ms=<v> decode_ms_per_token=<v> tokens=<n>`.
fn generate_tokens(mut exe: omnic_runtime::exec::Executable, seed: u64, a: &TextArgs) -> Result<()> {
    use omnic_runtime::program::decode::{DecodeOptions, StopReason};
    use omnic_runtime::program::sample::Sampling;
    use omnic_runtime::program::textgen::{decode_spec, generate_text, load_tokenizer, Prompt, TextGenError};
    let spec = decode_spec(&exe)?;
    let prompt = match (a.prompt_ids.is_empty(), &a.prompt) {
        (false, Some(_)) => return Err(TextGenError::BothPrompts.into()),
        (false, None) => Prompt::Ids(a.prompt_ids.clone()),
        (true, Some(t)) => Prompt::Text(t.clone()),
        (true, None) => return Err(TextGenError::NoPrompt.into()),
    };
    let tokenizer = match (&prompt, &a.tokenizer) {
        (Prompt::Text(_), file) => Some(load_tokenizer(&exe, file.as_deref())?),
        (Prompt::Ids(_), Some(file)) => Some(load_tokenizer(&exe, Some(file))?),
        (Prompt::Ids(_), None) => load_tokenizer(&exe, None).ok(),
    };
    let mut stop = if a.ignore_eos { Vec::new() } else { spec.eos.clone() };
    stop.extend(&a.stop);
    let sampling = Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed };
    let opts = DecodeOptions { max_tokens: a.max_tokens, stop, sampling, keep_logits: false };
    let g = generate_text(&mut exe, &prompt, tokenizer.as_ref(), &opts)?;
    let join = |v: &[i64]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    println!("prompt_ids={}", join(&g.prompt_ids));
    println!("generated_ids={}", join(&g.output.tokens));
    if let Some(t) = &g.text {
        println!("text={t:?}");
    }
    let why = match g.output.reason {
        StopReason::Stop => "stop token",
        StopReason::Length => "max tokens",
    };
    println!("stopped: {why} ({} new tokens, {} threads)", g.output.tokens.len(), exe.threads());
    println!("prefill_ms={:.4} decode_ms_per_token={:.4} tokens={}", g.output.prefill_ms, g.output.decode_ms_per_token, g.output.tokens.len());
    Ok(())
}

fn inspect(path: &std::path::Path, json: bool, any_host: bool) -> Result<()> {
    use omnic_runtime::artifact::{dim::shape_str, Artifact, OpenOptions, Step, ValueDef, WeightOrigin, WeightSource};
    let art = Artifact::open_with(path, &OpenOptions { check_host: !any_host, ..OpenOptions::default() })?;
    let m = art.manifest();
    if json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(());
    }
    let t = &m.target;
    println!("artifact   {} ({}, format version {})", path.display(), omnic_runtime::io::human_bytes(art.file_len()), art.format_version());
    println!("compiler   {}", m.compiler);
    let features = if t.features.is_empty() { "none".to_string() } else { t.features.join(",") };
    println!("target     {} (target `{}`, cpu {}, features {features})", t.triple, t.name, t.cpu);
    println!("host       {}", if any_host { "not checked" } else { "can run it" });
    println!("pipeline   {}", m.pipeline);
    if m.metadata.is_empty() {
        println!("metadata   none");
    }
    for (i, (k, v)) in m.metadata.iter().enumerate() {
        let v = if k == omnic_runtime::program::decode::TOKENIZER_KEY {
            format!("({} bytes)", v.len())
        } else if k == omnic_runtime::exec::PACKED_KEY {
            format!("({} weights stored packed for Linear)", serde_json::from_str::<Vec<String>>(v).map_or(0, |l| l.len()))
        } else {
            v.clone()
        };
        println!("{:<10} {k} = {v}", if i == 0 { "metadata" } else { "" });
    }
    let (mut emb, mut emb_bytes, mut ext, mut ext_bytes) = (0usize, 0u64, 0usize, 0u64);
    for w in art.weights() {
        match w.origin {
            WeightOrigin::Embedded => (emb, emb_bytes) = (emb + 1, emb_bytes + w.nbytes as u64),
            WeightOrigin::External(_) => (ext, ext_bytes) = (ext + 1, ext_bytes + w.nbytes as u64),
        }
    }
    match &m.weights {
        WeightSource::Embedded => println!("weights    embedded: {emb} tensors, {}", omnic_runtime::io::human_bytes(emb_bytes)),
        WeightSource::External { files } => {
            println!("weights    external: {} file(s): {}", files.len(), files.join(", "));
            if art.external_loaded() {
                println!("           {ext} tensors, {} in those files", omnic_runtime::io::human_bytes(ext_bytes));
            }
            println!("           embedded (derived): {emb} tensors, {}", omnic_runtime::io::human_bytes(emb_bytes));
        }
    }
    let code: Vec<String> = art.code_objects().map(|(n, b)| format!("{n} ({})", omnic_runtime::io::human_bytes(b.len() as u64))).collect();
    println!("code       {}", if code.is_empty() { "none".to_string() } else { code.join(", ") });
    match &m.control {
        omnic_runtime::artifact::Control::Forward { stage } => println!("control    forward: stage `{stage}`"),
        omnic_runtime::artifact::Control::Denoise(d) => println!("control    denoise: stages {:?}, {} steps", d.stage_names(), d.steps),
        omnic_runtime::artifact::Control::Decode(d) => {
            println!("control    decode: stages {:?}, KV cache {} positions, {} entries, eos {:?}", d.stage_names(), d.max_len, d.cache.len(), d.eos)
        }
    }
    for s in &m.stages {
        println!("stage `{}`", s.name);
        let sig = |id: u32| match s.value(id) {
            Some(v) => format!("{}{}", v.dtype, shape_str(&v.shape)),
            None => "?".to_string(),
        };
        for (i, id) in s.inputs.iter().enumerate() {
            let name = match s.value(*id).map(|v| &v.def) {
                Some(ValueDef::Input { name }) => name.as_str(),
                _ => "?",
            };
            println!("  {:<9}{name}: {}", if i == 0 { "inputs" } else { "" }, sig(*id));
        }
        for (i, (name, id)) in s.outputs.iter().enumerate() {
            println!("  {:<9}{name}: {}", if i == 0 { "outputs" } else { "" }, sig(*id));
        }
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &s.values {
            let k = match v.def {
                ValueDef::Input { .. } => "inputs",
                ValueDef::Weight { .. } => "weights",
                ValueDef::Constant { .. } => "constants",
                ValueDef::Computed => "computed",
                ValueDef::View { .. } => "views",
            };
            *kinds.entry(k).or_default() += 1;
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!("  values   {} ({})", s.values.len(), kinds.join(", "));
        let mut kernels = 0;
        let mut ukernels: BTreeMap<String, usize> = BTreeMap::new();
        for st in &s.steps {
            match st {
                Step::Kernel { .. } => kernels += 1,
                Step::Ukernel { op, .. } => {
                    let name = serde_json::to_value(op).ok().and_then(|v| match v {
                        serde_json::Value::String(s) => Some(s),
                        serde_json::Value::Object(o) => o.keys().next().cloned(),
                        _ => None,
                    });
                    *ukernels.entry(name.unwrap_or_else(|| "?".into())).or_default() += 1;
                }
            }
        }
        let nuk: usize = ukernels.values().sum();
        let uk: Vec<String> = ukernels.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let uk = if uk.is_empty() { String::new() } else { format!(": {}", uk.join(", ")) };
        println!("  steps    {} ({kernels} kernels, {nuk} ukernels{uk})", s.steps.len());
    }
    Ok(())
}
