//! JSON for `Vec<f64>` that keeps non-finite values: JSON numbers cannot be
//! NaN or infinite (serde_json would write `null` and fail to read it
//! back), and constants such as a `-inf` mask fill are common. Finite values
//! are plain numbers; the others are the strings `"nan"`, `"inf"`, `"-inf"`.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use std::fmt;

pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        if x.is_finite() {
            seq.serialize_element(x)?;
        } else if x.is_nan() {
            seq.serialize_element("nan")?;
        } else if *x > 0.0 {
            seq.serialize_element("inf")?;
        } else {
            seq.serialize_element("-inf")?;
        }
    }
    seq.end()
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    d.deserialize_seq(SeqVisitor)
}

struct SeqVisitor;

impl<'de> Visitor<'de> for SeqVisitor {
    type Value = Vec<f64>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of numbers (or \"nan\", \"inf\", \"-inf\")")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f64>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(F(x)) = seq.next_element()? {
            out.push(x);
        }
        Ok(out)
    }
}

struct F(f64);

impl<'de> de::Deserialize<'de> for F {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<F, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = F;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or \"nan\", \"inf\", \"-inf\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<F, E> {
                Ok(F(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<F, E> {
                Ok(F(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<F, E> {
                Ok(F(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<F, E> {
                match v {
                    "nan" => Ok(F(f64::NAN)),
                    "inf" => Ok(F(f64::INFINITY)),
                    "-inf" => Ok(F(f64::NEG_INFINITY)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}
