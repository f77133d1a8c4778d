//! Weight-only block quantization for ONNX Runtime's `MatMulNBits` (linear layers) and `GatherBlockQuantized`
//! (the embedding lookup).
//!
//! Each weight `[N, K]` is cut along K into blocks of `block_size` values; a block stores `bits`-bit codes, an fp32
//! scale and (asymmetric schemes) an integer zero point: `w ≈ scale · (code − zero)`. Activations stay fp32 between
//! the MatMuls; inside them `accuracy_level` 4 lets ONNX Runtime quantize each block of the activation row to int8
//! (per-block scale) and use integer dot products, which is what makes its CPU kernels fast (with level 0 the
//! 8-bit kernel does not run at all and the 4-bit one is ~3× slower).
//!
//! The scheme differs per tensor class ([`Role`]): ordinary projections, `v_proj`, `down_proj` (the tensors
//! llama.cpp's Q4_K_M keeps at higher precision) and the embedding, which for Gemma is also the tied lm_head and
//! more than half of a small model's weights. [`QuantConfig::int4`] is the default `int4` export, chosen by
//! measuring the mean NLL of the real Gemma 3 270M on `tests/fixtures/real/perplexity.txt` (see the table in
//! [`QuantConfig::int4`]); [`QuantConfig::parse_spec`] lets any other mix be exported for such studies.
//!
//! - [`rounding`]: how one block becomes codes (round-to-nearest or a least-squares scale search).
//! - [`pack`]: streams a checkpoint tensor through the rounder into `MatMulNBits`' packed layout.
//! - [`graph`]: the `MatMulNBits` / `GatherBlockQuantized` nodes.

pub mod graph;
pub mod pack;
pub mod rounding;

pub use rounding::Rounding;

/// How one tensor class is quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorScheme {
    /// 4 or 8.
    pub bits: u8,
    /// Zero point fixed at `2^(bits−1)` (no zero-point tensor) instead of one per block.
    pub symmetric: bool,
    pub rounding: Rounding,
}

impl TensorScheme {
    pub const fn new(bits: u8, symmetric: bool, rounding: Rounding) -> TensorScheme {
        TensorScheme {
            bits,
            symmetric,
            rounding,
        }
    }

    /// `4a` (4-bit asymmetric, searched), `8s-rtn` (8-bit symmetric, round-to-nearest)...
    pub fn parse(s: &str) -> Result<TensorScheme, String> {
        let (head, rounding) = match s.strip_suffix("-rtn") {
            Some(h) => (h, Rounding::Nearest),
            None => (s, Rounding::Search),
        };
        let (bits, kind) = head.split_at(head.len().saturating_sub(1));
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b == 4 || *b == 8)
            .ok_or_else(|| format!("`{s}`: bits must be 4 or 8 (e.g. 4a, 8s, 4s-rtn)"))?;
        let symmetric = match kind {
            "a" => false,
            "s" => true,
            _ => return Err(format!("`{s}`: expected a (asymmetric) or s (symmetric) after the bits, e.g. 4a")),
        };
        Ok(TensorScheme::new(bits, symmetric, rounding))
    }

    /// The inverse of [`parse`](Self::parse).
    pub fn code(&self) -> String {
        format!(
            "{}{}{}",
            self.bits,
            if self.symmetric { "s" } else { "a" },
            if self.rounding == Rounding::Nearest { "-rtn" } else { "" }
        )
    }

    /// Bits per weight on disk: codes, the fp32 scale and the zero point, for blocks of `block_size`.
    pub fn bits_per_weight(&self, block_size: usize) -> f64 {
        let zero = if self.symmetric { 0.0 } else { self.bits as f64 };
        self.bits as f64 + (32.0 + zero) / block_size as f64
    }
}

/// The tensor classes that can be quantized differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// q/k/o/gate/up projections.
    Linear,
    VProj,
    DownProj,
    /// The token embedding; also the lm_head (tied, or its own `lm_head.weight`).
    Embedding,
}

