//! Text generation with a compiled decode program: the prompt as token ids
//! or as text (through a `tokenizer.json`, the Hugging Face `tokenizers`
//! format: the one `omnic compile` embedded in the artifact, or a file
//! given at run time), the decode loop ([`super::decode`]) on the
//! executable, and the new tokens decoded back to text.

use super::decode::{check_request, run_decode, DecodeError, DecodeOptions, DecodeOutput, DecodeSpec, TOKENIZER_KEY};
use crate::artifact::Control;
use crate::exec::Executable;
use std::path::Path;
use thiserror::Error;
use tokenizers::Tokenizer;

#[derive(Debug, Error)]
pub enum TextGenError {
    #[error("the artifact has no decode control (a causal LM compiled by `omnic compile`)")]
    NotDecode,
    #[error("--prompt needs a tokenizer: the artifact embeds none (the model directory had no tokenizer.json) and no --tokenizer FILE was given; pass token ids with --prompt-ids")]
    NoTokenizer,
    #[error("{source_name}: not a usable tokenizer.json: {message}")]
    BadTokenizer { source_name: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error("give the prompt as --prompt-ids or --prompt, not both")]
    BothPrompts,
    #[error("no prompt: give --prompt-ids 1,2,3 or --prompt TEXT")]
    NoPrompt,
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Where the prompt comes from.
#[derive(Clone, Debug)]
pub enum Prompt {
    Ids(Vec<i64>),
    Text(String),
}

/// The decode control of an executable.
pub fn decode_spec(exe: &Executable) -> Result<DecodeSpec, TextGenError> {
    match &exe.artifact().manifest().control {
        Control::Decode(d) => Ok(d.clone()),
        _ => Err(TextGenError::NotDecode),
    }
}

/// The tokenizer: `file` when given, else the one embedded in the artifact.
pub fn load_tokenizer(exe: &Executable, file: Option<&Path>) -> Result<Tokenizer, TextGenError> {
    match file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| TextGenError::BadTokenizer { source_name: p.display().to_string(), message: format!("cannot read it: {e}") })?;
            parse_tokenizer(&p.display().to_string(), &text)
        }
        None => match exe.artifact().manifest().metadata.get(TOKENIZER_KEY) {
            Some(text) => parse_tokenizer(&format!("{} (embedded tokenizer.json)", exe.artifact().path().display()), text),
            None => Err(TextGenError::NoTokenizer),
        },
    }
}

fn parse_tokenizer(name: &str, text: &str) -> Result<Tokenizer, TextGenError> {
    text.parse::<Tokenizer>().map_err(|e| TextGenError::BadTokenizer { source_name: name.to_string(), message: e.to_string() })
}

/// Vocabulary size of the program: the last dim of the step stage's logits.
pub fn vocab_size(exe: &Executable, spec: &DecodeSpec) -> Option<usize> {
    let m = exe.artifact().manifest();
    let st = m.stages.iter().find(|s| s.name == spec.step)?;
    let (_, id) = st.outputs.iter().find(|(n, _)| *n == spec.logits)?;
    let v = st.value(*id)?;
    match v.shape.last() {
        Some(crate::artifact::DimExpr::Const(c)) => usize::try_from(*c).ok(),
        _ => None,
    }
}

/// A finished generation.
pub struct TextGenerated {
    pub prompt_ids: Vec<i64>,
    pub output: DecodeOutput,
    /// The new tokens as text, when a tokenizer was used.
    pub text: Option<String>,
}

/// Tokenize (if needed), check and run the decode loop.
pub fn generate_text(exe: &mut Executable, prompt: &Prompt, tokenizer: Option<&Tokenizer>, opts: &DecodeOptions) -> Result<TextGenerated, TextGenError> {
    let spec = decode_spec(exe)?;
    let ids: Vec<i64> = match prompt {
        Prompt::Ids(ids) => ids.clone(),
        Prompt::Text(t) => {
            let tok = tokenizer.ok_or(TextGenError::NoTokenizer)?;
            let enc = tok.encode(t.as_str(), true).map_err(|e| TextGenError::Tokenize(e.to_string()))?;
            enc.get_ids().iter().map(|&i| i as i64).collect()
        }
    };
    check_request(&spec, &ids, opts.max_tokens, vocab_size(exe, &spec))?;
    let output = run_decode(exe, &spec, &ids, opts)?;
    let text = match tokenizer {
        Some(tok) => {
            let new: Vec<u32> = output.tokens.iter().map(|&t| t as u32).collect();
            Some(tok.decode(&new, true).map_err(|e| TextGenError::Tokenize(e.to_string()))?)
        }
        None => None,
    };
    Ok(TextGenerated { prompt_ids: ids, output, text })
}

#[cfg(test)]
#[path = "tests/textgen.rs"]
mod tests;
