//! The scheduler: one thread owns the model and answers every request, decoding the active ones together.
//!
//! Continuous batching, on text and multimodal exports alike (an [`Engine`]): between two steps, waiting requests
//! join (each prefilled alone, with its images, into its own batch-1 cache, which samples its first token) and
//! finished or abandoned ones leave; then one decode step of the decoder runs on every active sequence at once, one
//! token each. When the set of sequences changes, their
//! KV rows are gathered into one left-padded batch cache ([`KvCache::gather`]); each row's `attention_mask` masks
//! its padding and its `position_ids` are its own positions, so a sequence computes what it computes alone.
//! A lone sequence keeps its own cache (no copy): it runs exactly what `gemma generate` runs.
//!
//! The memory budget is `max_batch` slots of at most `ctx` positions each: more requests wait in a queue (FIFO).

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;

use ndarray::{s, Array2};

use super::api::{ApiError, Request};
use super::engine::{Engine, Served};
use super::sequence::{Event, Events, Sequence};
use crate::decoder::{LogitsMode, Step};
use crate::error::{Error, Result};
use crate::generate::check_prompt;
use crate::kv_cache::{KvCache, RowSource};
use crate::manifest::Manifest;
use crate::sampling::Sampler;
use crate::tokenizer::Tokenizer;

/// A request and where its events go.
pub struct Job {
    pub request: Request,
    pub events: Events,
}

/// Limits of the scheduler.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Sequences decoded together at most.
    pub max_batch: usize,
    /// Positions (prompt + reply) of one request at most.
    pub ctx: usize,
}

/// Maps a library error of one request to what its client gets: its own mistakes are 400s.
pub fn api_error(e: Error) -> ApiError {
    match e {
        Error::PromptTooLong { .. } => ApiError::invalid(e.to_string(), Some("messages"))
            .with_status(400, "context_length_exceeded"),
        Error::InvalidArgument(_)
        | Error::TemplateException(_)
        | Error::ChatTemplate(_)
        | Error::Image { .. }
        | Error::ImagePlaceholders { .. }
        | Error::NoVision { .. } => ApiError::invalid(e.to_string(), None),
        other => ApiError::server(other.to_string()),
    }
}

/// The reply budget of a request with `prompt` tokens: `max_tokens`, or the rest of the context; refuses a prompt
/// that leaves no room.
pub fn reply_budget(
    prompt: usize,
    max_tokens: Option<usize>,
    ctx: usize,
) -> Result<usize, ApiError> {
    let max_new = max_tokens.unwrap_or(ctx.saturating_sub(prompt));
    if prompt.saturating_add(max_new.max(1)) > ctx {
        return Err(ApiError::invalid(
            format!(
                "this request needs {prompt} prompt tokens + {} completion tokens, more than the context of {ctx} \
                 positions (gemma serve --ctx); shorten the messages or lower max_tokens",
                max_new.max(1)
            ),
            Some("messages"),
        )
        .with_status(400, "context_length_exceeded"));
    }
    Ok(max_new)
}

/// The scheduler loop; returns when every sender of `jobs` is gone and the work is done.
pub fn run<M: Engine>(mut gen: Served<M>, jobs: Receiver<Job>, limits: Limits) -> Result<()> {
    // The text streams borrow a tokenizer while the model runs: a second copy of it.
    let tokenizer = gen.model_ref().stream_tokenizer()?;
    let manifest = gen.model().decoder().manifest().clone();
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut rows: Vec<Sequence<'_>> = Vec::new();
    let mut cache: Option<KvCache> = None;
    loop {
        if rows.is_empty() && queue.is_empty() {
            match jobs.recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => return Ok(()),
            }
        }
        while let Ok(job) = jobs.try_recv() {
            queue.push_back(job);
        }
        queue.retain(|j| !j.events.is_closed());

        // Requests join: each prefilled alone.
        let mut joined: Vec<(Sequence<'_>, KvCache)> = Vec::new();
        while rows.len() + joined.len() < limits.max_batch {
            let Some(job) = queue.pop_front() else { break };
            let events = job.events.clone();
            match start(&mut gen, &tokenizer, job, limits) {
                Ok(Some(started)) => joined.push(started),
                Ok(None) => {}
                Err(e) => {
                    let _ = events.send(Event::Failed(e));
                }
            }
        }
        // Finished and abandoned ones leave.
        let keep: Vec<bool> = rows.iter().map(|r| !r.finished && !r.cancelled()).collect();
        let changed = !joined.is_empty() || keep.contains(&false);
        if changed {
            match regroup(&manifest, &mut rows, &keep, cache.take(), &mut joined) {
                Ok(c) => cache = c,
                Err(e) => {
                    let err = api_error(e);
                    let joined = joined.drain(..).map(|(seq, _)| seq);
                    for r in rows.drain(..).chain(joined) {
                        let _ = r.events.send(Event::Failed(err.clone()));
                    }
                }
            }
        }
        if rows.is_empty() {
            continue;
        }
        let batch_cache = cache.as_mut().expect("rows have a cache");
        if let Err(e) = step(gen.model(), &mut rows, batch_cache) {
            let err = api_error(e);
            for r in rows.drain(..) {
                let _ = r.events.send(Event::Failed(err.clone()));
            }
            cache = None;
        }
    }
}