impl Role {
    /// The class of a checkpoint tensor, from its name.
    pub fn of(weight_name: &str) -> Role {
        if weight_name.ends_with("embed_tokens.weight") || weight_name.ends_with("lm_head.weight") {
            Role::Embedding
        } else if weight_name.ends_with("v_proj.weight") {
            Role::VProj
        } else if weight_name.ends_with("down_proj.weight") {
            Role::DownProj
        } else {
            Role::Linear
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Role::Linear => "linear",
            Role::VProj => "v_proj",
            Role::DownProj => "down_proj",
            Role::Embedding => "embedding",
        }
    }
}

/// A whole quantized export: block size, `MatMulNBits` accuracy level and one scheme per [`Role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuantConfig {
    /// Values per block along K: 16, 32, 64, 128 or 256.
    pub block_size: usize,
    /// `MatMulNBits.accuracy_level`: 0 = fp32 activations, 4 = int8 activations per block (fast path).
    pub accuracy_level: i64,
    pub linear: TensorScheme,
    pub v_proj: TensorScheme,
    pub down_proj: TensorScheme,
    pub embedding: TensorScheme,
}

impl QuantConfig {
    /// The default of `--precision int4`: every linear layer and the tied embedding/lm_head in 4 bits, blocks of
    /// 32, asymmetric with searched scales and zero points, int8 activations inside the MatMuls.
    pub const fn int4() -> QuantConfig {
        let s = TensorScheme::new(4, false, Rounding::Search);
        QuantConfig {
            block_size: 32,
            accuracy_level: 4,
            linear: s,
            v_proj: s,
            down_proj: s,
            embedding: s,
        }
    }

    /// The default of `--precision int8`: everything 8-bit symmetric in blocks of 32 (the layout of GGUF's Q8_0),
    /// scales searched.
    pub const fn int8() -> QuantConfig {
        let s = TensorScheme::new(8, true, Rounding::Search);
        QuantConfig {
            block_size: 32,
            accuracy_level: 4,
            linear: s,
            v_proj: s,
            down_proj: s,
            embedding: s,
        }
    }

    /// The scheme of one checkpoint tensor.
    pub fn scheme(&self, weight_name: &str) -> TensorScheme {
        self.scheme_of(Role::of(weight_name))
    }

    pub fn scheme_of(&self, role: Role) -> TensorScheme {
        match role {
            Role::Linear => self.linear,
            Role::VProj => self.v_proj,
            Role::DownProj => self.down_proj,
            Role::Embedding => self.embedding,
        }
    }

    /// Checks the block size (ONNX Runtime: a power of two, at least 16).
    pub fn validate(&self) -> Result<(), String> {
        let b = self.block_size;
        if b < 16 || !b.is_power_of_two() || b > rounding::MAX_BLOCK {
            return Err(format!(
                "block size {b}: must be 16, 32, 64, 128 or 256 (ONNX Runtime's fast quantized kernels; 32 is the default)"
            ));
        }
        if !matches!(self.accuracy_level, 0..=4) {
            return Err(format!(
                "accuracy level {}: must be 0 (fp32), 1, 2, 3 or 4 (int8)",
                self.accuracy_level
            ));
        }
        Ok(())
    }

