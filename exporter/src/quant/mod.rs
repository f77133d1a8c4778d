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
//! measuring the mean NLL of the real Gemma 3 270M on `tests/fixtures/real/perplexity.txt` (the study is in
//! docs/benchmarks.md); [`QuantConfig::parse_spec`] lets any other mix be exported for such studies.
//!
//! - [`rounding`]: how one block becomes codes (round-to-nearest or a least-squares scale search).
//! - [`pack`]: streams a checkpoint tensor through the rounder into `MatMulNBits`' packed layout.
//! - [`graph`]: the `MatMulNBits` / `GatherBlockQuantized` nodes.

pub mod graph;
pub mod importance;
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
    /// Values per block for this class; 0 = the export's [`QuantConfig::block_size`].
    pub block: u16,
}

impl TensorScheme {
    pub const fn new(bits: u8, symmetric: bool, rounding: Rounding) -> TensorScheme {
        TensorScheme {
            bits,
            symmetric,
            rounding,
            block: 0,
        }
    }

    /// This scheme with its own block size.
    pub const fn with_block(mut self, block: u16) -> TensorScheme {
        self.block = block;
        self
    }

    /// `BITS KIND [BLOCK] [-rtn]`: `4a` (4-bit asymmetric, searched, the export's block size), `4a16` (blocks of
    /// 16), `8s-rtn` (8-bit symmetric, round-to-nearest)...
    pub fn parse(s: &str) -> Result<TensorScheme, String> {
        let (head, rounding) = match s.strip_suffix("-rtn") {
            Some(h) => (h, Rounding::Nearest),
            None => (s, Rounding::Search),
        };
        let bad = || {
            format!("`{s}`: expected bits (4 or 8), a or s, an optional block size and -rtn: 4a, 8s, 4a16, 4s-rtn")
        };
        let kind_at = head.find(['a', 's']).ok_or_else(bad)?;
        let bits: u8 = head[..kind_at]
            .parse()
            .ok()
            .filter(|b| *b == 4 || *b == 8)
            .ok_or_else(bad)?;
        let symmetric = &head[kind_at..kind_at + 1] == "s";
        let rest = &head[kind_at + 1..];
        let block = if rest.is_empty() {
            0
        } else {
            rest.parse::<u16>().map_err(|_| bad())?
        };
        Ok(TensorScheme::new(bits, symmetric, rounding).with_block(block))
    }

    /// The inverse of [`parse`](Self::parse).
    pub fn code(&self) -> String {
        format!(
            "{}{}{}{}",
            self.bits,
            if self.symmetric { "s" } else { "a" },
            if self.block > 0 {
                self.block.to_string()
            } else {
                String::new()
            },
            if self.rounding == Rounding::Nearest {
                "-rtn"
            } else {
                ""
            }
        )
    }

    /// The block size this scheme uses in an export whose default is `default_block`.
    pub fn block_size(&self, default_block: usize) -> usize {
        if self.block > 0 {
            self.block as usize
        } else {
            default_block
        }
    }

    /// Bits per weight on disk: codes, the fp32 scale and the zero point, for blocks of `block_size`.
    pub fn bits_per_weight(&self, block_size: usize) -> f64 {
        let zero = if self.symmetric {
            0.0
        } else {
            self.bits as f64
        };
        self.bits as f64 + (32.0 + zero) / block_size as f64
    }
}

/// The tensor classes that can be quantized differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
    /// The token embedding; also the lm_head (tied, or its own `lm_head.weight`).
    Embedding,
}

impl Role {
    pub const ALL: [Role; 8] = [
        Role::QProj,
        Role::KProj,
        Role::VProj,
        Role::OProj,
        Role::GateProj,
        Role::UpProj,
        Role::DownProj,
        Role::Embedding,
    ];

    /// The class of a checkpoint tensor, from its name (anything unrecognised counts as `o_proj`-like).
    pub fn of(weight_name: &str) -> Role {
        let suffix = |s: &str| weight_name.ends_with(s);
        if suffix("embed_tokens.weight") || suffix("lm_head.weight") {
            Role::Embedding
        } else if suffix("q_proj.weight") {
            Role::QProj
        } else if suffix("k_proj.weight") {
            Role::KProj
        } else if suffix("v_proj.weight") {
            Role::VProj
        } else if suffix("gate_proj.weight") {
            Role::GateProj
        } else if suffix("up_proj.weight") {
            Role::UpProj
        } else if suffix("down_proj.weight") {
            Role::DownProj
        } else {
            Role::OProj
        }
    }

