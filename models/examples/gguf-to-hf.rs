//! Writes a Gemma GGUF file as a Hugging Face checkpoint folder: `config.json`, `generation_config.json`,
//! `model.safetensors` (bf16 or f32, dequantized by the project's own reader, norm gains back to transformers'
//! convention) and the tokenizer files rebuilt from the GGUF vocabulary.
//!
//! `scripts/get-model --hf` uses it to make the real Gemma 3 270M folder that the tests compare with transformers;
//! it is also a way to load a GGUF-only model in transformers.
//!
//!   cargo run -p gemma-models --example gguf-to-hf -- MODEL.gguf OUT_DIR [--dtype bf16|f32]
//!
//! bf16 rounds to nearest even, as `torch`/`ml_dtypes` casts do. Tensors are converted one at a time while
//! `model.safetensors` is written, so memory stays near one tensor.

use std::borrow::Cow;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use gemma_models::{gguf, Checkpoint};
use safetensors::{Dtype, View};

/// One tensor, converted when the writer asks for its bytes.
struct Lazy<'a> {
    ckpt: &'a Checkpoint,
    name: String,
    shape: Vec<usize>,
    bf16: bool,
}

impl View for Lazy<'_> {
    fn dtype(&self) -> Dtype {
        if self.bf16 {
            Dtype::BF16
        } else {
            Dtype::F32
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let view = self
            .ckpt
            .tensor(&self.name)
            .expect("listed by the checkpoint");
        let values = view.to_f32_vec();
        self.ckpt.release(&view);
        let bytes: Vec<u8> = if self.bf16 {
            values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect()
        } else {
            values.iter().flat_map(|&v| v.to_le_bytes()).collect()
        };
        Cow::Owned(bytes)
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * if self.bf16 { 2 } else { 4 }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (src, out, bf16) = match args.as_slice() {
        [src, out] => (src, out, true),
        [src, out, flag, dtype] if flag == "--dtype" && (dtype == "bf16" || dtype == "f32") => {
            (src, out, dtype == "bf16")
        }
        _ => bail!("usage: gguf-to-hf MODEL.gguf OUT_DIR [--dtype bf16|f32]"),
    };
    let (src, out) = (PathBuf::from(src), PathBuf::from(out));
    if out.exists() {
        bail!("{} exists; choose a new folder", out.display());
    }
    let model = gguf::open(&src)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };

    let mut config = model.config_json.clone();
    config["torch_dtype"] = serde_json::json!(if bf16 { "bfloat16" } else { "float32" });
    write("config.json", &serde_json::to_string_pretty(&config)?)?;
    write(
        "generation_config.json",
        &serde_json::to_string_pretty(&gguf::generation_config_json(&model.vocab))?,
    )?;
    let files = gguf::tokenizer_files(&model.vocab)
        .with_context(|| format!("rebuilding the tokenizer of {}", src.display()))?;
    write("tokenizer.json", &files.tokenizer_json)?;
    write("tokenizer_config.json", &files.tokenizer_config_json)?;

    let ckpt = &model.checkpoint;
    let tensors: Vec<(String, Lazy)> = ckpt
        .names()
        .into_iter()
        .map(|name| {
            let shape = ckpt.tensor(name).map(|v| v.shape)?;
            Ok((
                name.to_string(),
                Lazy {
                    ckpt,
                    name: name.to_string(),
                    shape,
                    bf16,
                },
            ))
        })
        .collect::<Result<_, gemma_models::CheckpointError>>()?;
    let count = tensors.len();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let path = out.join("model.safetensors");
    safetensors::serialize_to_file(tensors, Some(meta), &path)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {count} tensors from {} to {}",
        src.display(),
        out.display()
    );
    Ok(())
}