    /// Applies a comma-separated override list to `self`, e.g. `emb=8s,down=8s,block=64,acc=0`.
    ///
    /// Keys: `linear`, `v`, `down`, `emb` (or `all`) take a scheme — bits (4 or 8), `a`symmetric or `s`ymmetric,
    /// and `-rtn` for round-to-nearest instead of the scale search: `4a`, `4s-rtn`, `8s`. `block` takes the block
    /// size, `acc` the `MatMulNBits` accuracy level.
    pub fn parse_spec(mut self, spec: &str) -> Result<QuantConfig, String> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}`: expected KEY=VALUE, e.g. emb=8s"))?;
            match key {
                "block" => {
                    self.block_size = value
                        .parse()
                        .map_err(|_| format!("`{item}`: block size must be a number"))?
                }
                "acc" => {
                    self.accuracy_level = value
                        .parse()
                        .map_err(|_| format!("`{item}`: accuracy level must be a number"))?
                }
                "linear" => self.linear = TensorScheme::parse(value)?,
                "v" => self.v_proj = TensorScheme::parse(value)?,
                "down" => self.down_proj = TensorScheme::parse(value)?,
                "emb" => self.embedding = TensorScheme::parse(value)?,
                "all" => {
                    let s = TensorScheme::parse(value)?;
                    (self.linear, self.v_proj, self.down_proj, self.embedding) = (s, s, s, s);
                }
                _ => {
                    return Err(format!(
                        "`{key}`: unknown key; expected linear, v, down, emb, all, block or acc"
                    ))
                }
            }
        }
        self.validate()?;
        Ok(self)
    }

    /// `linear=4a,v=4a,down=4a,emb=4a,block=32,acc=4`: round-trips through [`parse_spec`](Self::parse_spec).
    pub fn spec(&self) -> String {
        format!(
            "linear={},v={},down={},emb={},block={},acc={}",
            self.linear.code(),
            self.v_proj.code(),
            self.down_proj.code(),
            self.embedding.code(),
            self.block_size,
            self.accuracy_level
        )
    }
}

/// Reconstruction error of the quantized weights, per tensor class: what the rounding cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantStats {
    /// `(role, Σ(w − ŵ)², Σw², weights)` in [`Role`] order.
    pub per_role: Vec<(Role, f64, f64, u64)>,
}

impl QuantStats {
    pub fn add(&mut self, role: Role, err2: f64, sum2: f64, n: u64) {
        match self.per_role.iter_mut().find(|r| r.0 == role) {
            Some(r) => {
                r.1 += err2;
                r.2 += sum2;
                r.3 += n;
            }
            None => {
                self.per_role.push((role, err2, sum2, n));
                self.per_role.sort_by_key(|r| r.0);
            }
        }
    }

    /// `role: relative RMS error` lines, e.g. `linear 4a: 7.9e-2 (100.7M weights)`.
    pub fn summary(&self, cfg: &QuantConfig) -> Vec<String> {
        self.per_role
            .iter()
            .map(|(role, e, s, n)| {
                format!(
                    "{} {}: relative RMS error {:.2e} over {:.1}M weights",
                    role.name(),
                    cfg.scheme_of(*role).code(),
                    if *s > 0.0 { (e / s).sqrt() } else { 0.0 },
                    *n as f64 / 1e6
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_from_names() {
        assert_eq!(Role::of("model.embed_tokens.weight"), Role::Embedding);
        assert_eq!(Role::of("lm_head.weight"), Role::Embedding);
        assert_eq!(
            Role::of("model.language_model.layers.3.self_attn.v_proj.weight"),
            Role::VProj
        );
        assert_eq!(Role::of("model.layers.0.mlp.down_proj.weight"), Role::DownProj);
        assert_eq!(Role::of("model.layers.0.mlp.gate_proj.weight"), Role::Linear);
    }

    #[test]
    fn spec_round_trips_and_rejects_nonsense() {
        let c = QuantConfig::int4()
            .parse_spec("emb=8s,down=8s-rtn,block=64,acc=0")
            .unwrap();
        assert_eq!(c.embedding, TensorScheme::new(8, true, Rounding::Search));
        assert_eq!(c.down_proj, TensorScheme::new(8, true, Rounding::Nearest));
        assert_eq!((c.block_size, c.accuracy_level), (64, 0));
        assert_eq!(QuantConfig::int4().parse_spec(&c.spec()).unwrap(), c);
        for bad in ["emb=5a", "emb=4x", "block=48", "block=8", "block=512", "acc=7", "foo=1", "emb"] {
            assert!(QuantConfig::int4().parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bits_per_weight() {
        let s = TensorScheme::new(4, false, Rounding::Search);
        assert_eq!(s.bits_per_weight(32), 4.0 + 36.0 / 32.0);
        let s = TensorScheme::new(8, true, Rounding::Search);
        assert_eq!(s.bits_per_weight(32), 9.0);
    }
}
