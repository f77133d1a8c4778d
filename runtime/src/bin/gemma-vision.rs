//! `gemma-vision`: ask a Gemma 3 multimodal export (from `gemma-export` on a Gemma3ForConditionalGeneration
//! checkpoint) about images.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use gemma_runtime::vision::detections::{self, is_detect_prompt};
use gemma_runtime::vision::{DecodedImage, ImageLimits, VisionSection};
use gemma_runtime::{GenerateOptions, Manifest, VisionGenerator, VisionOptions};
use indicatif::{ProgressBar, ProgressStyle};

#[path = "gemma-vision/classify_command.rs"]
mod classify_command;
#[path = "shared/cli.rs"]
mod cli;
#[allow(unused_imports)]
use cli::{errln, outln};
use cli::{ModelArgs, SamplingArgs};

const ABOUT: &str = "Ask Gemma 3 vision models about images (exports of gemma-export)";

const LONG_ABOUT: &str = "\
Ask a Gemma 3 multimodal model (Gemma 3 4B/12B/27B, MedGemma 4B... exported by `gemma-export`, whose \
folder has vision_encoder.onnx, preprocess.onnx, embed_tokens.onnx and decoder_model_merged.onnx) about \
images, with ONNX Runtime. The whole image path is ONNX: preprocess.onnx resizes and normalizes (and crops, \
with Pan & Scan), vision_encoder.onnx turns each image into 256 soft tokens, and the decoder reads them in \
place of the prompt's <image_soft_token>s.

The ONNX Runtime library is found as for `gemma` ($ORT_DYLIB_PATH, else scripts/setup-ort's install).";

const DESCRIBE_EXAMPLES: &str = "\
Examples:
  # Export once, then describe a photo (greedy, streamed)
  gemma-export google/gemma-3-4b-it-local-dir -o gemma-3-4b-it-onnx
  gemma-vision describe photo.jpg -m gemma-3-4b-it-onnx

  # A question about two images in one prompt
  gemma-vision describe before.png after.png -m gemma-3-4b-it-onnx -p \"What changed between these two pictures?\"

  # A long panorama: Pan & Scan adds up to 4 crops so small details survive the 896×896 resize
  gemma-vision describe panorama.jpg -m gemma-3-4b-it-onnx --pan-and-scan -n 300

  # Your own prompt layout: one <start_of_image> per image, no chat template
  gemma-vision describe cat.webp -m gemma-3-4b-pt-onnx --raw -p \"<start_of_image> A photo of\"

  # Machine-readable: text, token ids, crop counts, time to first token
  gemma-vision describe photo.jpg -m gemma-3-4b-it-onnx --json | jq .time_to_first_token_s

Reads JPEG, PNG, WebP, GIF (first frame) and BMP; EXIF orientation is applied, transparency is \
composited on white, grey images become RGB. Images above 16384 px a side or 64 megapixels are \
refused from their header, before decoding. The prompt goes after the images in one user turn of \
the model's chat template (each image becomes <start_of_image>, then the processor's soft tokens). \
Stops at <end_of_turn>, an eos token or --max-new-tokens; Ctrl-C stops early. Statistics go to \
stderr (stdout has only the answer), or into the object with --json.";

#[derive(Parser)]
#[command(name = "gemma-vision", version, about = ABOUT, long_about = LONG_ABOUT, after_help = DESCRIBE_EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe images, or answer a question about them, streaming the answer to stdout
    #[command(after_help = DESCRIBE_EXAMPLES)]
    Describe(DescribeArgs),
    /// ShieldGemma 2: the probability that an image violates each safety policy
    #[command(after_help = classify_command::CLASSIFY_EXAMPLES)]
    Classify(classify_command::ClassifyArgs),
}

