//! `gemma chat` in the terminal: one line per user turn, replies streamed, the KV cache kept between turns by
//! [`Conversation`]. On a multimodal export `/image PATH` attaches an image to the next message (`--image` to the
//! first one); on a Gemma 3n export `/image PATH` and `/audio PATH` attach an image or a WAV clip (`--image`,
//! `--audio` to the first one), rendered in the order attached.
//!
//! Plain stdin lines rather than a line-editor crate: it works the same in a terminal, in a pipe and in tests, and
//! the terminal's own line editing (backspace, Ctrl-U, Ctrl-W) is there. Ctrl-C during a reply sets the
//! conversation's stop flag (the reply ends after the current token and is kept in the conversation); at the prompt
//! it only reminds how to leave; Ctrl-D (end of input) or `/quit` leaves.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use gemma_runtime::vision::ImageReport;
use gemma_runtime::{ChatModel, Conversation, StopReason, TurnReport};

#[allow(unused_imports)]
use crate::cli::{errln, errout, out, outln};

/// Runs the conversation until end of input or `/quit`.
pub fn run<M: ChatModel>(
    conversation: &mut Conversation<M>,
    dir: &Path,
    verbose: bool,
    stop: &AtomicBool,
    replying: &AtomicBool,
) -> Result<()> {
    note_folded(conversation);
    let tty = std::io::stdin().is_terminal();
    if tty {
        let images = if M::SEES_IMAGES && M::HEARS_AUDIO {
            " (attachments: /image PATH and /audio PATH attach an image or a WAV clip to your next message)"
        } else if M::SEES_IMAGES {
            " (images: /image PATH attaches one to your next message)"
        } else if M::HEARS_AUDIO {
            " (audio: /audio PATH attaches a WAV clip to your next message)"
        } else {
            ""
        };
        errln!(
            "Chatting with {}{images}. Ctrl-C stops a reply, Ctrl-D or /quit leaves, /reset starts over.",
            dir.display()
        );
    }
    let mut line = String::new();
    loop {
        let text = match read_input(tty, &mut line)? {
            Input::Quit => return Ok(()),
            Input::Reset => {
                conversation.reset()?;
                if M::SEES_IMAGES || M::HEARS_AUDIO {
                    errln!("(conversation and attachments cleared)");
                } else {
                    errln!("(conversation cleared)");
                }
                continue;
            }
            Input::Text(text) => text,
        };
        if let Some(path) = text
            .trim()
            .strip_prefix("/image")
            .filter(|_| M::SEES_IMAGES || M::HEARS_AUDIO)
        {
            let path = path.trim();
            if path.is_empty() {
                errln!("usage: /image PATH (the image goes with your next message)");
                continue;
            }
            match conversation.add_image(path.as_ref()) {
                Ok(report) => note_image(&report, conversation.pending_images()),
                Err(e) => errln!("error: {e:#}"),
            }
            continue;
        }
        if let Some(path) = text
            .trim()
            .strip_prefix("/audio")
            .filter(|_| M::HEARS_AUDIO)
        {
            let path = path.trim();
            if path.is_empty() {
                errln!("usage: /audio PATH (the WAV clip goes with your next message)");
                continue;
            }
            match conversation.add_audio(path.as_ref()) {
                Ok(()) => note_audio(path.as_ref(), conversation),
                Err(e) => errln!("error: {e:#}"),
            }
            continue;
        }
        let result = stream_reply(stop, replying, |on_text| conversation.send(text, on_text));
        match result {
            Ok(report) => {
                if report.output.stop_reason == StopReason::Interrupted {
                    errln!("[stopped]");
                }
                note_dropped(&report);
                if verbose {
                    print_verbose(&report);
                }
            }
            // The turn is undone (its images stay attached); the conversation goes on.
            Err(e) => errln!("error: {e:#}"),
        }
    }
}

/// One reply of the conversation: `send` gets a sink that streams its text to stdout. While it runs, `replying`
/// is raised (Ctrl-C then stops the reply through `stop` instead of leaving); the line is ended afterwards.
fn stream_reply<R>(
    stop: &AtomicBool,
    replying: &AtomicBool,
    send: impl FnOnce(&mut dyn FnMut(&str)) -> R,
) -> R {
    let mut stdout = std::io::stdout();
    stop.store(false, Ordering::SeqCst);
    replying.store(true, Ordering::SeqCst);
    let result = send(&mut |delta: &str| {
        crate::cli::check_output(
            stdout
                .write_all(delta.as_bytes())
                .and_then(|_| stdout.flush()),
        );
    });
    replying.store(false, Ordering::SeqCst);
    outln!();
    result
}

/// One line typed at the chat prompt.
enum Input<'a> {
    /// Ctrl-D (end of input), `/quit` or `/exit`.
    Quit,
    /// `/reset`.
    Reset,
    /// Anything else that is not blank (`/image` is the caller's), without its line ending.
    Text(&'a str),
}

/// Shows the `> ` prompt on a terminal and reads the next non-blank line into `line`.
fn read_input(tty: bool, line: &mut String) -> Result<Input<'_>> {
    let stdin = std::io::stdin();
    loop {
        if tty {
            out!("> ");
            std::io::stdout().flush()?;
        }
        line.clear();
        if stdin.lock().read_line(line)? == 0 {
            if tty {
                outln!();
            }
            return Ok(Input::Quit);
        }
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => return Ok(Input::Quit),
            "/reset" => return Ok(Input::Reset),
            _ => return Ok(Input::Text(line.trim_end_matches(['\n', '\r']))),
        }
    }
}

pub fn note_folded(conversation: &Conversation<impl ChatModel>) {
    if conversation.system_folded() {
        errln!(
            "note: this model's chat template has no system role (it raises \"System role not supported\" or \
             similar); the system prompt goes at the start of the first user message instead"
        );
    }
}

pub fn note_image(r: &ImageReport, pending: usize) {
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

/// The clip just attached (the last pending one).
pub fn note_audio<M: ChatModel>(path: &Path, conversation: &Conversation<M>) {
    let pending = conversation.pending_images();
    errln!(
        "(clip {} attached; {pending} attachment(s) waiting for your next message)",
        path.display()
    );
}

pub fn note_dropped(report: &TurnReport) {
    if report.dropped_messages > 0 {
        errln!(
            "note: the conversation no longer fit in the context with room for the reply; dropped the {} oldest \
             message(s)",
            report.dropped_messages
        );
    }
}

pub fn print_verbose(report: &TurnReport) {
    for line in &report.debug {
        errln!("[debug] {line}");
    }
    let o = &report.output;
    let why = crate::cli::stop_words(o.stop_reason, "end of turn");
    errln!(
        "[{} cached tokens reused, {} prefilled at {:.1} tok/s | {} generated at {:.1} tok/s | stop: {why}]",
        report.reused_tokens,
        report.prefilled_tokens,
        o.prefill_tokens_per_s,
        o.token_ids.len(),
        o.decode_tokens_per_s
    );
}