    /// The key of this class in a quantization spec.
    pub fn key(&self) -> &'static str {
        match self {
            Role::QProj => "q",
            Role::KProj => "k",
            Role::VProj => "v",
            Role::OProj => "o",
            Role::GateProj => "gate",
            Role::UpProj => "up",
            Role::DownProj => "down",
            Role::Embedding => "emb",
        }
    }

    fn index(&self) -> usize {
        *self as usize
    }
}

/// Spec keys naming several classes at once.
const GROUPS: &[(&str, &[Role])] = &[
    ("all", &Role::ALL),
    (
        "attn",
        &[Role::QProj, Role::KProj, Role::VProj, Role::OProj],
    ),
    ("mlp", &[Role::GateProj, Role::UpProj, Role::DownProj]),
];

/// A whole quantized export: block size, `MatMulNBits` accuracy level and one scheme per [`Role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuantConfig {
    /// Values per block along K: 16, 32, 64, 128 or 256.
    pub block_size: usize,
    /// `MatMulNBits.accuracy_level`: 0 = fp32 activations, 4 = int8 activations per block (fast path).
    pub accuracy_level: i64,
    /// Weigh each column's rounding error by its estimated activation energy ([`importance`]) in the searches.
    pub activation_aware: bool,
    /// Copy source blocks that a tensor's scheme holds exactly (GGUF Q8_0, Q5_0 and Q4_0 under 8-bit symmetric
    /// blocks of 32) instead of re-quantizing them (see [`pack`]). On by default; spec `keep=none` turns it off.
    pub keep_source_blocks: bool,
    /// Indexed by [`Role`].
    schemes: [TensorScheme; 8],
}

impl QuantConfig {
    /// Every class with `scheme`, blocks of 32, int8 activations inside the MatMuls, no column importance.
    pub const fn uniform(scheme: TensorScheme) -> QuantConfig {
        QuantConfig {
            block_size: 32,
            accuracy_level: 4,
            activation_aware: false,
            keep_source_blocks: true,
            schemes: [scheme; 8],
        }
    }

    /// The default of `--precision int4` (spec `all=8s,emb=8s64,gate=4a`): [`int8`](Self::int8) with the MLP's
    /// `gate_proj` in 4 bits, asymmetric, blocks of 32, scales and zero points searched.
    ///
    /// The smallest mix measured within 1% of fp32's mean NLL on the real Gemma 3 270M (+0.59%, 271 MiB; `int8`
    /// +0.06%, 280 MiB). The tied embedding/lm_head must stay 8-bit for that: in 4 bits the lm_head alone costs
    /// +1.5% and the lookup +0.3% (the previous default, `all=8s,emb=4a`, 212 MiB, measured +1.8%). `gate_proj` in 4
    /// bits costs +0.5 points; adding `v_proj` (+1.2% in all) or taking `q/k/v` instead (+1.3%) passes 1%, and the
    /// other classes cost more per byte. The measurements: docs/benchmarks.md, "Choosing the quantized defaults".
    pub const fn int4() -> QuantConfig {
        let mut q = QuantConfig::int8();
        q.schemes[Role::GateProj as usize] = TensorScheme::new(4, false, Rounding::Search);
        q
    }

    /// The default of `--precision int8` (spec `all=8s,emb=8s64`): everything 8-bit symmetric, scales searched; the
    /// layers in blocks of 32 (the layout of GGUF's Q8_0), the embedding/lm_head in blocks of 64.
    ///
    /// The lm_head is the largest MatMul of a small Gemma, and ONNX Runtime's int8-activation kernel runs it faster
    /// with longer blocks. Blocks of 64 also measured a lower NLL than 32 there, and 128 a clearly higher one (the
    /// activations are quantized per block too, and coarser blocks lose Gemma's outlier channels). The
    /// measurements: docs/benchmarks.md, "Choosing the quantized defaults".
    pub const fn int8() -> QuantConfig {
        let mut q = QuantConfig::uniform(TensorScheme::new(8, true, Rounding::Search));
        q.schemes[Role::Embedding as usize] =
            TensorScheme::new(8, true, Rounding::Search).with_block(64);
        q
    }

