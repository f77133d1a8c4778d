//! Requests on a multimodal export: one at a time, through the [`Conversation`] `gemma chat` uses (the chat
//! template's image items, each image encoded once, prefill that never cuts an image block). Images come as the
//! bytes of `data:` URIs and belong to the last user message.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use super::api::Prompt;
use super::reply::{ApiError, Finish};
use super::scheduler::{api_error, reply_budget, Job, Limits};
use super::sequence::{Event, StopText};
use crate::conversation::{ChatOptions, Conversation, Media};
use crate::error::Result;
use crate::generate::{GenerateOptions, GenerationOutput, StopReason};
use crate::vision::{decode_image, VisionGenerator, VisionOptions};

/// Answers every job of `jobs` in turn; returns when every sender is gone.
pub fn run_vision(gen: VisionGenerator, jobs: Receiver<Job>, limits: Limits) -> Result<()> {
    let ctx = limits.ctx.min(gen.manifest().max_position_embeddings);
    let mut conv = Conversation::new(gen, ChatOptions::default())?;
    for job in jobs {
        if job.events.is_closed() {
            continue;
        }
        let events = job.events.clone();
        match answer(&mut conv, job, ctx) {
            Ok((output, stopped_by_text)) => {
                let finish = match output.stop_reason {
                    StopReason::Eos => Finish::Stop,
                    StopReason::Interrupted if stopped_by_text => Finish::Stop,
                    _ => Finish::Length,
                };
                let _ = events.send(Event::Done {
                    finish,
                    prompt_tokens: output.prompt_tokens,
                    completion_tokens: output.token_ids.len(),
                });
            }
            Err(e) => {
                let _ = events.send(Event::Failed(e));
            }
        }
    }
    Ok(())
}

/// Runs one job; returns the output and whether a stop string ended it.
fn answer(
    conv: &mut Conversation<VisionGenerator>,
    job: Job,
    ctx: usize,
) -> Result<(GenerationOutput, bool), ApiError> {
    let r = job.request;
    let events = job.events;
    let max_new = match r.max_tokens {
        Some(n) => n,
        None => ctx / 2,
    };
    reply_budget(1, Some(max_new), ctx)?;
    let stop = Arc::new(AtomicBool::new(false));
    let generate = GenerateOptions {
        max_new_tokens: max_new,
        sampling: r.sampling.clone(),
        stop: Some(stop.clone()),
    };
    let mut stop_text = StopText::new(r.stop.clone());
    let mut stopped_by_text = false;
    let mut on_text = |delta: &str| {
        if stopped_by_text {
            return;
        }
        let (text, found) = stop_text.push(delta);
        if !text.is_empty() {
            let _ = events.send(Event::Text(text));
        }
        if found {
            stopped_by_text = true;
            stop.store(true, Ordering::Relaxed);
        }
        if events.is_closed() {
            stop.store(true, Ordering::Relaxed);
        }
    };
    let output = match &r.prompt {
        Prompt::Chat { messages, images } => {
            let (last, history) = messages.split_last().expect("validated: not empty");
            if last.role != "user" {
                return Err(ApiError::invalid(
                    "the last message must be the user's",
                    Some("messages"),
                ));
            }
            if images[..images.len() - 1].iter().any(|i| !i.is_empty()) {
                return Err(ApiError::invalid(
                    "images are taken in the last user message only",
                    Some("messages"),
                ));
            }
            conv.reset().map_err(api_error)?;
            conv.options_mut().system = None;
            conv.options_mut().generate = generate;
            conv.options_mut().max_context = Some(ctx);
            conv.set_messages(history).map_err(api_error)?;
            let limits = *conv.generator_mut().image_limits_mut();
            for bytes in &images[images.len() - 1] {
                let image =
                    decode_image(bytes, Path::new("image_url"), &limits).map_err(api_error)?;
                let encoded = conv
                    .generator_mut()
                    .encode_image(&image, false)
                    .map_err(api_error)?;
                conv.attach(Media::Image(encoded));
            }
            // The prompt's length is known once the conversation is rendered: `Done` carries it.
            let _ = events.send(Event::Started { prompt_tokens: 0 });
            let report = conv.send(&last.content, &mut on_text).map_err(api_error)?;
            report.output
        }
        Prompt::Raw(text) => {
            let model = conv.generator_mut();
            let ids = model.prompt_ids(text, &[], false).map_err(api_error)?;
            reply_budget(ids.len(), Some(max_new), ctx)?;
            let stops = model.stop_token_ids(false);
            let mut cache = model.new_cache().map_err(api_error)?;
            let options = VisionOptions {
                generate,
                ..Default::default()
            };
            let _ = events.send(Event::Started {
                prompt_tokens: ids.len(),
            });
            model
                .continue_generation(&mut cache, &ids, &[], &stops, &options, &mut on_text)
                .map_err(api_error)?
                .0
        }
    };
    let rest = stop_text.finish();
    if !rest.is_empty() && !stopped_by_text {
        let _ = events.send(Event::Text(rest));
    }
    Ok((output, stopped_by_text))
}
