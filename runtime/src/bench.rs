//! `gemma bench`: speed and memory of one export on this machine, measured the way generation runs.
//!
//! For each prompt length P, a run is: fresh KV cache sized for P + G positions, prefill of P synthetic prompt
//! tokens asking for the last position's logits only, greedy pick of the first token (time to first token), then
//! G − 1 single-token decode steps, each followed by a greedy pick. Every run is repeated R times after one
//! untimed warm-up run, and the median of each figure is reported (robust to a noisy neighbour).
//!
//! - prefill tok/s = P / prefill seconds (the prompt's forward pass);
//! - time to first token = prefill + the first greedy pick;
//! - decode tok/s = (G − 1) / seconds of the decode steps (forward pass + greedy pick each);
//! - KV-cache bytes = what the cache holds at the end of a run (cpu graph: its allocated buffers);
//! - peak RSS = the process's high-water mark (`VmHWM` of `/proc/self/status`, else `getrusage`'s `ru_maxrss`),
//!   which includes loading the model.
//!
//! The prompt ids are deterministic pseudo-random ids (BOS first): speed does not depend on the text, and no
//! tokenizer is needed.

use std::time::Instant;

use serde::Serialize;

use crate::decoder::Decoder;
use crate::error::{Error, Result};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Prompt lengths, one measurement each.
    pub prompt_tokens: Vec<usize>,
    /// Tokens generated per run (the first comes from the prefill).
    pub gen_tokens: usize,
    /// Timed runs per prompt length (the median is reported).
    pub repeat: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            prompt_tokens: vec![128, 512],
            gen_tokens: 128,
            repeat: 3,
        }
    }
}

/// The figures for one prompt length (medians over the repeats).
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub time_to_first_token_ms: f64,
    pub kv_cache_bytes: usize,
    /// Every timed run's (prefill tok/s, decode tok/s), to judge the spread.
    pub runs: Vec<(f64, f64)>,
}

/// The whole measurement.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub graph: String,
    pub precision: String,
    pub threads: usize,
    pub load_seconds: f64,
    pub rows: Vec<BenchRow>,
    /// Peak resident memory of the process, bytes (0 if the platform does not say).
    pub peak_rss_bytes: u64,
}

impl BenchReport {
    /// The human-readable form `gemma bench` prints.
    pub fn table(&self) -> String {
        let mib = |b: f64| b / (1024.0 * 1024.0);
        let mut out = format!(
            "graph {}, precision {}, {} thread(s), model loaded in {:.2}s\n\
             {:>8} {:>6} {:>14} {:>13} {:>10} {:>10}\n",
            self.graph,
            self.precision,
            self.threads,
            self.load_seconds,
            "prompt",
            "gen",
            "prefill tok/s",
            "decode tok/s",
            "TTFT ms",
            "KV MiB"
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{:>8} {:>6} {:>14.1} {:>13.1} {:>10.1} {:>10.2}\n",
                r.prompt_tokens,
                r.gen_tokens,
                r.prefill_tokens_per_s,
                r.decode_tokens_per_s,
                r.time_to_first_token_ms,
                mib(r.kv_cache_bytes as f64)
            ));
        }
        out.push_str(&format!(
            "peak RSS {:.1} MiB (medians of {} run(s) per row)\n",
            mib(self.peak_rss_bytes as f64),
            self.rows.first().map_or(0, |r| r.runs.len())
        ));
        out
    }
}

/// Deterministic prompt ids: BOS, then ids from a fixed linear congruential sequence in `[3, min(vocab, 32000))`.
pub fn synthetic_prompt(len: usize, vocab: usize, bos: u32) -> Vec<u32> {
    let hi = vocab.min(32_000) as u64;
    let span = hi.saturating_sub(3).max(1);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut ids = Vec::with_capacity(len);
    if len > 0 {
        ids.push(bos);
    }
    while ids.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ids.push((3 + (state >> 33) % span) as u32);
    }
    ids
}

/// Index of the largest logit (the first one on ties), the greedy choice.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Timings of one run.
struct Run {
    prefill_s: f64,
    ttft_s: f64,
    decode_s: f64,
    kv_bytes: usize,
}

fn one_run(decoder: &mut Decoder, prompt: &[u32], gen: usize) -> Result<Run> {
    let mut cache = decoder.new_cache_with_capacity(1, prompt.len() + gen)?;
    let start = Instant::now();
    let mut prefill_s = 0.0;
    let mut token = decoder.forward_tokens_with(prompt, &mut cache, |row| {
        prefill_s = start.elapsed().as_secs_f64();
        argmax(row)
    })?;
    let ttft_s = start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    for _ in 1..gen {
        token = decoder.forward_tokens_with(&[token], &mut cache, argmax)?;
    }
    let decode_s = decode_start.elapsed().as_secs_f64();
    Ok(Run {
        prefill_s,
        ttft_s,
        decode_s,
        kv_bytes: cache.bytes(),
    })
}