#[derive(Args)]
struct DescribeArgs {
    /// Image files (JPEG, PNG, WebP, GIF, BMP), in the order the prompt sees them
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// The question or instruction, after the images ("-" reads it from stdin); PaliGemma takes its task
    /// prompts ("caption en", "ocr", "answer en WHAT?", "detect cat ; dog")
    /// [default: "Describe this image.", for PaliGemma "caption en"]
    #[arg(short = 'p', long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Use the prompt as given instead of the chat template; it must hold one <start_of_image> per image
    #[arg(long)]
    raw: bool,
    /// Pan & Scan: also show the model up to 4 crops of a long image (each costs one more image's tokens)
    /// [default: the export's processor config, off for the released models]
    #[arg(long = "pan-and-scan")]
    pan_and_scan: bool,
    /// Most tokens to generate
    #[arg(
        short = 'n',
        long = "max-new-tokens",
        value_name = "MAX_NEW",
        default_value_t = 256
    )]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object at the end (text, token_ids, images with crop counts and timings,
    /// time_to_first_token_s...) instead of streaming
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Describe(args) => describe(args),
        Command::Classify(args) => classify_command::classify(args),
    };
    cli::exit_status(result)
}

/// The most pixels of all images of one prompt together, decoded at once (3 bytes each: 768 MiB).
const MAX_TOTAL_PIXELS: u64 = 256 << 20;

/// Before decoding anything: the pixels the images' headers declare must fit [`MAX_TOTAL_PIXELS`] together, so
/// that many huge images are not all decoded only to be refused.
fn check_image_pixels(args: &DescribeArgs, limits: &ImageLimits) -> Result<()> {
    let mut total: u64 = 0;
    for path in &args.images {
        // Header only; an unreadable header, or one image over the limits, is left for the decoder to explain.
        let dims = image::ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .ok()
            .and_then(|r| r.into_dimensions().ok());
        if let Some((w, h)) = dims {
            let pixels = u64::from(w) * u64::from(h);
            if w <= limits.max_width && h <= limits.max_height && pixels <= limits.max_pixels {
                total = total.saturating_add(pixels);
            }
        }
    }
    if total > MAX_TOTAL_PIXELS {
        anyhow::bail!(
            "the images have {:.0} megapixels together, more than the {} megapixels one prompt may decode; give \
             fewer or smaller images",
            total as f64 / (1u64 << 20) as f64,
            MAX_TOTAL_PIXELS >> 20
        );
    }
    Ok(())
}

/// Before decoding anything: the images' soft tokens alone (at least `mm_tokens_per_image` + 4 each, more with
/// Pan & Scan crops) must fit in the model's positions. (With `--max-new-tokens`, the prompt is checked again once
/// it is built.)
fn check_images_fit(
    args: &DescribeArgs,
    section: &VisionSection,
    manifest: &Manifest,
) -> Result<()> {
    let per_image = section.mm_tokens_per_image.saturating_add(4);
    let needed = args.images.len().saturating_mul(per_image);
    if needed > manifest.max_position_embeddings {
        anyhow::bail!(
            "{} images need at least {needed} positions ({per_image} each), more than the model's {} positions; \
             give fewer images",
            args.images.len(),
            manifest.max_position_embeddings
        );
    }
    Ok(())
}

