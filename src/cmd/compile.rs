//! `omnic compile DIR -o ART`: import a model, run the pass pipeline,
//! generate code for a target and write a `.omni` artifact that `omnirt`
//! runs.
//!
//! The artifact holds the manifest (target, pipeline, model metadata,
//! control and one schedule per stage), the code object and the weights:
//! every weight a schedule reads, in the dtype the program declares
//! (checkpoint tensors widened to it, as the reference evaluator reads
//! them), plus those the passes derived (folded at compile time). With
//! `--external-weights` the checkpoint tensors stay in their safetensors
//! files (recorded by absolute path; the runtime can be pointed elsewhere)
//! and only derived weights are embedded.

use super::pass_args::PassArgs;
use anyhow::{bail, Context, Result};
use omnic_codegen::cpu::aot;
use omnic_codegen::{AotOptions, Emit};
use omnic_ir::eval::Tensor;
use omnic_passes::PassContext;
use omnic_runtime::artifact::{write_artifact, Control, Manifest, StageSchedule, ValueDef, WeightSource, FORMAT_VERSION};
use omnic_runtime::{ElemType, HostTensor};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    pub dir: PathBuf,
    /// Write the artifact here (`.omni`). May be left out with --emit.
    #[arg(short, long, required_unless_present = "emit")]
    pub output: Option<PathBuf>,
    /// Code generation target.
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// CPU to generate code for: the host's by default, or an LLVM CPU name
    /// (`x86-64-v3`, `x86-64-v4`, or e.g. `znver4` with --cpu-features).
    #[arg(long, value_name = "NAME")]
    pub cpu: Option<String>,
    /// LLVM feature string added to the CPU's (`+avx2,+fma`); required for
    /// named CPUs other than the x86-64 levels.
    #[arg(long, value_name = "FEATURES")]
    pub cpu_features: Option<String>,
    /// Leave the checkpoint's weights in its safetensors files (the artifact
    /// records their paths and embeds only weights derived at compile time).
    #[arg(long)]
    pub external_weights: bool,
    #[command(flatten)]
    pub passes: PassArgs,
    /// Split a denoise program's model for TeaCache with this threshold
    /// (inserts `teacache{threshold=THRESH}` right after `cfg-batching`;
    /// `omnirt run --teacache` can override the threshold). Without a
    /// value: the calibration's recommended threshold (see
    /// --teacache-coefficients), else 0.25.
    #[arg(long, value_name = "THRESH", num_args = 0..=1)]
    pub teacache: Option<Option<f64>>,
    /// TeaCache rescaling polynomial: a calibration file written by
    /// `omnic calibrate teacache`, or `c4,c3,c2,c1,c0` (highest power
    /// first). Default: `DIR/teacache.json` when the model has one, else
    /// the family's published coefficients (FLUX.1, Qwen-Image).
    #[arg(long, value_name = "FILE|LIST")]
    pub teacache_coefficients: Option<String>,
    #[command(flatten)]
    pub lora: super::lora_opts::LoraArgs,
    /// Causal LMs: positions of the KV cache the decode loop preallocates
    /// (prompt plus generated tokens); default `max_position_embeddings`
    /// capped at 2048.
    #[arg(long, value_name = "N")]
    pub max_len: Option<usize>,
    /// Print the final IR (`ir`) or every generated kernel at a level
    /// (`mlir` as built, `llvm-dialect` after lowering, `llvm` optimised IR,
    /// `asm`) to standard output.
    #[arg(long, value_name = "WHAT", value_parser = ["ir", "mlir", "llvm-dialect", "llvm", "asm"])]
    pub emit: Option<String>,
    /// Write the final IR, the manifest and every kernel at every level into DIR.
    #[arg(long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}


