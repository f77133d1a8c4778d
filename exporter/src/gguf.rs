//! GGUF files as an export source: `gemma-export FILE.gguf -o OUT`.
//!
//! The weights stream out of the mapped file like safetensors ones ([`gemma_models::gguf`] renames them and undoes
//! llama.cpp's `1 + w` norm convention on read); what a checkpoint folder would hold beside them is generated here
//! from the metadata: `config.json`, `generation_config.json`, and the tokenizer files and chat template rebuilt
//! from the `tokenizer.*` keys.

use std::path::Path;

use gemma_models::gguf;
use gemma_models::{Checkpoint, ModelConfig};

use crate::ExportError;

/// What a source contributes besides its weights: the files written into the export (name, contents) in place of
/// the ones a checkpoint folder is copied from, its format for the manifest, and warnings for the user.
#[derive(Debug, Clone, Default)]
pub struct SourceFiles {
    /// `"safetensors"` or `"gguf"`.
    pub format: &'static str,
    pub files: Vec<(String, String)>,
    pub warnings: Vec<String>,
    /// The config.json to write instead of the source folder's (a `--matformer` slice's).
    pub config: Option<String>,
    /// The `--matformer` slice the export is of its source.
    pub matformer: Option<gemma_models::contract::MatformerSection>,
}

impl SourceFiles {
    /// A Hugging Face checkpoint folder: its files are copied as they are.
    pub fn folder() -> SourceFiles {
        SourceFiles {
            format: "safetensors",
            ..Default::default()
        }
    }
}

/// Whether `src` is to be read as a GGUF file: a file that starts with the GGUF magic, or any file named `*.gguf`
/// (so that a damaged one is refused with the GGUF reader's error rather than "no config.json").
pub fn is_gguf(src: &Path) -> bool {
    src.is_file()
        && (gguf::has_magic(src)
            || src
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
}

/// Opens a GGUF source: config, weights, and the files to write beside the graphs.
pub fn open(src: &Path) -> Result<(ModelConfig, Checkpoint, SourceFiles), ExportError> {
    let model = gguf::open(src)?;
    let mut out = SourceFiles {
        format: "gguf",
        ..Default::default()
    };
    let json = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("json") + "\n";
    out.files
        .push(("config.json".into(), json(&model.config_json)));
    out.files.push((
        "generation_config.json".into(),
        json(&gguf::generation_config_json(&model.vocab)),
    ));
    if model.vocab.tokens.is_empty() {
        out.warnings.push(format!(
            "{} has no tokenizer metadata (tokenizer.ggml.tokens): exported without tokenizer files",
            src.display()
        ));
    } else {
        match gguf::tokenizer_files(&model.vocab) {
            Ok(files) => {
                out.files
                    .push(("tokenizer.json".into(), files.tokenizer_json));
                out.files
                    .push(("tokenizer_config.json".into(), files.tokenizer_config_json));
            }
            Err(e) => out.warnings.push(format!(
                "{}: tokenizer not rebuilt, exported without tokenizer files: {e}",
                src.display()
            )),
        }
    }
    if model.vocab.chat_template_builtin {
        out.warnings.push(format!(
            "{}: {}",
            src.display(),
            gguf::vocab::BUILTIN_TEMPLATE_NOTE
        ));
    }
    if let Some(template) = &model.vocab.chat_template {
        out.files
            .push(("chat_template.jinja".into(), template.clone()));
    }
    Ok((model.config, model.checkpoint, out))
}
