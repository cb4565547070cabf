//! `config.json` of the Qwen causal LMs and its resolution into a [`Spec`]
//! the graph builder reads.
//!
//! One serde struct serves `Qwen2Config`, `Qwen3Config` and `Qwen3MoeConfig`
//! (transformers models/qwen2/configuration_qwen2.py, qwen3/…,
//! qwen3_moe/…). Fields whose `__init__` default differs between the three
//! are `Option`s filled per [`Variant`] in [`Config::resolve`]. Both config
//! generations are read:
//!
//! * RoPE: transformers 5 writes `rope_parameters {rope_theta, rope_type}`;
//!   older files have a top-level `rope_theta` and an optional `rope_scaling`
//!   dict. As in `convert_rope_params_to_dict`, the dict is `rope_scaling`
//!   or `rope_parameters`, its `rope_theta` wins over the top-level one,
//!   which defaults to 10000; the type is `rope_type`, else `type`, else
//!   `default`.
//! * Experts: `Qwen3MoeConfig` maps `num_experts` to `num_local_experts`
//!   (transformers 5 writes the latter, hub files the former).

use crate::error::{ImportError, Result};
use omnic_ir::UnaryOp;
use serde::{Deserialize, Deserializer};

/// Which transformers class the config belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `Qwen2ForCausalLM`: q/k/v biases, no q/k norm.
    Qwen2,
    /// `Qwen3ForCausalLM`: q/k RMSNorm over `head_dim`, `attention_bias`.
    Qwen3,
    /// `Qwen3MoeForCausalLM`: Qwen3 attention, sparse MoE MLPs.
    Qwen3Moe,
}

/// RoPE settings (`rope_parameters`, or the older `rope_scaling`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RopeParameters {
    pub rope_type: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub rope_theta: Option<f64>,
}

/// The raw `config.json` fields omnic reads.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "d151936")]
    pub vocab_size: usize,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    #[serde(default = "d32")]
    pub num_attention_heads: usize,
    /// Absent: the class default; `null`: `num_attention_heads`.
    #[serde(default, deserialize_with = "present")]
    pub num_key_value_heads: Option<Option<usize>>,
    /// `null` counts as absent.
    pub head_dim: Option<usize>,
    #[serde(default = "silu")]
    pub hidden_act: String,
    #[serde(default = "eps6")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub rope_parameters: Option<RopeParameters>,
    pub rope_scaling: Option<RopeParameters>,
    pub rope_theta: Option<f64>,
    /// Qwen3 / Qwen3-MoE: biases on q/k/v/o (Qwen2 always has q/k/v biases).
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default = "d4096")]
    pub sliding_window: Option<usize>,
    #[serde(default = "d28")]
    pub max_window_layers: usize,
    pub layer_types: Option<Vec<String>>,
    // Mixture of experts (Qwen3-MoE).
    #[serde(default = "d1")]
    pub decoder_sparse_step: usize,
    #[serde(default = "d768")]
    pub moe_intermediate_size: usize,
    #[serde(default = "d8")]
    pub num_experts_per_tok: usize,
    pub num_experts: Option<usize>,
    pub num_local_experts: Option<usize>,
    #[serde(default)]
    pub norm_topk_prob: bool,
    pub mlp_only_layers: Option<Vec<usize>>,
    /// Qwen2-MoE-style shared expert (`mlp.shared_expert`, gated by
    /// `sigmoid(mlp.shared_expert_gate(x))`); 0 or absent: none.
    #[serde(default)]
    pub shared_expert_intermediate_size: usize,
    /// Longest sequence the model was trained for (caps the decode cache).
    pub max_position_embeddings: Option<usize>,
    /// Stop token(s) when `generation_config.json` has none.
    pub eos_token_id: Option<serde_json::Value>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Option<usize>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}
