//! `Ctx`: a graph builder tied to a checkpoint, so that every weight a model
//! asks for is checked (present, expected shape, float dtype) at import time
//! and emitted as a `param` named exactly as in the checkpoint.

use crate::error::Result;
use crate::ImportOptions;
use omnic_frontend::Checkpoint;
use omnic_ir::{Builder, DType, Dim, Role, ValueRef};

pub type V = ValueRef;

pub struct Ctx<'a> {
    pub b: Builder,
    pub ckpt: &'a Checkpoint,
    pub opts: ImportOptions,
    /// Parameters already emitted (a weight used twice is one node).
    params: std::collections::HashMap<String, V>,
    /// Entries for the program metadata (e.g. a VAE's `scaling_factor`).
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl<'a> Ctx<'a> {
    pub fn new(ckpt: &'a Checkpoint, opts: ImportOptions) -> Self {
        Ctx { b: Builder::new(), ckpt, opts, params: Default::default(), metadata: Default::default() }
    }

    /// The weight `name` of static `shape`, as an f32 `param`.
    pub fn w(&mut self, name: &str, shape: &[usize]) -> Result<V> {
        if let Some(&v) = self.params.get(name) {
            return Ok(v);
        }
        self.ckpt.expect(name, shape)?;
        let v = self.b.param(name, DType::F32, shape.iter().map(|&d| Dim::from(d)).collect())?;
        self.params.insert(name.to_string(), v);
        Ok(v)
    }

    /// Whether the checkpoint has `name` (for optional weights such as biases).
    pub fn has(&self, name: &str) -> bool {
        self.ckpt.contains(name)
    }

    /// `name` if the checkpoint has it, else `None`.
    pub fn w_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<V>> {
        if self.has(name) {
            Ok(Some(self.w(name, shape)?))
        } else {
            Ok(None)
        }
    }

    /// Label the nodes created next with a module path.
    pub fn scope(&mut self, s: &str) {
        self.b.set_scope(Some(s));
    }

    pub fn block(&mut self, i: Option<usize>) {
        self.b.set_block(i.map(|i| i as u32));
    }

    pub fn role(&mut self, v: V, r: Role) {
        self.b.annotate(v, r);
    }

    /// Expose an intermediate as output `inter.<name>` when the import asks
    /// for intermediates (used to find the first diverging block).
    pub fn inter(&mut self, name: &str, v: V) {
        if self.opts.intermediates {
            self.b.output(&format!("inter.{name}"), v);
        }
    }
}
