//! Parity of every imported family with its diffusers / transformers
//! fixture (tests/fixtures/<name>, produced by the real libraries).

mod common;
mod formats;
mod dit;
mod vae;
mod flux;
mod longcat;
mod flux2;
mod zimage;
mod wan;
mod glmimage;
mod sd3;
mod qwenimage;
mod qwen;
mod qwen_decode;
mod lora;
