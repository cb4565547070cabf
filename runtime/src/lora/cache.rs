//! Loaded adapters kept resident across requests, least recently used
//! evicted first.

use super::{Adapter, LoraError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An LRU cache of loaded adapters keyed by canonical path.
#[derive(Debug)]
pub struct AdapterCache {
    capacity: usize,
    /// Least recently used first.
    entries: Vec<(PathBuf, Arc<Adapter>)>,
    loads: usize,
}

impl AdapterCache {
    /// A cache holding at most `capacity` adapters (at least one).
    pub fn new(capacity: usize) -> AdapterCache {
        AdapterCache { capacity: capacity.max(1), entries: Vec::new(), loads: 0 }
    }

    /// The adapter at `path`, loading it if it is not resident (and evicting
    /// the least recently used one when full).
    pub fn get(&mut self, path: &Path) -> Result<Arc<Adapter>, LoraError> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            let e = self.entries.remove(i);
            let a = e.1.clone();
            self.entries.push(e);
            return Ok(a);
        }
        let a = Arc::new(Adapter::load(path)?);
        self.loads += 1;
        if self.entries.len() == self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((key, a.clone()));
        Ok(a)
    }

    /// How many times an adapter was read from disk.
    pub fn loads(&self) -> usize {
        self.loads
    }

    /// Resident adapters, least recently used first.
    pub fn resident(&self) -> Vec<&Path> {
        self.entries.iter().map(|(k, _)| k.as_path()).collect()
    }
}
