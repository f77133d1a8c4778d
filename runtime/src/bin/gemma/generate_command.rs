//! `gemma generate`: a prompt (plain, `--chat`, fill-in-the-middle, or with `--image`/`--audio` attachments) in, the
//! generated text streamed to stdout (or one JSON object) out.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{ArgMatches, Args};
use gemma_runtime::{GenerateOptions, GenerationOutput, Generator, Message};

use super::attachments;
use super::cli::{self, ModelArgs, SamplingArgs};
#[allow(unused_imports)]
use crate::cli::{errln, errout, out, outln};

pub const GENERATE_EXAMPLES: &str = "\
Examples:
  gemma generate -m gemma-3-270m-onnx -p \"Once upon a time\"
  gemma generate -m gemma-3-270m-onnx --chat -p \"What is 2+2?\" -n 64
  gemma generate -m gemma-3-270m-onnx -p \"Once upon a time\" --temperature 0.8 --top-p 0.9 --seed 1
  echo \"Summarise: ...\" | gemma generate -m gemma-3-270m-onnx --chat -p -
  gemma generate -m gemma-3-270m-onnx -p \"Hi\" --json | jq .decode_tokens_per_s

  # Gemma 3n: a question about a clip; Gemma 3 4B and up: about an image (one user turn of the chat template)
  gemma generate -m gemma-3n-e2b-it-onnx --audio speech.wav -p \"Transcribe this clip.\"
  gemma generate -m gemma-3-4b-it-onnx --image photo.jpg -p \"What is in this picture?\" --json

  # CodeGemma fill-in-the-middle: the code before and after the cursor; prints the middle
  gemma generate -m codegemma-2b-onnx \\
      --fim-prefix $'def add(a, b):\\n    ' --fim-suffix $'\\n\\nprint(add(1, 2))'
  gemma generate -m codegemma-2b-onnx -n 64 \\
      --fim-prefix \"$(cat before.py)\" --fim-suffix \"$(cat after.py)\"

Stops at an end-of-sequence token (gemma-onnx.json's eos_token_ids and generation_config.json's \
eos_token_id) or after --max-new-tokens; with --chat also at the tokenizer's <end_of_turn>, with \
--fim-* also at <|file_separator|> (and the other FIM tokens); --ignore-eos stops only after \
--max-new-tokens. The FIM prompt is \
<bos><|fim_prefix|>PREFIX<|fim_suffix|>SUFFIX<|fim_middle|>, the ids of those tokens looked up in \
tokenizer.json (if it lacks them, an error names them: only CodeGemma's tokenizer has them). \
Ctrl-C stops generation early and still prints the statistics. \
Statistics go to stderr (stdout has only the generated text), or into the object with --json.";

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt ("-" reads it from stdin)
    #[arg(
        short = 'p',
        long,
        value_name = "PROMPT",
        required_unless_present_any = ["fim_prefix", "fim_suffix"]
    )]
    prompt: Option<String>,
    #[arg(long = "image", value_name = "FILE", help = attachments::IMAGE_HELP,
          conflicts_with_all = ["fim_prefix", "fim_suffix"])]
    images: Vec<PathBuf>,
    #[arg(long = "audio", value_name = "FILE", help = attachments::AUDIO_HELP,
          conflicts_with_all = ["fim_prefix", "fim_suffix"])]
    audio: Vec<PathBuf>,
    /// CodeGemma fill-in-the-middle: the code before the cursor (the model writes what goes between)
    #[arg(long = "fim-prefix", value_name = "TEXT", conflicts_with_all = ["prompt", "chat"])]
    fim_prefix: Option<String>,
    /// CodeGemma fill-in-the-middle: the code after the cursor
    #[arg(long = "fim-suffix", value_name = "TEXT", conflicts_with_all = ["prompt", "chat"])]
    fim_suffix: Option<String>,
    /// Most tokens to generate
    #[arg(
        short = 'n',
        long = "max-new-tokens",
        value_name = "MAX_NEW",
        default_value_t = 128
    )]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Wrap the prompt as one user message in the model's chat template
    #[arg(long)]
    chat: bool,
    /// Print one JSON object at the end (text, token_ids, prompt_tokens, prefill_tokens_per_s,
    /// decode_tokens_per_s) instead of streaming
    #[arg(long)]
    json: bool,
    /// Do not stop at end-of-sequence (or end-of-turn, FIM) tokens: always generate --max-new-tokens tokens
    /// (soak and memory tests, benchmarks of long outputs)
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
}

pub fn run(args: GenerateArgs, matches: Option<&ArgMatches>) -> Result<()> {
    let prompt = match args.prompt.as_deref() {
        Some(p) => cli::read_prompt(p)?,
        None => String::new(),
    };
    let sampling = args.sampling.config()?;
    let stop = cli::stop_on_ctrl_c();
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        stop: Some(stop),
    };
    let attached = attachments::in_order(&args.images, &args.audio, matches);
    let mut text_out = cli::TextOut::new(args.json);
    let out = if attached.is_empty() {
        generate_text(&args, &prompt, &options, |delta| text_out.write(delta))?
    } else {
        attachments::generate(
            &args.model,
            &prompt,
            &attached,
            args.ignore_eos,
            &options,
            |delta| text_out.write(delta),
        )?
    };
    if !text_out.finish()? {
        return Ok(());
    }

    if args.json {
        let obj = serde_json::json!({
            "text": out.text,
            "token_ids": out.token_ids,
            "prompt_tokens": out.prompt_tokens,
            "generated_tokens": out.token_ids.len(),
            "stop_reason": out.stop_reason,
            "prefill_tokens_per_s": out.prefill_tokens_per_s,
            "decode_tokens_per_s": out.decode_tokens_per_s,
        });
        outln!("{obj}");
    } else {
        outln!();
        let why = cli::stop_words(out.stop_reason, "end of sequence");
        errln!(
            "[{} prompt tokens, {:.1} tok/s prefill | {} generated, {:.1} tok/s decode | stop: {why}]",
            out.prompt_tokens,
            out.prefill_tokens_per_s,
            out.token_ids.len(),
            out.decode_tokens_per_s
        );
    }
    Ok(())
}

/// A text prompt (plain, `--chat` or fill-in-the-middle) on any export.
fn generate_text(
    args: &GenerateArgs,
    prompt: &str,
    options: &GenerateOptions,
    on_text: impl FnMut(&str),
) -> Result<GenerationOutput> {
    let mut generator = Generator::open(&args.model.model, &args.model.runtime_options())
        .with_context(|| format!("opening {}", args.model.model.display()))?;
    let fim = args.fim_prefix.is_some() || args.fim_suffix.is_some();
    let (prompt_ids, stop_ids) = if fim {
        generator.encode_fim(
            args.fim_prefix.as_deref().unwrap_or(""),
            args.fim_suffix.as_deref().unwrap_or(""),
        )?
    } else if args.chat {
        (
            generator.encode_chat(&[Message::user(prompt)])?,
            generator.chat_stop_token_ids(),
        )
    } else {
        (
            generator.encode_prompt(prompt)?,
            generator.stop_token_ids().to_vec(),
        )
    };

    let stop_ids = if args.ignore_eos {
        Vec::new()
    } else {
        stop_ids
    };
    Ok(generator.generate_from_ids_until(&prompt_ids, &stop_ids, options, on_text)?)
}
