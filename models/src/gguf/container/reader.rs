//! The bounds-checked cursor [`parse`](super::parse) reads with: every count and length is checked against the
//! bytes left *before* anything is allocated, and every error names the file and the byte offset.

use std::path::Path;

use super::{Array, Value, MAX_STRING_BYTES};
use crate::gguf::GgufError;

/// Arrays of arrays nest at most this deep.
const MAX_ARRAY_DEPTH: usize = 4;

/// A bounds-checked little-endian cursor over the file's bytes.
pub(super) struct Reader<'a> {
    pub(super) path: &'a Path,
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    pub(super) fn truncated(&self, what: &str, needed: u64) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            expected: (self.pos as u64).saturating_add(needed),
            actual: self.bytes.len() as u64,
        }
    }

    pub(super) fn invalid(&self, detail: String) -> GgufError {
        GgufError::Invalid {
            path: self.path.to_path_buf(),
            detail,
        }
    }

    pub(super) fn bad_tensor(&self, tensor: &str, detail: String) -> GgufError {
        GgufError::BadTensor {
            path: self.path.to_path_buf(),
            tensor: tensor.to_string(),
            detail,
        }
    }

    pub(super) fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.truncated(what, n));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Refuses a count above `cap`, or one whose elements (at least `min_bytes` each) cannot fit in the rest of
    /// the file.
    pub(super) fn check_count(
        &self,
        n: u64,
        cap: u64,
        min_bytes: u64,
        what: &str,
    ) -> Result<(), GgufError> {
        if n > cap {
            return Err(self.invalid(format!("{n} {what} (at most {cap} are accepted)")));
        }
        if n.saturating_mul(min_bytes) > self.remaining() {
            return Err(self.truncated(&format!("{n} {what}"), n.saturating_mul(min_bytes)));
        }
        Ok(())
    }

    pub(super) fn string(&mut self, what: &str, cap: u64) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        if len > cap {
            return Err(self.invalid(format!(
                "{what} is {len} bytes long (at most {cap} are accepted)"
            )));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.invalid(format!("{what} is not valid UTF-8: {e}")))
    }

    pub(super) fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = format!("the value of metadata key {key}");
        let w = what.as_str();
        Ok(match ty {
            0 => Value::U8(self.array::<1>(w)?[0]),
            1 => Value::I8(self.array::<1>(w)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(w)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(w)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(w)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(w)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(w)?)),
            7 => Value::Bool(self.bool(w)?),
            8 => Value::String(self.string(w, MAX_STRING_BYTES)?),
            9 => Value::Array(self.array_value(key, depth)?),
            10 => Value::U64(u64::from_le_bytes(self.array(w)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(w)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(w)?)),
            _ => {
                return Err(self.invalid(format!("metadata key {key} has unknown value type {ty}")))
            }
        })
    }

    fn bool(&mut self, what: &str) -> Result<bool, GgufError> {
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.invalid(format!("{what}: bool byte {b} is neither 0 nor 1"))),
        }
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.invalid(format!(
                "metadata key {key}: arrays nest deeper than {MAX_ARRAY_DEPTH} levels"
            )));
        }
        let what = format!("the array of metadata key {key}");
        let w = what.as_str();
        let ty = self.u32(w)?;
        let n = self.u64(w)?;
        // Minimum encoded size per element: strings need their 8-byte length, arrays their 12-byte header.
        let min = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            _ => {
                return Err(self.invalid(format!(
                    "metadata key {key}: unknown array element type {ty}"
                )))
            }
        };
        self.check_count(n, u64::MAX, min, &format!("elements of {what}"))?;
        let n = n as usize;
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let bytes = self.take((n * std::mem::size_of::<$t>()) as u64, w)?;
                Array::$variant(
                    bytes
                        .chunks_exact(std::mem::size_of::<$t>())
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("element size")))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            0 => fixed!(U8, u8),
            1 => fixed!(I8, i8),
            2 => fixed!(U16, u16),
            3 => fixed!(I16, i16),
            4 => fixed!(U32, u32),
            5 => fixed!(I32, i32),
            6 => fixed!(F32, f32),
            10 => fixed!(U64, u64),
            11 => fixed!(I64, i64),
            12 => fixed!(F64, f64),
            7 => Array::Bool((0..n).map(|_| self.bool(w)).collect::<Result<_, _>>()?),
            8 => Array::String(
                (0..n)
                    .map(|_| self.string(w, MAX_STRING_BYTES))
                    .collect::<Result<_, _>>()?,
            ),
            9 => Array::Array(
                (0..n)
                    .map(|_| self.array_value(key, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            _ => unreachable!("element type checked above"),
        })
    }
}
