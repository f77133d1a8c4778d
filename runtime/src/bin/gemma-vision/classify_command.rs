//! `gemma-vision classify`: ShieldGemma 2's probability that an image violates each policy
//! ([`gemma_runtime::vision::Classifier`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gemma_runtime::vision::{parse_policy_text, Classifier, ImageLimits};

use crate::cli::{outln, ModelArgs};

pub const CLASSIFY_EXAMPLES: &str = "\
Examples:
  # Every policy of the model (ShieldGemma 2: dangerous, sexual, violence)
  gemma-export shieldgemma-2-4b-it/ -o shieldgemma-2-onnx
  gemma-vision classify photo.jpg -m shieldgemma-2-onnx

  # Some policies, and one of your own, as JSON
  gemma-vision classify photo.jpg -m shieldgemma-2-onnx --policy violence \\
      --policy-text \"weapons=No Weapons: The image shall not show firearms.\" --policy weapons --json

Prints, per policy, P(Yes) (the image violates it) and P(No), as ShieldGemma2ForImageClassification computes \
them: softmax over the Yes/No logits after the model's prompt for that policy. All policies of one image run as \
one batch over one encoding of the image.";

#[derive(Args)]
pub struct ClassifyArgs {
    /// The image file (JPEG, PNG, WebP, GIF, BMP)
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// A policy to check, by name (repeatable; default: all the model's policies, then the --policy-text ones)
    #[arg(long = "policy", value_name = "NAME")]
    policies: Vec<String>,
    /// A custom policy NAME=TEXT (repeatable); a default policy of the same name gets this text
    #[arg(long = "policy-text", value_name = "NAME=TEXT")]
    policy_texts: Vec<String>,
    /// Print {"policies":[{"name":…,"yes":p,"no":q},…]} instead of a table
    #[arg(long)]
    json: bool,
}

pub fn classify(args: ClassifyArgs) -> Result<()> {
    let custom = args
        .policy_texts
        .iter()
        .map(|a| parse_policy_text(a))
        .collect::<gemma_runtime::Result<Vec<_>>>()?;
    let dir = &args.model.model;
    // The image first: an unreadable image fails before the model loads.
    let image = gemma_runtime::vision::load_image(&args.image, &ImageLimits::default())?;
    let mut classifier = Classifier::open(dir, &args.model.runtime_options())
        .with_context(|| format!("opening {}", dir.display()))?;
    let policies = classifier.policies(&args.policies, &custom)?;
    let scores = classifier.classify(&image, &policies)?;
    if args.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            policies: &'a [gemma_runtime::vision::PolicyScore],
        }
        outln!("{}", serde_json::to_string(&Out { policies: &scores })?);
    } else {
        let width = scores.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &scores {
            outln!("{:<width$}  yes {:.4}  no {:.4}", s.name, s.yes, s.no);
        }
    }
    Ok(())
}
