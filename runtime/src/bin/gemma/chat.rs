//! `gemma chat`: a conversation in the terminal (one line per user turn, replies streamed, the KV cache kept between
//! turns by [`ChatSession`]), or with `--messages FILE.json` one reply to a given conversation.
//!
//! Plain stdin lines rather than a line-editor crate: it works the same in a terminal, in a pipe and in tests, and
//! the terminal's own line editing (backspace, Ctrl-U, Ctrl-W) is there. Ctrl-C during a reply sets the session's
//! stop flag (the reply ends after the current token and is kept in the conversation); at the prompt it only
//! reminds how to leave; Ctrl-D (end of input) or `/quit` leaves.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use gemma_runtime::{
    ChatOptions, ChatSession, GenerateOptions, Generator, Message, StopReason, TurnReport,
};

use super::cli::{ModelArgs, SamplingArgs};
#[allow(unused_imports)]
use crate::cli::{errln, errout, out, outln};

pub const CHAT_EXAMPLES: &str = "\
Examples:
  # Talk in the terminal; Ctrl-C stops a reply, Ctrl-D or /quit leaves, /reset starts over
  gemma chat -m gemma-3-270m-onnx
  gemma chat -m gemma-2-2b-it-onnx --system \"Answer in one sentence.\" --temperature 0.7 --seed 1

  # Gemma 3 4B and up: show it images (--image, or /image PATH during the conversation)
  gemma chat -m gemma-3-4b-it-onnx --image photo.jpg
  > What is in this picture?
  > /image other.png
  > And how does this one differ?

  # One reply to a conversation in a file, as text or as JSON
  echo '[{\"role\": \"user\", \"content\": \"Name three rivers.\"}]' > conv.json
  gemma chat -m gemma-3-270m-onnx --messages conv.json
  gemma chat -m gemma-3-270m-onnx --messages conv.json --json | jq -r .text

Each turn renders the model's own chat template over the whole conversation and prefills only \
the tokens that are new since the last turn (-v shows how many). A reply ends at <end_of_turn> \
(looked up in tokenizer.json), at an eos_token_id of gemma-onnx.json or generation_config.json, \
or after --max-new-tokens. When the conversation plus --max-new-tokens would not fit in \
--max-context (default: the model's positions), the oldest exchanges are dropped, with a note.

Gemma 1 and 2 chat templates have no system role: --system (or a leading system message) then \
starts the first user message, followed by a blank line, as Gemma 3's template does it, with a \
note; --no-fold-system makes it an error instead.

--messages FILE.json is a list of {\"role\": \"system\" | \"user\" | \"assistant\", \"content\": TEXT}; \
only the first message may be the system one, and the last must be the user's.";

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// System prompt (for templates without a system role it starts the first user message)
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Fail, instead of folding the system prompt into the first user message, when the template has no system role
    #[arg(long = "no-fold-system")]
    no_fold_system: bool,
    /// Answer the conversation in this JSON file (list of {role, content}) and exit
    #[arg(long, value_name = "FILE.json")]
    messages: Option<PathBuf>,
    /// Show the model this image with your first message (repeatable; Gemma 3 multimodal exports). In the
    /// conversation, `/image PATH` attaches an image to your next message
    #[arg(long = "image", value_name = "PATH", conflicts_with = "messages")]
    images: Vec<PathBuf>,
    /// With images: Pan & Scan, up to 4 extra crops of a long image so that details survive the resize
    #[arg(long = "pan-and-scan")]
    pan_and_scan: bool,
    /// Most tokens per reply (also kept free in the context before each turn)
    #[arg(
        short = 'n',
        long = "max-new-tokens",
        value_name = "MAX_NEW",
        default_value_t = 512
    )]
    max_new_tokens: usize,
    /// Most positions the conversation may use; older turns are dropped beyond it [default: the model's maximum]
    #[arg(long = "max-context", value_name = "N")]
    max_context: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// With --messages: print one JSON object (text, token_ids, prompt_tokens, ...) instead of the reply
    #[arg(long, requires = "messages")]
    json: bool,
    /// Print how each turn used the KV cache (cached tokens reused, new tokens prefilled) and its speed
    #[arg(short = 'v', long)]
    verbose: bool,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let sampling = args.sampling.config()?;
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1 for a chat reply");
    }
    let file_messages = match &args.messages {
        Some(path) => Some(read_messages(path)?),
        None => None,
    };
    if args.system.is_some()
        && file_messages
            .as_ref()
            .is_some_and(|m| m[0].role == "system")
    {
        bail!("both --system and a system message in the --messages file: give the system prompt once");
    }

    // Ctrl-C: during a reply, stop it (twice: quit at once); at the prompt, a reminder of how to leave.
    let stop = Arc::new(AtomicBool::new(false));
    let replying = Arc::new(AtomicBool::new(false));
    {
        let (stop, replying) = (stop.clone(), replying.clone());
        let interactive = file_messages.is_none();
        let _ = ctrlc::set_handler(move || {
            if replying.load(Ordering::SeqCst) {
                if stop.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
            } else if interactive {
                errout!("\n(Ctrl-D or /quit leaves)\n> ");
            } else {
                std::process::exit(130);
            }
        });
    }

    let dir = &args.model.model;
    let options = ChatOptions {
        generate: GenerateOptions {
            max_new_tokens: args.max_new_tokens,
            sampling,
            stop: Some(stop.clone()),
        },
        system: args.system.clone(),
        fold_system: !args.no_fold_system,
        max_context: args.max_context,
    };
    // A multimodal export chats through its image graphs, so that `/image PATH` works at any turn.
    if file_messages.is_none()
        && (!args.images.is_empty()
            || gemma_runtime::vision::export_has_vision(dir).unwrap_or(false))
    {
        let setup = super::vision_chat::Setup {
            dir: dir.clone(),
            runtime: args.model.runtime_options(),
            options,
            images: args.images.clone(),
            pan_and_scan: args.pan_and_scan,
            verbose: args.verbose,
        };
        return super::vision_chat::run(setup, &stop, &replying);
    }
    let generator = Generator::open(dir, &args.model.runtime_options())
        .with_context(|| format!("opening {}", dir.display()))?;
    let mut session = ChatSession::new(generator, options)?;
    if let Some(messages) = file_messages {
        session.set_messages(&messages)?;
        note_folded(&session);
        replying.store(true, Ordering::SeqCst);
        return reply_once(&mut session, &args);
    }
    note_folded(&session);
    interactive(&mut session, &args, &stop, &replying)
}

