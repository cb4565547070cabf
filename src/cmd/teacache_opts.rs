//! `omnic compile --teacache [T] [--teacache-coefficients FILE|LIST]`: which
//! threshold and rescaling polynomial the `teacache` pass gets.
//!
//! Coefficients, first found: `--teacache-coefficients` (a calibration file
//! written by `omnic calibrate teacache`, or numbers `c4,c3,c2,c1,c0`,
//! highest power first); `DIR/teacache.json` (a calibration stored with the
//! model, e.g. `models/zoo/digits-dit`); else the pass takes the family's
//! published polynomial (FLUX.1, Qwen-Image) or refuses. Threshold: the
//! value given to `--teacache`; without one, the calibration file's
//! recommended threshold, else the pass's default.

use anyhow::{bail, Context, Result};
use omnic_runtime::program::teacache_calibrate::TeaCacheCalibration;
use std::path::Path;

/// The calibration file looked for in a model directory.
pub const MODEL_CALIBRATION_FILE: &str = "teacache.json";

/// What `--teacache` resolved to.
#[derive(Clone, Debug, PartialEq)]
pub struct TeaCacheChoice {
    pub threshold: f64,
    /// `None`: the family's published polynomial.
    pub coefficients: Option<Vec<f64>>,
    /// Where the numbers came from, for the compile report.
    pub source: String,
}

fn read_calibration(path: &Path) -> Result<TeaCacheCalibration> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--teacache-coefficients: cannot read {}", path.display()))?;
    TeaCacheCalibration::from_json(&text, &path.display().to_string()).map_err(anyhow::Error::msg)
}

/// Numbers `a,b,c` (highest power first).
fn parse_list(s: &str) -> Result<Vec<f64>> {
    let v = s
        .split(',')
        .map(|x| x.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect::<Option<Vec<f64>>>()
        .with_context(|| format!("--teacache-coefficients `{s}`: neither a calibration file nor a comma-separated list of finite numbers"))?;
    Ok(v)
}

/// Resolve the flags (see the module doc); `None` when `--teacache` is absent.
pub fn resolve(dir: &Path, teacache: Option<Option<f64>>, coefficients: Option<&str>) -> Result<Option<TeaCacheChoice>> {
    let Some(threshold) = teacache else {
        if coefficients.is_some() {
            bail!("--teacache-coefficients needs --teacache [THRESH]");
        }
        return Ok(None);
    };
    if let Some(t) = threshold {
        if !t.is_finite() {
            bail!("--teacache {t}: the threshold must be a finite number");
        }
    }
    let calibration = match coefficients {
        Some(c) if Path::new(c).is_file() => Some((read_calibration(Path::new(c))?, c.to_string())),
        Some(c) if c.ends_with(".json") => bail!("--teacache-coefficients: no such file {c}"),
        Some(c) => {
            let v = parse_list(c)?;
            let t = threshold.unwrap_or(omnic_passes::teacache::DEFAULT_THRESHOLD);
            return Ok(Some(TeaCacheChoice { threshold: t, coefficients: Some(v), source: "--teacache-coefficients".into() }));
        }
        None => {
            let p = dir.join(MODEL_CALIBRATION_FILE);
            if p.is_file() {
                Some((read_calibration(&p)?, p.display().to_string()))
            } else {
                None
            }
        }
    };
    Ok(Some(match calibration {
        Some((c, src)) => TeaCacheChoice {
            threshold: threshold.unwrap_or(c.threshold),
            source: format!("calibrated for {} ({} samples, rms residual {:.3e}) in {src}", c.architecture, c.samples, c.fit.rms_residual),
            coefficients: Some(c.coefficients),
        },
        None => TeaCacheChoice {
            threshold: threshold.unwrap_or(omnic_passes::teacache::DEFAULT_THRESHOLD),
            coefficients: None,
            source: "the family's published coefficients".into(),
        },
    }))
}

/// The `teacache{…}` pipeline element.
pub fn pass_element(c: &TeaCacheChoice) -> String {
    match &c.coefficients {
        Some(v) => {
            let list: Vec<String> = v.iter().map(|x| format!("{x:e}")).collect();
            format!("teacache{{threshold={} coefficients={}}}", c.threshold, list.join(","))
        }
        None => format!("teacache{{threshold={}}}", c.threshold),
    }
}