    /// The scheme of one checkpoint tensor.
    pub fn scheme(&self, weight_name: &str) -> TensorScheme {
        self.scheme_of(Role::of(weight_name))
    }

    pub fn scheme_of(&self, role: Role) -> TensorScheme {
        self.schemes[role.index()]
    }

    pub fn set(&mut self, role: Role, scheme: TensorScheme) {
        self.schemes[role.index()] = scheme;
    }

    /// Checks the block size (ONNX Runtime: a power of two, at least 16).
    pub fn validate(&self) -> Result<(), String> {
        for b in std::iter::once(self.block_size)
            .chain(self.schemes.iter().map(|s| s.block_size(self.block_size)))
        {
            if b < 16 || !b.is_power_of_two() || b > rounding::MAX_BLOCK {
                return Err(format!(
                    "block size {b}: must be 16, 32, 64, 128 or 256 (ONNX Runtime's fast quantized kernels; 32 is the default)"
                ));
            }
        }
        if !matches!(self.accuracy_level, 0..=4) {
            return Err(format!(
                "accuracy level {}: must be 0 (fp32), 1, 2, 3 or 4 (int8)",
                self.accuracy_level
            ));
        }
        Ok(())
    }

    /// Applies a comma-separated override list to `self`, left to right, e.g. `all=4a,emb=8s,block=64,acc=0`.
    ///
    /// Keys `q`, `k`, `v`, `o`, `gate`, `up`, `down`, `emb` (and the groups `attn`, `mlp`, `all`) take a scheme:
    /// bits (4 or 8), `a`symmetric or `s`ymmetric, and `-rtn` for round-to-nearest instead of the scale search:
    /// `4a`, `4s-rtn`, `8s`. `block` takes the block size, `acc` the `MatMulNBits` accuracy level, `imp` the
    /// column importance of the searches (`gains` or `none`), `keep` whether source blocks a scheme holds exactly
    /// are copied (`exact`, the default, or `none`: re-quantize everything from the dequantized values).
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
                "imp" => {
                    self.activation_aware = match value {
                        "gains" => true,
                        "none" => false,
                        _ => return Err(format!("`{item}`: imp is gains or none")),
                    }
                }
                "keep" => {
                    self.keep_source_blocks = match value {
                        "exact" => true,
                        "none" => false,
                        _ => return Err(format!("`{item}`: keep is exact or none")),
                    }
                }
                _ => {
                    let roles: Vec<Role> = match GROUPS.iter().find(|(g, _)| *g == key) {
                        Some((_, roles)) => roles.to_vec(),
                        None => match Role::ALL.iter().find(|r| r.key() == key) {
                            Some(r) => vec![*r],
                            None => {
                                return Err(format!(
                                    "`{key}`: unknown key; expected q, k, v, o, gate, up, down, emb, attn, mlp, all, block, acc, imp or keep"
                                ))
                            }
                        },
                    };
                    let scheme = TensorScheme::parse(value)?;
                    for r in roles {
                        self.set(r, scheme);
                    }
                }
            }
        }
        self.validate()?;
        Ok(self)
    }

    /// The full spec, e.g. `q=4a,k=4a,...,emb=8s,block=32,acc=4,imp=none`: round-trips through
    /// [`parse_spec`](Self::parse_spec). `keep` is written only when off (`keep=none`), so the specs of exports
    /// that keep source blocks read as before the option existed.
    pub fn spec(&self) -> String {
        let mut parts: Vec<String> = Role::ALL
            .iter()
            .map(|r| format!("{}={}", r.key(), self.scheme_of(*r).code()))
            .collect();
        parts.push(format!("block={}", self.block_size));
        parts.push(format!("acc={}", self.accuracy_level));
        let imp = if self.activation_aware {
            "gains"
        } else {
            "none"
        };
        parts.push(format!("imp={imp}"));
        if !self.keep_source_blocks {
            parts.push("keep=none".into());
        }
        parts.join(",")
    }
}