fn d151936() -> usize {
    151936
}
fn d32() -> usize {
    32
}
fn d4096() -> Option<usize> {
    Some(4096)
}
fn d28() -> usize {
    28
}
fn d1() -> usize {
    1
}
fn d768() -> usize {
    768
}
fn d8() -> usize {
    8
}
fn silu() -> String {
    "silu".into()
}
fn eps6() -> f64 {
    1e-6
}

/// The MLP of one decoder layer.
#[derive(Clone, Debug, PartialEq)]
pub enum Mlp {
    /// SwiGLU MLP with this intermediate size.
    Dense(usize),
    /// Sparse MoE block ([`MoeSpec`]).
    Sparse,
}

/// Router and experts of the sparse MoE layers.
#[derive(Clone, Debug)]
pub struct MoeSpec {
    pub experts: usize,
    pub top_k: usize,
    pub intermediate: usize,
    pub norm_topk_prob: bool,
    /// Intermediate size of the shared expert, if any.
    pub shared: Option<usize>,
}

/// Everything the builder needs, resolved and checked.
#[derive(Clone, Debug)]
pub struct Spec {
    pub variant: Variant,
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
    pub act: UnaryOp,
    pub tie_embeddings: bool,
    pub rope_theta: f64,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub qk_norm: bool,
    /// Sliding window (keys `j` with `i - j < w`) per layer, `None` = full causal.
    pub windows: Vec<Option<usize>>,
    pub mlps: Vec<Mlp>,
    pub moe: Option<MoeSpec>,
}

fn bad(path: &str, field: &str, message: String) -> ImportError {
    ImportError::Config { path: path.into(), field: field.into(), message }
}

/// transformers `ACT2FN` names omnic maps to an IR op.
fn activation(path: &str, name: &str) -> Result<UnaryOp> {
    Ok(match name {
        "silu" | "swish" => UnaryOp::Silu,
        "gelu" => UnaryOp::Gelu,
        "gelu_pytorch_tanh" | "gelu_new" => UnaryOp::GeluTanh,
        "relu" => UnaryOp::Relu,
        "tanh" => UnaryOp::Tanh,
        "sigmoid" => UnaryOp::Sigmoid,
        other => {
            return Err(bad(
                path,
                "hidden_act",
                format!("unsupported activation `{other}` (supported: silu, swish, gelu, gelu_pytorch_tanh, gelu_new, relu, tanh, sigmoid)"),
            ))
        }
    })
}

impl Config {
    /// Fill the class defaults and check what the builder relies on.
    pub fn resolve(&self, variant: Variant, path: &str) -> Result<Spec> {
        let moe = variant == Variant::Qwen3Moe;
        let hidden = self.hidden_size.unwrap_or(if moe { 2048 } else { 4096 });
        let intermediate = self.intermediate_size.unwrap_or(if moe { 6144 } else { 22016 });
        let layers = self.num_hidden_layers.unwrap_or(if moe { 24 } else { 32 });
        let heads = self.num_attention_heads;
        let kv_heads = match self.num_key_value_heads {
            None => {
                if moe {
                    4
                } else {
                    32
                }
            }
            Some(None) => heads,
            Some(Some(k)) => k,
        };
        if heads == 0 {
            return Err(bad(path, "num_attention_heads", "must be positive".into()));
        }
        if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(bad(path, "num_key_value_heads", format!("{kv_heads} key/value heads do not divide {heads} attention heads")));
        }
        // Qwen3Config declares `head_dim = 128`; the others fall back to hidden / heads.
        let head_dim = match (self.head_dim, variant) {
            (Some(d), _) => d,
            (None, Variant::Qwen3) => 128,
            (None, _) => {
                if !hidden.is_multiple_of(heads) {
                    return Err(bad(path, "num_attention_heads", format!("{heads} heads do not divide hidden_size {hidden} (and no head_dim is given)")));
                }
                hidden / heads
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(path, "head_dim", format!("rotary embeddings need an even head_dim, found {head_dim}")));
        }

