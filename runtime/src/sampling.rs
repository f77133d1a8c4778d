//! Choosing the next token from a row of logits: greedy (temperature 0, the default) or sampling with temperature,
//! top-k and top-p (nucleus), applied in that order as transformers' logits warpers do. The RNG is ChaCha8, seeded
//! from `seed` for reproducible runs, from the OS otherwise.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingConfig {
    /// 0 = greedy (argmax). Otherwise logits are divided by it before softmax.
    pub temperature: f32,
    /// Keep only the k most likely tokens (`None` or 0: no limit).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p (`None` or 1: no limit).
    pub top_p: Option<f32>,
    /// Seed of the RNG; `None`: a random seed.
    pub seed: Option<u64>,
}

impl SamplingConfig {
    pub fn greedy() -> Self {
        Self::default()
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "temperature must be a finite number >= 0 (0 = greedy), got {}",
                self.temperature
            )));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::InvalidArgument(format!(
                    "top-p must be in (0, 1], got {p}"
                )));
            }
        }
        Ok(())
    }
}

pub struct Sampler {
    config: SamplingConfig,
    rng: ChaCha8Rng,
    /// Scratch buffer of (token, logit) candidates, reused between steps.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(config: SamplingConfig) -> Result<Sampler> {
        config.validate()?;
        let rng = match config.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_os_rng(),
        };
        Ok(Sampler {
            config,
            rng,
            candidates: Vec::new(),
        })
    }

    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// The next token for one row of logits (NaN counts as -inf).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.config.is_greedy() {
            return argmax(logits);
        }
        // The candidates keep the raw logits (dividing by T > 0 does not change their order); the temperature is
        // applied in f64 to differences from the max, `(l − max) / T ≤ 0`, so a tiny T (1e-39) gives weights of 0
        // and 1 (greedy-like) instead of overflowing `l / T` to ±inf and NaN.
        let t = self.config.temperature as f64;
        if logits.contains(&f32::INFINITY) {
            // An infinite logit has all the probability mass at any temperature.
            return argmax(logits);
        }
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (i as u32, l)),
        );
        if self.candidates.is_empty() {
            return argmax(logits);
        }
        let by_logit_desc =
            |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let cands = &mut self.candidates;
        if let Some(k) = self.config.top_k.filter(|&k| k > 0 && k < cands.len()) {
            cands.select_nth_unstable_by(k - 1, by_logit_desc);
            cands.truncate(k);
        }
        // Softmax weights in f64, relative to the max logit.
        let max = cands.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.1)) as f64;
        let weight = |c: &(u32, f32)| ((c.1 as f64 - max) / t).exp();
        let total: f64 = cands.iter().map(weight).sum();

        // Top-p: the smallest prefix of the tokens sorted by probability whose mass reaches p. Only that prefix needs
        // sorting: grow a partially sorted head (select + sort) until it holds the nucleus.
        let mut keep = cands.len();
        if let Some(p) = self.config.top_p.filter(|&p| p < 1.0) {
            let target = p as f64 * total;
            let mut head = 64.min(cands.len());
            'grow: loop {
                if head < cands.len() {
                    cands.select_nth_unstable_by(head - 1, by_logit_desc);
                }
                cands[..head].sort_unstable_by(by_logit_desc);
                let mut cumulative = 0.0;
                for (i, c) in cands[..head].iter().enumerate() {
                    cumulative += weight(c);
                    if cumulative >= target {
                        keep = i + 1;
                        break 'grow;
                    }
                }
                if head == cands.len() {
                    break; // rounding: keep everything
                }
                head = (head * 4).min(cands.len());
            }
        }
        let kept = &cands[..keep];
        let kept_total: f64 = if keep == cands.len() {
            total
        } else {
            kept.iter().map(weight).sum()
        };
        let mut r = self.rng.random::<f64>() * kept_total;
        for c in kept {
            let w = weight(c);
            if r < w {
                return c.0;
            }
            r -= w;
        }
        kept[keep - 1].0
    }
}

