//! `gemma chat`: its arguments, and the choice between the conversation in the terminal ([`chat_repl`](super::chat_repl),
//! one line per user turn, with images on a multimodal export) and `--messages FILE.json` (one reply to a given
//! conversation). Both run on [`Conversation`], which keeps the KV cache between turns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{ArgMatches, Args};
use gemma_runtime::attachments::{AttachmentKind, Gemma3nGenerator};
use gemma_runtime::{
    ChatOptions, Conversation, GenerateOptions, Generator, Message, VisionGenerator,
};

use super::attachments;
use super::chat_repl::{self, note_dropped, note_folded, print_verbose};
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

  # Gemma 3n: show it images and let it hear clips (--image, --audio, or /image PATH and /audio PATH during
  # the conversation); a turn's attachments come before its text, in the order given
  gemma chat -m gemma-3n-e2b-it-onnx --audio question.wav
  > Answer the question in this clip.
  gemma chat -m gemma-3n-e2b-it-onnx --image photo.jpg --audio question.wav
  > Answer the question about this picture.
  > /image other.png
  > And this one?

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
    /// Show the model this image with your first message (repeatable; Gemma 3 multimodal exports, Gemma 3n exports
    /// with a vision tower; with --audio, in the order given). In the conversation, `/image PATH` attaches an image
    /// to your next message
    #[arg(long = "image", value_name = "PATH", conflicts_with = "messages")]
    images: Vec<PathBuf>,
    /// Let the model hear this WAV clip with your first message (repeatable; Gemma 3n exports with an audio tower;
    /// with --image, in the order given).
    /// In the conversation, `/audio PATH` attaches a clip to your next message. Mono 16 kHz 16-bit PCM or float
    /// WAV is used as it is; stereo is averaged and other rates resampled (rubato), which then differs slightly from
    /// a Python pipeline
    #[arg(long = "audio", value_name = "PATH", conflicts_with = "messages")]
    audio: Vec<PathBuf>,
    /// With images: Pan & Scan, up to 4 extra crops of a long image so that details survive the resize (Gemma 3
    /// only)
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

/// `matches`: those of `chat`, for the order of its `--image` and `--audio` values.
pub fn run(args: ChatArgs, matches: Option<&ArgMatches>) -> Result<()> {
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
        pan_and_scan: args.pan_and_scan,
    };
    let runtime = args.model.runtime_options();
    let open_error = || format!("opening {}", dir.display());
    // A Gemma 3n export chats through its image and audio graphs, so that `/image PATH` and `/audio PATH` work at
    // any turn. Every attachment is checked before any file is read; `--image` and `--audio` go with the first
    // message in the order given, as `gemma generate` renders them.
    let manifest = gemma_runtime::manifest::load(dir).with_context(open_error)?;
    if file_messages.is_none() && manifest.gemma3n.is_some() {
        if args.pan_and_scan {
            bail!(
                "--pan-and-scan: the model in {} is a Gemma 3n export, whose processor has no Pan & Scan",
                dir.display()
            );
        }
        let generator = Gemma3nGenerator::open(dir, &runtime).with_context(open_error)?;
        let attached = attachments::in_order(&args.images, &args.audio, matches);
        for a in &attached {
            generator.check(a).context(attachments::flag(a.kind))?;
        }
        let mut conversation = Conversation::new(generator, options)?;
        for a in &attached {
            match a.kind {
                AttachmentKind::Image => {
                    let report = conversation.add_image(&a.path).context("--image")?;
                    chat_repl::note_image(&report, conversation.pending_images());
                }
                AttachmentKind::Audio => {
                    conversation.add_audio(&a.path).context("--audio")?;
                    chat_repl::note_audio(&a.path, &conversation);
                }
            }
        }
        return chat_repl::run(&mut conversation, dir, args.verbose, &stop, &replying);
    }
    if let Some(path) = args.audio.first() {
        bail!(
            "--audio: {}: the model in {} takes no audio: only Gemma 3n exports of checkpoints with an audio tower do",
            path.display(),
            dir.display()
        );
    }
    // A multimodal export chats through its image graphs, so that `/image PATH` works at any turn.
    if file_messages.is_none()
        && (!args.images.is_empty()
            || gemma_runtime::vision::export_has_vision(dir).unwrap_or(false))
    {
        let generator = VisionGenerator::open(dir, &runtime).with_context(open_error)?;
        let mut conversation = Conversation::new(generator, options)?;
        for path in &args.images {
            let report = conversation.add_image(path)?;
            chat_repl::note_image(&report, conversation.pending_images());
        }
        return chat_repl::run(&mut conversation, dir, args.verbose, &stop, &replying);
    }
    let generator = Generator::open(dir, &runtime).with_context(open_error)?;
    let mut conversation = Conversation::new(generator, options)?;
    match file_messages {
        Some(messages) => {
            conversation.set_messages(&messages)?;
            note_folded(&conversation);
            replying.store(true, Ordering::SeqCst);
            reply_once(&mut conversation, &args)
        }
        None => chat_repl::run(&mut conversation, dir, args.verbose, &stop, &replying),
    }
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

/// `--messages`: one reply, streamed (or one JSON object).
fn reply_once(conversation: &mut Conversation, args: &ChatArgs) -> Result<()> {
    let json = args.json;
    let mut out = std::io::stdout();
    let report = conversation.respond(|delta| {
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
            "system_folded": conversation.system_folded(),
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