/// Median of `v` (mean of the two middle values for an even count); 0 for an empty slice.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Measures `decoder` (see the module docs). `progress(prompt_tokens, run, runs)` is called before each timed run.
pub fn run(
    decoder: &mut Decoder,
    options: &BenchOptions,
    mut progress: impl FnMut(usize, usize, usize),
) -> Result<Vec<BenchRow>> {
    if options.prompt_tokens.is_empty() || options.prompt_tokens.contains(&0) {
        return Err(Error::InvalidArgument(
            "prompt lengths must be at least 1 token".into(),
        ));
    }
    if options.gen_tokens < 2 {
        return Err(Error::InvalidArgument(
            "--gen-tokens must be at least 2 (the first token comes from the prefill)".into(),
        ));
    }
    if options.repeat == 0 {
        return Err(Error::InvalidArgument("--repeat must be at least 1".into()));
    }
    let max = decoder.manifest().max_position_embeddings;
    let vocab = decoder.vocab_size();
    let bos = decoder.manifest().bos_token_id;
    let mut rows = Vec::new();
    for &p in &options.prompt_tokens {
        if p.saturating_add(options.gen_tokens) > max {
            return Err(Error::InvalidArgument(format!(
                "{p} prompt + {} generated tokens exceed the model's {max} positions",
                options.gen_tokens
            )));
        }
        let prompt = synthetic_prompt(p, vocab, bos);
        // Warm-up: first-run allocations and lazy initialization are not what we measure.
        one_run(decoder, &prompt, options.gen_tokens.min(8))?;
        let mut runs = Vec::with_capacity(options.repeat);
        for r in 0..options.repeat {
            progress(p, r + 1, options.repeat);
            runs.push(one_run(decoder, &prompt, options.gen_tokens)?);
        }
        let prefill: Vec<f64> = runs.iter().map(|r| p as f64 / r.prefill_s).collect();
        let decode: Vec<f64> = runs
            .iter()
            .map(|r| (options.gen_tokens - 1) as f64 / r.decode_s)
            .collect();
        let ttft: Vec<f64> = runs.iter().map(|r| r.ttft_s * 1e3).collect();
        rows.push(BenchRow {
            prompt_tokens: p,
            gen_tokens: options.gen_tokens,
            prefill_tokens_per_s: median(&prefill),
            decode_tokens_per_s: median(&decode),
            time_to_first_token_ms: median(&ttft),
            kv_cache_bytes: runs.last().map_or(0, |r| r.kv_bytes),
            runs: prefill.into_iter().zip(decode).collect(),
        });
    }
    Ok(rows)
}

/// Peak resident set size of this process in bytes: `VmHWM` from `/proc/self/status` on Linux, otherwise
/// `getrusage(RUSAGE_SELF).ru_maxrss`; 0 when neither is available.
pub fn peak_rss_bytes() -> u64 {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            return kb * 1024;
        }
    }
    rusage_max_rss()
}

#[cfg(unix)]
fn rusage_max_rss() -> u64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc_rusage::RUsage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc_rusage::getrusage(0, &mut usage) };
    if rc != 0 {
        return 0;
    }
    // Linux reports kilobytes, macOS bytes.
    if cfg!(target_os = "macos") {
        usage.ru_maxrss as u64
    } else {
        usage.ru_maxrss as u64 * 1024
    }
}

#[cfg(not(unix))]
fn rusage_max_rss() -> u64 {
    0
}

/// The one libc call this module needs, declared here rather than pulling in the libc crate.
#[cfg(unix)]
mod libc_rusage {
    #[repr(C)]
    pub struct TimeVal {
        pub tv_sec: std::os::raw::c_long,
        pub tv_usec: std::os::raw::c_long,
    }
    #[repr(C)]
    pub struct RUsage {
        pub ru_utime: TimeVal,
        pub ru_stime: TimeVal,
        pub ru_maxrss: std::os::raw::c_long,
        pub ru_ixrss: std::os::raw::c_long,
        pub ru_idrss: std::os::raw::c_long,
        pub ru_isrss: std::os::raw::c_long,
        pub ru_minflt: std::os::raw::c_long,
        pub ru_majflt: std::os::raw::c_long,
        pub ru_nswap: std::os::raw::c_long,
        pub ru_inblock: std::os::raw::c_long,
        pub ru_oublock: std::os::raw::c_long,
        pub ru_msgsnd: std::os::raw::c_long,
        pub ru_msgrcv: std::os::raw::c_long,
        pub ru_nsignals: std::os::raw::c_long,
        pub ru_nvcsw: std::os::raw::c_long,
        pub ru_nivcsw: std::os::raw::c_long,
    }
    extern "C" {
        pub fn getrusage(who: i32, usage: *mut RUsage) -> i32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn synthetic_prompt_is_deterministic_and_in_range() {
        let a = synthetic_prompt(100, 256, 2);
        assert_eq!(a, synthetic_prompt(100, 256, 2));
        assert_eq!(a.len(), 100);
        assert_eq!(a[0], 2);
        assert!(a[1..].iter().all(|&t| (3..256).contains(&t)));
        assert!(a[1..].iter().any(|&t| t != a[1]), "not constant");
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 2.0, 1.0, 2.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }

    #[test]
    fn peak_rss_is_reported() {
        let rss = peak_rss_bytes();
        assert!(rss > 1 << 20, "peak RSS {rss} bytes");
    }
}