/// Encodes and checks `job`, prefills it alone and samples its first token: the new sequence and its batch-1
/// cache, or `None` when the reply ended at once (or the client left).
fn start<'t, M: Engine>(
    gen: &mut Served<M>,
    tokenizer: &'t Tokenizer,
    job: Job,
    limits: Limits,
) -> Result<Option<(Sequence<'t>, KvCache)>, ApiError> {
    let r = job.request;
    let prompt = gen.encode(&r.prompt).map_err(api_error)?;
    let ids = &prompt.ids;
    let model = gen.model();
    let ctx = limits.ctx.min(model.text().max_positions);
    let max_new = reply_budget(ids.len(), r.max_tokens, ctx)?;
    let decoder = model.decoder();
    check_prompt(ids, 0, max_new, ctx, decoder.vocab_size()).map_err(api_error)?;
    let mut sampler = Sampler::new(r.sampling.clone()).map_err(api_error)?;
    // Sized for the whole run, as `gemma generate` sizes it.
    let mut cache = decoder
        .new_cache_with_capacity(1, ids.len() + max_new)
        .map_err(api_error)?;
    let first = model
        .prefill(&prompt, &mut cache, &mut sampler)
        .map_err(api_error)?;
    let _ = job.events.send(Event::Started {
        prompt_tokens: ids.len(),
    });
    let mut seq = Sequence::new(
        job.events,
        sampler,
        tokenizer.stream(true),
        prompt.stop_ids.clone(),
        r.stop,
        max_new,
        ids.len(),
    );
    seq.accept(first).map_err(api_error)?;
    Ok((!seq.finished && !seq.cancelled()).then_some((seq, cache)))
}

/// The sequences to decode next: the kept `rows` (rows of `old`) and the `joined` ones (each with its cache), their
/// KV rows gathered into one cache. A lone joined sequence keeps its own cache.
fn regroup<'t>(
    manifest: &Manifest,
    rows: &mut Vec<Sequence<'t>>,
    keep: &[bool],
    old: Option<KvCache>,
    joined: &mut Vec<(Sequence<'t>, KvCache)>,
) -> Result<Option<KvCache>> {
    let kept = keep.iter().filter(|&&k| k).count();
    if kept == 0 && joined.len() == 1 {
        rows.clear();
        let (seq, cache) = joined.pop().expect("one");
        rows.push(seq);
        return Ok(Some(cache));
    }
    let mut sources = Vec::new();
    if let Some(old) = &old {
        for (b, r) in rows.iter().enumerate().filter(|(b, _)| keep[*b]) {
            sources.push(RowSource {
                cache: old,
                row: b,
                len: r.len,
            });
        }
    }
    for (seq, c) in joined.iter() {
        sources.push(RowSource {
            cache: c,
            row: 0,
            len: seq.len,
        });
    }
    let new = if sources.is_empty() {
        None
    } else {
        // Room for the longest row plus a step's growth; global layers double when they fill up.
        let t = sources.iter().map(|s| s.len).max().unwrap_or(0);
        Some(KvCache::gather(manifest, &sources, t + 64)?)
    };
    let mut b = 0;
    rows.retain(|_| {
        b += 1;
        keep[b - 1]
    });
    rows.extend(joined.drain(..).map(|(seq, _)| seq));
    Ok(new)
}

/// One decode step on every row: feeds each row's last token at its own position, samples the next.
fn step<M: Engine>(model: &mut M, rows: &mut [Sequence<'_>], cache: &mut KvCache) -> Result<()> {
    let t = cache.len();
    let n = rows.len();
    let next: Vec<u32> = rows.iter().map(|r| r.next).collect();
    let tokens = model.step_tokens(&next)?;
    let mask = Array2::from_shape_fn((n, t + 1), |(b, j)| i64::from(j + rows[b].len >= t));
    let first = model.first_position();
    let pos = Array2::from_shape_fn((n, 1), |(b, _)| rows[b].len as i64 + first);
    let step = Step {
        tokens: tokens.view(),
        attention_mask: mask.view(),
        position_ids: pos.view(),
        logits: LogitsMode::Last,
    };
    let tokens = model.decoder().run(&step, cache, |logits| {
        rows.iter_mut()
            .enumerate()
            .map(|(b, r)| {
                let row = logits.slice(s![b, 0, ..]);
                match row.to_slice() {
                    Some(row) => r.sampler.sample(row),
                    None => r.sampler.sample(&row.to_vec()),
                }
            })
            .collect::<Vec<u32>>()
    })?;
    for (r, token) in rows.iter_mut().zip(tokens) {
        r.len += 1;
        if !r.cancelled() {
            r.accept(token)?;
        }
    }
    Ok(())
}
