//! `gemma chat` on a Gemma 3 multimodal export: the same terminal conversation as `chat.rs`, with images —
//! `--image PATH` attaches images to the first message, `/image PATH` inside the conversation to the next one.
//! Runs on [`VisionChat`] (the image graphs and `decoder_model_merged.onnx`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};

use super::chat::Input;
#[allow(unused_imports)]
use crate::cli::errln;
use gemma_runtime::vision::{ImageReport, VisionChat};
use gemma_runtime::{ChatOptions, RuntimeOptions, StopReason, VisionGenerator};

/// What `chat.rs` hands over.
pub struct Setup {
    pub dir: PathBuf,
    pub runtime: RuntimeOptions,
    pub options: ChatOptions,
    /// `--image`: attached to the first message.
    pub images: Vec<PathBuf>,
    pub pan_and_scan: bool,
    pub verbose: bool,
}

/// Opens the export and runs the conversation until end of input or `/quit`.
pub fn run(setup: Setup, stop: &AtomicBool, replying: &AtomicBool) -> Result<()> {
    let generator = VisionGenerator::open(&setup.dir, &setup.runtime)
        .with_context(|| format!("opening {}", setup.dir.display()))?;
    let mut chat = VisionChat::new(generator, setup.options, setup.pan_and_scan)?;
    for path in &setup.images {
        let report = chat.add_image(path)?;
        note_image(&report, chat.pending_images());
    }
    let tty = std::io::stdin().is_terminal();
    if tty {
        errln!(
            "Chatting with {} (images: /image PATH attaches one to your next message). Ctrl-C stops a reply, \
             Ctrl-D or /quit leaves, /reset starts over.",
            setup.dir.display()
        );
    }
    let mut line = String::new();
    loop {
        let text = match super::chat::read_input(tty, &mut line)? {
            Input::Quit => return Ok(()),
            Input::Reset => {
                chat.reset()?;
                errln!("(conversation and images cleared)");
                continue;
            }
            Input::Text(text) => text,
        };
        match text.trim() {
            command if command.starts_with("/image") => {
                let path = command["/image".len()..].trim();
                if path.is_empty() {
                    errln!("usage: /image PATH (the image goes with your next message)");
                    continue;
                }
                match chat.add_image(path.as_ref()) {
                    Ok(report) => note_image(&report, chat.pending_images()),
                    Err(e) => errln!("error: {e:#}"),
                }
                continue;
            }
            _ => {}
        }
        let result = super::chat::stream_reply(stop, replying, |on_text| chat.send(text, on_text));
        match result {
            Ok(report) => {
                if report.output.stop_reason == StopReason::Interrupted {
                    errln!("[stopped]");
                }
                if setup.verbose {
                    for line in &report.debug {
                        errln!("[debug] {line}");
                    }
                    let o = &report.output;
                    errln!(
                        "[{} cached tokens reused, {} prefilled at {:.1} tok/s | {} generated at {:.1} tok/s]",
                        report.reused_tokens,
                        report.prefilled_tokens,
                        o.prefill_tokens_per_s,
                        o.token_ids.len(),
                        o.decode_tokens_per_s
                    );
                }
            }
            // The turn is undone (its images stay attached); the conversation goes on.
            Err(e) => errln!("error: {e:#}"),
        }
    }
}

fn note_image(r: &ImageReport, pending: usize) {
    let crops = if r.num_crops > 0 {
        format!(", {} Pan & Scan crops", r.num_crops)
    } else {
        String::new()
    };
    errln!(
        "(image {} attached: {}×{}{crops}, encoded in {:.2} s; {pending} waiting for your next message)",
        r.path.display(),
        r.width,
        r.height,
        r.preprocess_seconds + r.encode_seconds
    );
}