fn describe(args: DescribeArgs) -> Result<()> {
    let sampling = args.sampling.config()?;
    // Cheap checks first, so that a wrong folder or a bad image fails before the model loads.
    let dir = &args.model.model;
    let manifest =
        gemma_runtime::manifest::load(dir).with_context(|| format!("opening {}", dir.display()))?;
    let section = manifest
        .vision
        .clone()
        .ok_or_else(|| gemma_runtime::Error::NoVision { dir: dir.clone() })?;
    let paligemma = section.system.spec().prefix_lm;
    let default_prompt = if paligemma {
        "caption en"
    } else {
        "Describe this image."
    };
    let prompt = cli::read_prompt(args.prompt.as_deref().unwrap_or(default_prompt))?;
    let limits = ImageLimits::default();
    check_images_fit(&args, &section, &manifest)?;
    check_image_pixels(&args, &limits)?;
    let mut images = Vec::with_capacity(args.images.len());
    for path in &args.images {
        let t = std::time::Instant::now();
        let image = gemma_runtime::vision::load_image(path, &limits)?;
        images.push(DecodedImage {
            path: path.clone(),
            image,
            decode_seconds: t.elapsed().as_secs_f64(),
        });
    }

    let stop = cli::stop_on_ctrl_c();
    let options = VisionOptions {
        generate: GenerateOptions {
            max_new_tokens: args.max_new_tokens,
            sampling,
            stop: Some(stop),
        },
        pan_and_scan: args.pan_and_scan || section.default_pan_and_scan(),
        raw_prompt: args.raw,
        ..Default::default()
    };
    let runtime = args.model.runtime_options();
    let mut generator = VisionGenerator::open(dir, &runtime)
        .with_context(|| format!("opening {}", dir.display()))?;

    let progress = if !args.json && std::io::stderr().is_terminal() {
        let p = ProgressBar::new(images.len() as u64);
        p.set_style(
            ProgressStyle::with_template("{spinner} encoding image {pos}/{len} {msg} [{elapsed}]")
                .expect("valid template"),
        );
        p.enable_steady_tick(Duration::from_millis(120));
        p
    } else {
        ProgressBar::hidden()
    };
    let mut text_out = cli::TextOut::new(args.json);
    let mut first = true;
    let out = generator.describe_decoded(
        &images,
        &prompt,
        &options,
        |i, report| match report {
            None => progress.set_message(format!("({})", images[i].path.display())),
            Some(r) => {
                progress.inc(1);
                if r.num_crops > 0 {
                    progress.println(format!(
                        "{}: {} Pan & Scan crops",
                        r.path.display(),
                        r.num_crops
                    ));
                }
            }
        },
        |delta| {
            if first {
                progress.finish_and_clear();
                first = false;
            }
            text_out.write(delta);
        },
    )?;
    progress.finish_and_clear();
    if !text_out.finish()? {
        return Ok(());
    }
    let g = &out.generation;
    // PaliGemma's `detect …` answers: boxes in pixels of the first image.
    let detections = match (&out.images.first(), paligemma && is_detect_prompt(&prompt)) {
        (Some(image), true) => Some(detections::parse(&g.text, image.width, image.height)),
        _ => None,
    };
    if args.json {
        let mut obj = serde_json::json!({
            "text": g.text,
            "token_ids": g.token_ids,
            "prompt_tokens": g.prompt_tokens,
            "generated_tokens": g.token_ids.len(),
            "stop_reason": g.stop_reason,
            "prefill_tokens_per_s": g.prefill_tokens_per_s,
            "decode_tokens_per_s": g.decode_tokens_per_s,
            "time_to_first_token_s": out.time_to_first_token_seconds,
            "pan_and_scan": options.pan_and_scan,
            "images": out.images,
        });
        if let Some(d) = &detections {
            obj["detections"] = serde_json::to_value(&d.objects)?;
            obj["detection_notes"] = serde_json::to_value(&d.notes)?;
        }
        outln!("{obj}");
    } else {
        outln!();
        for line in detections.iter().flat_map(detections::describe) {
            outln!("{line}");
        }
        let why = cli::stop_words(g.stop_reason, "end of turn");
        let crops: Vec<String> = out.images.iter().map(|i| i.num_crops.to_string()).collect();
        let encode: f64 = out
            .images
            .iter()
            .map(|i| i.preprocess_seconds + i.encode_seconds)
            .sum();
        errln!(
            "[{} image(s), crops {}, encoded in {encode:.2} s | {} prompt tokens, {:.1} tok/s prefill | first token \
             after {:.2} s | {} generated, {:.1} tok/s | stop: {why}]",
            out.images.len(),
            crops.join("+"),
            g.prompt_tokens,
            g.prefill_tokens_per_s,
            out.time_to_first_token_seconds,
            g.token_ids.len(),
            g.decode_tokens_per_s
        );
    }
    Ok(())
}