/// Reconstruction error of the quantized weights, per tensor class: what the rounding cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantStats {
    /// `(role, Σ(w − ŵ)², Σw², weights)` in [`Role`] order.
    pub per_role: Vec<(Role, f64, f64, u64)>,
    /// Checkpoint tensors whose stored blocks were copied rather than re-quantized (see [`pack`]), in export order.
    pub kept: Vec<String>,
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

    /// `role: relative RMS error` lines, e.g. `linear 4a: 7.9e-2 (100.7M weights)`, then how many source tensors
    /// were kept as stored.
    pub fn summary(&self, cfg: &QuantConfig) -> Vec<String> {
        let kept = (!self.kept.is_empty()).then(|| {
            format!(
                "{} tensors kept as their source blocks (no re-quantization)",
                self.kept.len()
            )
        });
        self.per_role
            .iter()
            .map(|(role, e, s, n)| {
                format!(
                    "{} {}: relative RMS error {:.2e} over {:.1}M weights",
                    role.key(),
                    cfg.scheme_of(*role).code(),
                    if *s > 0.0 { (e / s).sqrt() } else { 0.0 },
                    *n as f64 / 1e6
                )
            })
            .chain(kept)
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
        assert_eq!(
            Role::of("model.layers.0.mlp.down_proj.weight"),
            Role::DownProj
        );
        assert_eq!(
            Role::of("model.layers.0.mlp.gate_proj.weight"),
            Role::GateProj
        );
        assert_eq!(
            Role::of("model.layers.0.self_attn.o_proj.weight"),
            Role::OProj
        );
    }

    #[test]
    fn spec_round_trips_and_rejects_nonsense() {
        let c = QuantConfig::int4()
            .parse_spec("all=4a,emb=8s,mlp=8s-rtn,up=4a,block=64,acc=0,imp=gains")
            .unwrap();
        let s8 = TensorScheme::new(8, true, Rounding::Search);
        assert_eq!(c.scheme_of(Role::Embedding), s8);
        assert_eq!(
            c.scheme("model.layers.1.mlp.down_proj.weight").code(),
            "8s-rtn"
        );
        assert_eq!(c.scheme_of(Role::UpProj).code(), "4a");
        assert_eq!(c.scheme_of(Role::QProj).code(), "4a");
        let d = QuantConfig::int4().parse_spec("emb=4a16,v=8s-rtn").unwrap();
        assert_eq!(d.scheme_of(Role::Embedding).block_size(32), 16);
        assert_eq!(d.scheme_of(Role::Embedding).code(), "4a16");
        assert_eq!(d.scheme_of(Role::VProj).block_size(32), 32);
        assert_eq!(
            (c.block_size, c.accuracy_level, c.activation_aware),
            (64, 0, true)
        );
        // The shipped defaults, as specs.
        let int4 = QuantConfig::int4().spec();
        assert_eq!(
            int4,
            "q=8s,k=8s,v=8s,o=8s,gate=4a,up=8s,down=8s,emb=8s64,block=32,acc=4,imp=none"
        );
        assert_eq!(
            QuantConfig::int8().parse_spec("gate=4a").unwrap(),
            QuantConfig::int4()
        );
        assert_eq!(QuantConfig::int4().parse_spec(&c.spec()).unwrap(), c);
        // Keeping source blocks is the default and is written only when turned off.
        assert!(QuantConfig::int8().keep_source_blocks);
        let no_keep = QuantConfig::int8().parse_spec("keep=none").unwrap();
        assert!(!no_keep.keep_source_blocks);
        assert!(no_keep.spec().ends_with(",keep=none"));
        assert_eq!(
            QuantConfig::int8().parse_spec(&no_keep.spec()).unwrap(),
            no_keep
        );
        assert_eq!(
            no_keep.parse_spec("keep=exact").unwrap(),
            QuantConfig::int8()
        );
        for bad in [
            "emb=5a",
            "emb=4x",
            "emb=4a48",
            "emb=4a8",
            "block=48",
            "block=8",
            "block=512",
            "acc=7",
            "foo=1",
            "emb",
            "keep=q4_0",
        ] {
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