        // RoPE: the dict is `rope_scaling` or `rope_parameters`.
        let (rope_field, rope) = match (&self.rope_scaling, &self.rope_parameters) {
            (Some(r), _) => ("rope_scaling", r.clone()),
            (None, Some(r)) => ("rope_parameters", r.clone()),
            (None, None) => ("rope_parameters", RopeParameters::default()),
        };
        let rope_type = rope.rope_type.clone().or(rope.kind.clone()).unwrap_or_else(|| "default".into());
        if rope_type != "default" {
            return Err(bad(path, &format!("{rope_field}.rope_type"), format!("RoPE type `{rope_type}` is not supported (supported: default)")));
        }
        let rope_theta = rope.rope_theta.or(self.rope_theta).unwrap_or(10000.0);
        if rope_theta.is_nan() || rope_theta <= 0.0 {
            return Err(bad(path, "rope_theta", format!("must be positive, found {rope_theta}")));
        }

        let windows = self.windows(variant, layers, path)?;

        let (mlps, moe_spec) = if moe {
            let experts = match (self.num_local_experts, self.num_experts) {
                (Some(a), Some(b)) if a != b => {
                    return Err(bad(path, "num_local_experts", format!("{a} disagrees with num_experts {b}")));
                }
                (Some(a), _) => a,
                (None, Some(b)) => b,
                (None, None) => 128,
            };
            if self.decoder_sparse_step == 0 {
                return Err(bad(path, "decoder_sparse_step", "must be positive".into()));
            }
            let only = self.mlp_only_layers.clone().unwrap_or_default();
            let mlps: Vec<Mlp> = (0..layers)
                .map(|i| if !only.contains(&i) && experts > 0 && (i + 1) % self.decoder_sparse_step == 0 { Mlp::Sparse } else { Mlp::Dense(intermediate) })
                .collect();
            let spec = if mlps.contains(&Mlp::Sparse) {
                if self.num_experts_per_tok == 0 || self.num_experts_per_tok > experts {
                    return Err(bad(path, "num_experts_per_tok", format!("{} experts per token out of {experts} experts", self.num_experts_per_tok)));
                }
                Some(MoeSpec {
                    experts,
                    top_k: self.num_experts_per_tok,
                    intermediate: self.moe_intermediate_size,
                    norm_topk_prob: self.norm_topk_prob,
                    shared: (self.shared_expert_intermediate_size > 0).then_some(self.shared_expert_intermediate_size),
                })
            } else {
                None
            };
            (mlps, spec)
        } else {
            (vec![Mlp::Dense(intermediate); layers], None)
        };