/// Index of the largest logit (the first one on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_val = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_val {
            best = i;
            best_val = l;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f32, top_k: Option<usize>, top_p: Option<f32>, seed: u64) -> Sampler {
        Sampler::new(SamplingConfig {
            temperature,
            top_k,
            top_p,
            seed: Some(seed),
        })
        .unwrap()
    }

    fn histogram(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<usize> {
        let mut h = vec![0; logits.len()];
        for _ in 0..n {
            h[s.sample(logits) as usize] += 1;
        }
        h
    }

    #[test]
    fn greedy_is_argmax_first_on_ties_and_ignores_nan() {
        let mut s = Sampler::new(SamplingConfig::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
        assert_eq!(s.sample(&[f32::NAN, 0.5, 0.2]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn top_k_1_is_greedy() {
        let mut s = sampler(1.5, Some(1), None, 7);
        for _ in 0..50 {
            assert_eq!(s.sample(&[0.0, 2.0, 1.9, -3.0]), 1);
        }
    }

    #[test]
    fn top_k_keeps_only_k_tokens() {
        let mut s = sampler(1.0, Some(2), None, 1);
        let h = histogram(&mut s, &[1.0, 0.9, 0.8, 0.7], 2000);
        assert!(h[0] > 0 && h[1] > 0);
        assert_eq!(h[2] + h[3], 0);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // probs ≈ [0.6, 0.3, 0.1]: top_p 0.8 keeps tokens 0 and 1 only (0.6 < 0.8 <= 0.9).
        let logits = [0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()];
        let mut s = sampler(1.0, None, Some(0.8), 3);
        let h = histogram(&mut s, &logits, 3000);
        assert_eq!(h[2], 0);
        assert!(h[0] > h[1] && h[1] > 0);
        // A tiny top_p keeps just the most likely token.
        let mut s = sampler(1.0, None, Some(0.01), 3);
        assert_eq!(histogram(&mut s, &logits, 200)[0], 200);
    }

    #[test]
    fn sampling_follows_the_softmax() {
        let logits = [0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        let mut s = sampler(1.0, None, None, 11);
        let n = 20000;
        let h = histogram(&mut s, &logits, n);
        let f: Vec<f64> = h.iter().map(|&c| c as f64 / n as f64).collect();
        assert!(
            (f[0] - 0.5).abs() < 0.02 && (f[1] - 0.25).abs() < 0.02,
            "{f:?}"
        );
    }

    #[test]
    fn tiny_temperatures_do_not_overflow() {
        // l / 1e-39 overflows f32 to inf (and inf − inf = NaN); the sampler must still pick the most likely token.
        let logits = [0.5f32, 3.0, -2.0, 2.9];
        for t in [1e-39f32, f32::MIN_POSITIVE, 1e-45] {
            let mut s = sampler(t, None, None, 3);
            assert_eq!(histogram(&mut s, &logits, 200)[1], 200, "T = {t:e}");
            let mut s = sampler(t, Some(2), Some(0.5), 3);
            assert_eq!(histogram(&mut s, &logits, 200)[1], 200, "T = {t:e}");
        }
        // Large logits with a small T stay finite too.
        let mut s = sampler(1e-30, None, None, 1);
        assert_eq!(s.sample(&[1e30, -1e30, 2e30]), 2);
    }

    #[test]
    fn low_temperature_sharpens() {
        let logits = [1.0f32, 0.0];
        let mut s = sampler(0.05, None, None, 5);
        assert!(histogram(&mut s, &logits, 500)[0] == 500);
        let mut s = sampler(100.0, None, None, 5);
        let h = histogram(&mut s, &logits, 4000);
        assert!(h[1] > 1500, "{h:?}");
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let run = |seed| {
            let mut s = sampler(1.0, Some(50), Some(0.9), seed);
            (0..100).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        for c in [
            SamplingConfig {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingConfig {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplingConfig {
                temperature: 1.0,
                top_p: Some(0.0),
                ..Default::default()
            },
            SamplingConfig {
                temperature: 1.0,
                top_p: Some(1.5),
                ..Default::default()
            },
        ] {
            assert!(Sampler::new(c).is_err());
        }
    }

    #[test]
    fn masked_tokens_are_never_sampled() {
        let mut s = sampler(1.0, None, None, 9);
        let h = histogram(&mut s, &[f32::NEG_INFINITY, 0.0, f32::NAN, 0.0], 500);
        assert_eq!(h[0] + h[2], 0);
    }
}

#[cfg(test)]
mod nucleus_tests {
    use super::*;

    /// The nucleus found by growing a partially sorted head equals the one of a full sort, on a large vocabulary.
    #[test]
    fn large_vocab_top_p_matches_full_sort() {
        let n = 50_000;
        let logits: Vec<f32> = (0..n)
            .map(|i| (((i as u64 * 2654435761) % 1000) as f32) / 100.0)
            .collect();
        for p in [0.01f32, 0.3, 0.9, 0.999] {
            // Reference nucleus from a full sort.
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            let max = logits[idx[0]] as f64;
            let w: Vec<f64> = idx
                .iter()
                .map(|&i| (logits[i] as f64 - max).exp())
                .collect();
            let total: f64 = w.iter().sum();
            let mut cum = 0.0;
            let mut keep = n;
            for (j, x) in w.iter().enumerate() {
                cum += x;
                if cum >= p as f64 * total {
                    keep = j + 1;
                    break;
                }
            }
            let allowed: std::collections::HashSet<u32> =
                idx[..keep].iter().map(|&i| i as u32).collect();
            let mut s = Sampler::new(SamplingConfig {
                temperature: 1.0,
                top_p: Some(p),
                seed: Some(1),
                ..Default::default()
            })
            .unwrap();
            for _ in 0..200 {
                assert!(allowed.contains(&s.sample(&logits)), "p={p}");
            }
        }
    }
}
