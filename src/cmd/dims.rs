//! Parsing `--dims batch=2,img_seq=256` and binding symbols from inputs.

use anyhow::{bail, Context, Result};
use omnic_ir::shape::Bindings;

/// Parse `name=value[,name=value...]`.
pub fn parse_dims(s: &str) -> Result<Bindings> {
    let mut b = Bindings::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else { bail!("--dims: `{part}` is not name=value") };
        let v: i64 = v.trim().parse().with_context(|| format!("--dims: `{v}` in `{part}` is not an integer"))?;
        if v < 0 {
            bail!("--dims: `{part}` is negative");
        }
        b.insert(k.trim().to_string(), v);
    }
    Ok(b)
}
