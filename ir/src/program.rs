//! Programs: named stages plus the control that runs them.

use crate::graph::Graph;
use std::collections::BTreeMap;

/// A pure function from named tensors to named tensors.
#[derive(Clone, Debug, Default)]
pub struct Stage {
    pub name: String,
    pub graph: Graph,
}

/// How the stages are run. Loop constructs (denoise, decode) join this enum
/// as they are implemented.
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    /// Run one stage once.
    Forward { stage: String },
}

impl Control {
    pub fn stage_names(&self) -> Vec<&str> {
        match self {
            Control::Forward { stage } => vec![stage.as_str()],
        }
    }
}

/// A compiled unit: stages, control and free-form metadata (architecture,
/// source directory, config values worth keeping).
#[derive(Clone, Debug)]
pub struct Program {
    pub stages: Vec<Stage>,
    pub control: Control,
    pub metadata: BTreeMap<String, String>,
}

impl Program {
    /// A one-stage program run once.
    pub fn single(name: &str, graph: Graph) -> Program {
        Program {
            stages: vec![Stage { name: name.to_string(), graph }],
            control: Control::Forward { stage: name.to_string() },
            metadata: BTreeMap::new(),
        }
    }

    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    pub fn stage_mut(&mut self, name: &str) -> Option<&mut Stage> {
        self.stages.iter_mut().find(|s| s.name == name)
    }
}