/// A list of `{role, content}` objects with string content.
fn read_messages(path: &Path) -> Result<Vec<Message>> {
    let text = crate::cli::read_file_capped(path)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let items = value.as_array().with_context(|| {
        format!(
            "{}: expected a list of {{\"role\", \"content\"}} objects",
            path.display()
        )
    })?;
    if items.is_empty() {
        bail!("{}: the conversation is empty", path.display());
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |key: &str| -> Result<String> {
            match item.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => bail!(
                    "{}: message {i}: `{key}` must be a string (chat is text-only)",
                    path.display()
                ),
                None => bail!("{}: message {i} has no `{key}`", path.display()),
            }
        };
        messages.push(Message::new(field("role")?, field("content")?));
    }
    Ok(messages)
}

fn note_folded(session: &ChatSession) {
    if session.system_folded() {
        errln!(
            "note: this model's chat template has no system role (it raises \"System role not supported\" or \
             similar); the system prompt goes at the start of the first user message instead"
        );
    }
}

/// `--messages`: one reply, streamed (or one JSON object).
fn reply_once(session: &mut ChatSession, args: &ChatArgs) -> Result<()> {
    let json = args.json;
    let mut out = std::io::stdout();
    let report = session.respond(|delta| {
        if !json {
            crate::cli::check_output(out.write_all(delta.as_bytes()).and_then(|_| out.flush()));
        }
    })?;
    note_dropped(&report);
    if json {
        let o = &report.output;
        let obj = serde_json::json!({
            "text": o.text,
            "token_ids": o.token_ids,
            "prompt_tokens": o.prompt_tokens,
            "generated_tokens": o.token_ids.len(),
            "stop_reason": o.stop_reason,
            "prefill_tokens_per_s": o.prefill_tokens_per_s,
            "decode_tokens_per_s": o.decode_tokens_per_s,
            "system_folded": session.system_folded(),
            "dropped_messages": report.dropped_messages,
        });
        outln!("{obj}");
    } else {
        outln!();
        if args.verbose {
            print_verbose(&report);
        }
    }
    Ok(())
}

fn interactive(
    session: &mut ChatSession,
    args: &ChatArgs,
    stop: &AtomicBool,
    replying: &AtomicBool,
) -> Result<()> {
    let tty = std::io::stdin().is_terminal();
    if tty {
        errln!(
            "Chatting with {}. Ctrl-C stops a reply, Ctrl-D or /quit leaves, /reset starts over.",
            args.model.model.display()
        );
    }
    let mut line = String::new();
    loop {
        let text = match read_input(tty, &mut line)? {
            Input::Quit => return Ok(()),
            Input::Reset => {
                session.reset()?;
                errln!("(conversation cleared)");
                continue;
            }
            Input::Text(text) => text,
        };
        let result = stream_reply(stop, replying, |on_text| session.send(text, on_text));
        match result {
            Ok(report) => {
                if report.output.stop_reason == StopReason::Interrupted {
                    errln!("[stopped]");
                }
                note_dropped(&report);
                if args.verbose {
                    print_verbose(&report);
                }
            }
            // The turn is undone; the conversation goes on.
            Err(e) => errln!("error: {e:#}"),
        }
    }
}

/// One reply of the conversation: `send` gets a sink that streams its text to stdout. While it runs, `replying`
/// is raised (Ctrl-C then stops the reply through `stop` instead of leaving); the line is ended afterwards.
pub fn stream_reply<R>(
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
pub enum Input<'a> {
    /// Ctrl-D (end of input), `/quit` or `/exit`.
    Quit,
    /// `/reset`.
    Reset,
    /// Anything else that is not blank (other `/` commands are the caller's), without its line ending.
    Text(&'a str),
}

/// Shows the `> ` prompt on a terminal and reads the next non-blank line into `line`.
pub fn read_input(tty: bool, line: &mut String) -> Result<Input<'_>> {
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

fn note_dropped(report: &TurnReport) {
    if report.dropped_messages > 0 {
        errln!(
            "note: the conversation no longer fit in the context with room for the reply; dropped the {} oldest \
             message(s)",
            report.dropped_messages
        );
    }
}

fn print_verbose(report: &TurnReport) {
    for line in &report.debug {
        errln!("[debug] {line}");
    }
    let o = &report.output;
    let why = match o.stop_reason {
        StopReason::Eos => "end of turn",
        StopReason::MaxNewTokens => "max new tokens",
        StopReason::Interrupted => "interrupted",
    };
    errln!(
        "[{} cached tokens reused, {} prefilled at {:.1} tok/s | {} generated at {:.1} tok/s | stop: {why}]",
        report.reused_tokens,
        report.prefilled_tokens,
        o.prefill_tokens_per_s,
        o.token_ids.len(),
        o.decode_tokens_per_s
    );
}