pub fn run(a: Args) -> Result<()> {
    let t_start = Instant::now();
    let target = omnic_codegen::target(&a.target)?;
    let mut pipeline = a.passes.passes.clone().unwrap_or_else(|| omnic_passes::manager::default_pipeline(a.passes.opt_level).to_string());
    let teacache = super::teacache_opts::resolve(&a.dir, a.teacache, a.teacache_coefficients.as_deref())?;
    if let Some(tc) = &teacache {
        pipeline = with_teacache(&pipeline, tc)?;
    }
    let pm = PassArgs { passes: Some(pipeline.clone()), ..a.passes.clone() }.manager()?;
    let aot_opts = AotOptions { cpu: a.cpu.clone(), features: a.cpu_features.clone(), ..AotOptions::default() };
    // Only quiet when writing to standard output (the emitted text is the output).
    let chatty = a.emit.is_none();

    let t = Instant::now();
    if a.external_weights && !a.lora.lora.is_empty() {
        bail!("--lora merges adapters into the weights, which --external-weights leaves in the checkpoint files; drop --external-weights, or compile with --lora-slots and bind the adapter with `omnirt run --lora`");
    }
    let import_opts = omnic_models::ImportOptions { lora: a.lora.slots()?, max_len: a.max_len, ..Default::default() };
    let mut imp = omnic_models::import_with(&a.dir, &import_opts)?;
    let lora_note = a.lora.merge(&mut imp)?;
    let t_import = ms(t);
    let t = Instant::now();
    let mut cx = PassContext::with_weights(&imp.checkpoint);
    cx.dims = fixture_dims(&a.dir, &imp.program);
    cx.dims.extend(a.passes.dims()?);
    pm.run(&mut imp.program, &mut cx, &mut std::io::stderr())?;
    let derived = std::mem::take(&mut cx.derived);
    drop(cx);
    let t_passes = ms(t);
    let control = match &imp.program.control {
        omnic_ir::Control::Forward { stage } => Control::Forward { stage: stage.clone() },
        omnic_ir::Control::Denoise(d) => Control::Denoise(omnic_frontend::convert::denoise_spec(d)),
        omnic_ir::Control::Decode(d) => Control::Decode(omnic_frontend::convert::decode_spec(d)),
    };
    let ir_text = omnic_ir::text::print_program(&imp.program);
    if a.emit.as_deref() == Some("ir") {
        print!("{ir_text}");
        if a.output.is_none() && a.dump_dir.is_none() {
            return Ok(());
        }
    }

    let t = Instant::now();
    let compiled = target.compile(&imp.program, &aot_opts)?;
    let t_codegen = ms(t);
    if let Some(what) = a.emit.as_deref().and_then(Emit::from_name) {
        for k in &compiled.schedule.kernels {
            println!("// kernel {} ({} use(s)): {}", k.symbol, k.uses, k.origin);
            println!("{}", aot::emit(k, what, &aot_opts)?);
        }
    }

    let stages = compiled.schedule.stages.clone();
    let mut metadata: BTreeMap<String, String> = imp.program.metadata.clone();
    metadata.insert("family".into(), imp.family.to_string());
    metadata.entry("architecture".into()).or_insert_with(|| imp.dir.class.clone());
    if matches!(imp.program.control, omnic_ir::Control::Decode(_)) {
        // The tokenizer travels with a causal LM (`omnirt generate --prompt`).
        if let Some(text) = omnic_models::qwen::decode::tokenizer_json(&imp.dir.model)? {
            metadata.insert(omnic_runtime::program::decode::TOKENIZER_KEY.into(), text);
        }
    }
    let t = Instant::now();
    let (mut weights, source) = collect_weights(&stages, &imp.checkpoint, &imp.dir.model, &derived, a.external_weights)?;
    super::pack_weights::pack_linear_weights(&stages, &mut weights, &mut metadata)?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        compiler: format!("omnic {}", env!("CARGO_PKG_VERSION")),
        target: compiled.object.target.clone(),
        pipeline,
        metadata,
        control,
        stages,
        weights: source,
    };
    let t_weights = ms(t);

    if let Some(d) = &a.dump_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        let p = d.join("program.omir");
        std::fs::write(&p, &ir_text).with_context(|| format!("writing {}", p.display()))?;
        let p = d.join("manifest.json");
        std::fs::write(&p, serde_json::to_string_pretty(&manifest)?).with_context(|| format!("writing {}", p.display()))?;
        let p = d.join("kernels.so");
        std::fs::write(&p, &compiled.object.bytes).with_context(|| format!("writing {}", p.display()))?;
        let files = aot::dump(d, &compiled.schedule.kernels, &aot_opts)?;
        if chatty {
            println!("dumped the IR, manifest, code object and {} kernel file(s) to {}", files.len() + 3, d.display());
        }
    }

    let Some(out) = &a.output else { return Ok(()) };
    let t = Instant::now();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let code_name = format!("{}.so", manifest.target.name);
    write_artifact(out, &manifest, &[(code_name, compiled.object.bytes.clone())], &weights)?;
    let t_write = ms(t);
    let size = std::fs::metadata(out).with_context(|| format!("reading {}", out.display()))?.len();
    let steps: usize = manifest.stages.iter().map(|s| s.steps.len()).sum();
    let tm = &compiled.object.timings;
    let line = format!(
        "compiled {} ({}) to {} in {:.0} ms: {} kernels, {steps} steps, {} weights embedded; artifact {}",
        a.dir.display(),
        imp.dir.class,
        out.display(),
        ms(t_start),
        compiled.schedule.kernels.len(),
        weights.len(),
        omnic_runtime::io::human_bytes(size),
    );
    let detail = format!(
        "  import {t_import:.0} ms, passes {t_passes:.0} ms, codegen {t_codegen:.0} ms (mlir {:.0}, llvm {:.0}, object {:.0}, link {:.0}), weights {t_weights:.0} ms, write {t_write:.0} ms",
        tm.mlir.as_secs_f64() * 1e3,
        tm.llvm.as_secs_f64() * 1e3,
        tm.codegen.as_secs_f64() * 1e3,
        tm.link.as_secs_f64() * 1e3,
    );
    if let (Some(note), true) = (&lora_note, chatty) {
        println!("{note}");
    }
    if let (Some(tc), true) = (&teacache, chatty) {
        println!("teacache: threshold {}, coefficients from {}", tc.threshold, tc.source);
    }
    if chatty {
        println!("{line}\n{detail}");
    } else {
        eprintln!("{line}\n{detail}");
    }
    Ok(())
}