        Ok(Spec {
            variant,
            vocab: self.vocab_size,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            eps: self.rms_norm_eps,
            act: activation(path, &self.hidden_act)?,
            tie_embeddings: self.tie_word_embeddings,
            rope_theta,
            qkv_bias: variant == Variant::Qwen2 || self.attention_bias,
            o_bias: variant != Variant::Qwen2 && self.attention_bias,
            qk_norm: variant != Variant::Qwen2,
            windows,
            mlps,
            moe: moe_spec,
        })
    }

    /// Per-layer sliding windows. Qwen2/Qwen3: `layer_types` (derived when
    /// absent: sliding from `max_window_layers` on when the window is on);
    /// Qwen3-MoE: every layer slides when `use_sliding_window`.
    fn windows(&self, variant: Variant, layers: usize, path: &str) -> Result<Vec<Option<usize>>> {
        let window = if self.use_sliding_window { self.sliding_window } else { None };
        if window == Some(0) {
            return Err(bad(path, "sliding_window", "must be positive".into()));
        }
        if variant == Variant::Qwen3Moe {
            return Ok(vec![window; layers]);
        }
        let types: Vec<String> = match &self.layer_types {
            Some(t) => {
                if t.len() != layers {
                    return Err(bad(path, "layer_types", format!("{} entries for {layers} layers", t.len())));
                }
                t.clone()
            }
            None => {
                (0..layers).map(|i| if window.is_some() && i >= self.max_window_layers { "sliding_attention" } else { "full_attention" }.to_string()).collect()
            }
        };
        types
            .iter()
            .map(|t| match t.as_str() {
                "full_attention" => Ok(None),
                "sliding_attention" => window.map(Some).ok_or_else(|| {
                    bad(
                        path,
                        "sliding_window",
                        "a layer is `sliding_attention` but no sliding window is set (`use_sliding_window` false or `sliding_window` null)".into(),
                    )
                }),
                other => Err(bad(path, "layer_types", format!("unsupported layer type `{other}` (supported: full_attention, sliding_attention)"))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value, v: Variant) -> Result<Spec> {
        let c: Config = serde_json::from_value(json).unwrap();
        c.resolve(v, "config.json")
    }

    #[test]
    fn class_defaults_and_config_generations() {
        let s = spec(serde_json::json!({}), Variant::Qwen2).unwrap();
        assert_eq!((s.hidden, s.head_dim, s.kv_heads, s.rope_theta), (4096, 128, 32, 10000.0));
        let s = spec(serde_json::json!({}), Variant::Qwen3Moe).unwrap();
        assert_eq!((s.hidden, s.head_dim, s.kv_heads, s.layers), (2048, 64, 4, 24));
        // kv heads absent: the class default 32, which 4 heads cannot use.
        let e = spec(serde_json::json!({"hidden_size": 64, "num_attention_heads": 4}), Variant::Qwen2).unwrap_err();
        assert!(matches!(e, ImportError::Config { ref field, .. } if field == "num_key_value_heads"), "{e}");
        let s = spec(serde_json::json!({"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": null}), Variant::Qwen3).unwrap();
        assert_eq!((s.head_dim, s.kv_heads), (128, 4));
        // Old layout: top-level rope_theta, rope_scaling null.
        let s = spec(serde_json::json!({"rope_theta": 1e6, "rope_scaling": null}), Variant::Qwen2).unwrap();
        assert_eq!(s.rope_theta, 1e6);
        // rope_parameters' theta wins.
        let s = spec(serde_json::json!({"rope_theta": 1e6, "rope_parameters": {"rope_theta": 5e5, "rope_type": "default"}}), Variant::Qwen3).unwrap();
        assert_eq!(s.rope_theta, 5e5);
        let e = spec(serde_json::json!({"rope_scaling": {"type": "dynamic", "factor": 2.0}}), Variant::Qwen2).unwrap_err();
        assert!(matches!(e, ImportError::Config { ref field, .. } if field == "rope_scaling.rope_type"), "{e}");
    }

    #[test]
    fn moe_layers_and_experts() {
        let s = spec(
            serde_json::json!({"num_hidden_layers": 4, "num_experts": 8, "num_experts_per_tok": 2, "decoder_sparse_step": 2, "mlp_only_layers": [3]}),
            Variant::Qwen3Moe,
        )
        .unwrap();
        assert_eq!(s.mlps, vec![Mlp::Dense(6144), Mlp::Sparse, Mlp::Dense(6144), Mlp::Dense(6144)]);
        assert_eq!(s.moe.unwrap().experts, 8);
        let e = spec(serde_json::json!({"num_experts": 8, "num_local_experts": 4}), Variant::Qwen3Moe).unwrap_err();
        assert!(matches!(e, ImportError::Config { ref field, .. } if field == "num_local_experts"), "{e}");
        // Sliding windows: Qwen2 from max_window_layers on; Qwen3-MoE everywhere.
        let s =
            spec(serde_json::json!({"num_hidden_layers": 3, "use_sliding_window": true, "sliding_window": 8, "max_window_layers": 1}), Variant::Qwen2).unwrap();
        assert_eq!(s.windows, vec![None, Some(8), Some(8)]);
        let s = spec(serde_json::json!({"num_hidden_layers": 2, "use_sliding_window": true, "sliding_window": 8}), Variant::Qwen3Moe).unwrap();
        assert_eq!(s.windows, vec![Some(8), Some(8)]);
    }
}
