//! The `.omni` artifact: manifest (schedule, signatures, metadata), code
//! object and weights, with a checksum. See `manifest` for the execution
//! model.

pub mod dim;
pub mod format;
pub mod host;
pub mod manifest;
mod nonfinite;

pub use dim::{Bindings, DimExpr};
pub use format::{write_artifact, Artifact, ArtifactError, OpenOptions, SectionInfo, SectionKind, WeightMeta, WeightOrigin, WeightView};
pub use manifest::*;
