//! A [`StageRunner`] backed by the reference evaluator: runs a program's
//! control (e.g. the `denoise` loop of `omnic_runtime::program::denoise`)
//! on the compiler side, without code generation — the oracle compiled
//! artifacts are compared with.

use omnic_frontend::convert::{to_host, to_ir};
use omnic_ir::eval::{evaluate, Precision, WeightStore};
use omnic_ir::Program;
use omnic_runtime::program::{StageRunner, Tensors};
use omnic_runtime::RtError;
use std::collections::HashMap;

/// Evaluates stages of `program` with `weights`; inputs a stage does not
/// take are ignored.
pub struct EvalRunner<'a> {
    pub program: &'a Program,
    pub weights: &'a dyn WeightStore,
    pub precision: Precision,
    /// Stage calls made, by stage name.
    pub calls: HashMap<String, usize>,
}

impl<'a> EvalRunner<'a> {
    pub fn new(program: &'a Program, weights: &'a dyn WeightStore) -> Self {
        EvalRunner { program, weights, precision: Precision::F32, calls: HashMap::new() }
    }
}

impl StageRunner for EvalRunner<'_> {
    fn run_stage(&mut self, stage: &str, inputs: &Tensors) -> Result<Tensors, RtError> {
        let err = |message: String| RtError::Tensor { name: format!("stage {stage}"), message };
        let st = self.program.stage(stage).ok_or_else(|| err("no such stage".into()))?;
        *self.calls.entry(stage.to_string()).or_default() += 1;
        let mut ins = HashMap::new();
        for (name, _) in st.graph.inputs() {
            if let Some(t) = inputs.get(&name) {
                ins.insert(name, to_ir(t));
            }
        }
        let out = evaluate(&st.graph, &ins, self.weights, self.precision).map_err(|e| err(e.to_string()))?;
        Ok(out.iter().map(|(k, v)| (k.clone(), to_host(v))).collect())
    }
}