/// Every weight the schedules read: `(name, dtype, shape)` sorted by name,
/// one entry per name (a name read with two dtypes or shapes is an error).
fn weight_specs(stages: &[StageSchedule]) -> Result<BTreeMap<String, (ElemType, Vec<omnic_runtime::artifact::DimExpr>)>> {
    let mut out: BTreeMap<String, (ElemType, Vec<omnic_runtime::artifact::DimExpr>)> = BTreeMap::new();
    for s in stages {
        for v in &s.values {
            if let ValueDef::Weight { name } = &v.def {
                match out.get(name) {
                    Some((d, sh)) if *d != v.dtype || *sh != v.shape => bail!("weight `{name}` is read as {} and as {} by the schedules", d, v.dtype),
                    Some(_) => {}
                    None => {
                        out.insert(name.clone(), (v.dtype, v.shape.clone()));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Little-endian bytes of `values` in `dtype`.
fn host_tensor(dtype: ElemType, shape: &[usize], values: &[f64]) -> HostTensor {
    let mut data = Vec::with_capacity(values.len() * dtype.size_bytes());
    for &v in values {
        match dtype {
            ElemType::F32 => data.extend((v as f32).to_le_bytes()),
            ElemType::F64 => data.extend(v.to_le_bytes()),
            ElemType::F16 => data.extend(half::f16::from_f64(v).to_le_bytes()),
            ElemType::BF16 => data.extend(half::bf16::from_f64(v).to_le_bytes()),
            ElemType::I64 => data.extend((v as i64).to_le_bytes()),
            ElemType::I32 => data.extend((v as i32).to_le_bytes()),
            ElemType::Bool => data.push((v != 0.0) as u8),
        }
    }
    HostTensor { dtype, shape: shape.to_vec(), data }
}

/// An evaluator tensor as a host tensor of `dtype`.
fn convert(name: &str, t: &Tensor, dtype: ElemType) -> Result<HostTensor> {
    let v = t.to_f64_vec();
    if v.len() != t.shape.iter().product::<usize>() {
        bail!("weight `{name}`: {} values for shape {:?}", v.len(), t.shape);
    }
    Ok(host_tensor(dtype, &t.shape, &v))
}

/// The safetensors files of a checkpoint directory, as `Checkpoint::open`
/// finds them: the shards of a `*.safetensors.index.json`, else every
/// `*.safetensors` file.
fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if let Some(idx) = names.iter().find(|n| n.ends_with(".safetensors.index.json")) {
        let p = dir.join(idx);
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?)?;
        let shards: BTreeSet<String> =
            j.get("weight_map").and_then(|m| m.as_object()).map(|m| m.values().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
        return Ok(shards.into_iter().map(|s| dir.join(s)).collect());
    }
    Ok(names.into_iter().filter(|n| n.ends_with(".safetensors")).map(|n| dir.join(n)).collect())
}

/// The weights to embed and where the rest are (see the module doc).
fn collect_weights(
    stages: &[StageSchedule],
    ckpt: &omnic_frontend::Checkpoint,
    model_dir: &Path,
    derived: &BTreeMap<String, Tensor>,
    external: bool,
) -> Result<(Vec<(String, HostTensor)>, WeightSource)> {
    let specs = weight_specs(stages)?;
    let mut embed = Vec::new();
    let mut from_ckpt: BTreeSet<String> = BTreeSet::new();
    for (name, (dtype, _)) in &specs {
        if let Some(t) = derived.get(name) {
            embed.push((name.clone(), convert(name, t, *dtype)?));
            continue;
        }
        if external {
            from_ckpt.insert(name.clone());
            continue;
        }
        let t = match dtype {
            ElemType::F32 => {
                let (shape, v) = ckpt.f32(name)?;
                HostTensor::from_f32(&shape, &v)
            }
            _ => convert(name, &omnic_ir::eval::WeightStore::weight(ckpt, name).map_err(anyhow::Error::msg)?, *dtype)?,
        };
        embed.push((name.clone(), t));
    }
    if !external {
        return Ok((embed, WeightSource::Embedded));
    }
    // Record the files that hold the checkpoint weights the program reads;
    // each such weight must be stored in the dtype the program reads.
    let mut files = Vec::new();
    let mut found: BTreeSet<String> = BTreeSet::new();
    for f in checkpoint_files(model_dir)? {
        let mf = omnic_runtime::io::MappedFile::open(&f)?;
        let names = mf.names()?;
        let mine: Vec<&String> = names.iter().filter(|n| from_ckpt.contains(*n)).collect();
        if mine.is_empty() {
            continue;
        }
        for n in &mine {
            let info = ckpt.info(n)?;
            let (dtype, _) = &specs[n.as_str()];
            if info.dtype != *dtype {
                bail!(
                    "--external-weights: weight `{n}` is stored as {} in {} but the program reads it as {dtype}; compile without --external-weights to embed converted weights",
                    info.dtype,
                    f.display()
                );
            }
            if let Some(d) = derived.keys().find(|d| d.as_str() == n.as_str()) {
                bail!("--external-weights: derived weight `{d}` has the name of a tensor in {}", f.display());
            }
            found.insert((*n).clone());
        }
        let abs = std::fs::canonicalize(&f).with_context(|| format!("resolving {}", f.display()))?;
        files.push(abs.to_string_lossy().into_owned());
    }
    if let Some(missing) = from_ckpt.difference(&found).next() {
        bail!("--external-weights: weight `{missing}` is in none of the safetensors files of {}", model_dir.display());
    }
    Ok((embed, WeightSource::External { files }))
}

/// `pipeline` with `teacache{threshold=T}` right after its `cfg-batching`
/// (first in the pipeline when it has none); it must run before
/// `dispatch-formation`.
fn with_teacache(pipeline: &str, tc: &super::teacache_opts::TeaCacheChoice) -> Result<String> {
    let mut passes: Vec<String> = pipeline.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect();
    let name = |p: &str| p.split('{').next().unwrap_or(p).trim().to_string();
    if passes.iter().any(|p| name(p) == "teacache") {
        bail!("--teacache: the pipeline `{pipeline}` already has a teacache pass");
    }
    let at = passes.iter().position(|p| name(p) == "cfg-batching").map_or(0, |i| i + 1);
    if let Some(d) = passes.iter().position(|p| name(p) == "dispatch-formation") {
        if d < at {
            bail!("--teacache: `cfg-batching` runs after `dispatch-formation` in `{pipeline}`; teacache must run before dispatch-formation");
        }
    }
    passes.insert(at, super::teacache_opts::pass_element(tc));
    Ok(passes.join(","))
}

/// Symbol values of the first stage bound from `DIR/io.safetensors` when a
/// model directory carries one (test fixtures do), for size statistics.
fn fixture_dims(dir: &Path, p: &omnic_ir::Program) -> omnic_ir::shape::Bindings {
    let (Some(st), Ok(io)) = (p.stages.first(), omnic_models::parity::read_io(&dir.join("io.safetensors"))) else { return Default::default() };
    omnic_models::parity::select_inputs(&st.graph, &io).ok().and_then(|sel| omnic_ir::eval::bind_inputs(&st.graph, &sel).ok()).unwrap_or_default()
}
