//! The `Pass` trait and the context passes run in.

use omnic_ir::eval::{Tensor, WeightStore};
use omnic_ir::{Graph, IrError, Program};
use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PassError {
    #[error("unknown pass `{name}` in pipeline; known passes: {known}")]
    UnknownPass { name: String, known: String },
    #[error("pipeline `{0}`: empty pass name")]
    BadPipeline(String),
    #[error("pass `{pass}` produced invalid IR: {source}")]
    Invalid { pass: String, source: IrError },
    #[error("pass `{pass}`: {message}")]
    Failed { pass: String, message: String },
}

/// What passes share while a pipeline runs: the model's weights (for
/// passes that fold weight-only computations), weights derived by passes,
/// and statistics.
#[derive(Default)]
pub struct PassContext<'w> {
    /// The checkpoint the program's `param`s name, when available.
    pub weights: Option<&'w dyn WeightStore>,
    /// Weights computed by passes (e.g. a folded transpose), by param name.
    pub derived: BTreeMap<String, Tensor>,
    /// Per-pass counters, e.g. `("qkv-fusion", "groups fused") → 12`.
    pub stats: BTreeMap<(String, String), i64>,
    /// Concrete values of symbolic dims for passes that report sizes
    /// (`memory-plan`); symbols not bound here take that pass's default.
    pub dims: omnic_ir::shape::Bindings,
}

impl<'w> PassContext<'w> {
    pub fn with_weights(w: &'w dyn WeightStore) -> Self {
        PassContext { weights: Some(w), ..Default::default() }
    }

    /// Add `n` to counter `what` of `pass`.
    pub fn stat(&mut self, pass: &str, what: &str, n: i64) {
        *self.stats.entry((pass.to_string(), what.to_string())).or_insert(0) += n;
    }

    /// Set a counter (for values that are not counts, e.g. a stop reason code).
    pub fn set_stat(&mut self, pass: &str, what: &str, n: i64) {
        self.stats.insert((pass.to_string(), what.to_string()), n);
    }

    /// A weight by name: derived first, then the checkpoint.
    pub fn weight(&self, name: &str) -> Result<Tensor, String> {
        if let Some(t) = self.derived.get(name) {
            return Ok(t.clone());
        }
        self.weights.ok_or_else(|| format!("no weights available to read `{name}`"))?.weight(name)
    }
}

/// Weights seen through a pass context: derived tensors over the checkpoint.
/// Use it to evaluate a program after passes that create weights.
pub struct Overlay<'a> {
    pub base: Option<&'a dyn WeightStore>,
    pub derived: &'a BTreeMap<String, Tensor>,
}

impl WeightStore for Overlay<'_> {
    fn weight(&self, name: &str) -> Result<Tensor, String> {
        if let Some(t) = self.derived.get(name) {
            return Ok(t.clone());
        }
        self.base.ok_or_else(|| format!("no weight named `{name}`"))?.weight(name)
    }
}

/// A transformation of a program.
pub trait Pass {
    /// Pipeline name, e.g. `cse`.
    fn name(&self) -> &'static str;
    /// One-line summary for `omnic passes`.
    fn summary(&self) -> &'static str;
    /// Transform one stage's graph; return whether anything changed.
    fn run_on_graph(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError>;
    /// This pass configured by pipeline options (`name{key=value ...}` in a
    /// pipeline). Passes without options refuse any.
    fn with_options(&self, options: &[(String, String)]) -> Result<Box<dyn Pass>, PassError> {
        let keys: Vec<&str> = options.iter().map(|(k, _)| k.as_str()).collect();
        Err(PassError::Failed { pass: self.name().into(), message: format!("takes no options, got `{}`", keys.join("`, `")) })
    }
    /// Transform the program; by default every stage's graph in turn.
    fn run(&self, p: &mut Program, cx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        for st in &mut p.stages {
            changed |= self.run_on_graph(&mut st.graph, cx)?;
        }
        Ok(changed)
    }
}
