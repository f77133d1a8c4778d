//! Which files of a repository an export needs (see the module docs of `hub`): a pure choice over the listing,
//! tested without a server, and the shard names a downloaded index adds.

use super::names::check_file_name;
use super::{HubError, INDEX_FILE, SINGLE_FILE};
use serde::Deserialize;
use std::fs;
use std::path::Path;

/// Files an export copies or reads besides the weights, fetched when the repository has them.
const SIDE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
];

/// The files of one commit of a repository, as the listing API gives them.
#[derive(Debug, Deserialize)]
pub(super) struct RepoInfo {
    pub(super) sha: Option<String>,
    #[serde(default)]
    pub(super) siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Sibling {
    pub(super) rfilename: String,
}

/// What an export of this repository needs: the side files, then either the safetensors weights (the shards are
/// read from the index once it is downloaded) or one GGUF file.
#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    /// `files` holds the side files and `model.safetensors` or the index; `sharded` says to read the index.
    Safetensors {
        files: Vec<String>,
        sharded: bool,
    },
    Gguf(String),
}

/// Chooses the files of a listing (see [`Selection`]). Pure, so the choice is tested without a server.
pub fn select_files(
    repo: &str,
    revision: &str,
    names: &[String],
    gguf_file: Option<&str>,
) -> Result<Selection, HubError> {
    let has = |n: &str| names.iter().any(|x| x == n);
    let ggufs: Vec<String> = names
        .iter()
        .filter(|n| n.to_ascii_lowercase().ends_with(".gguf"))
        .cloned()
        .collect();
    if let Some(want) = gguf_file {
        // An exact path, or a file name anywhere in the repository if only one has it.
        let found: Vec<&String> = ggufs
            .iter()
            .filter(|n| *n == want || n.rsplit('/').next() == Some(want))
            .collect();
        return match found.as_slice() {
            [one] => Ok(Selection::Gguf((*one).clone())),
            _ => Err(HubError::GgufNotFound {
                repo: repo.into(),
                revision: revision.into(),
                name: want.into(),
                files: ggufs,
            }),
        };
    }
    let (weights, sharded) = if has(SINGLE_FILE) {
        (SINGLE_FILE, false)
    } else if has(INDEX_FILE) {
        (INDEX_FILE, true)
    } else {
        return match ggufs.as_slice() {
            [one] => Ok(Selection::Gguf(one.clone())),
            [] => {
                let pickles = names.iter().any(|n| {
                    [".bin", ".pt", ".pth", ".ckpt", ".pkl"]
                        .iter()
                        .any(|e| n.ends_with(e))
                });
                Err(HubError::NoWeights {
                    repo: repo.into(),
                    revision: revision.into(),
                    reason: if pickles {
                        format!("no {SINGLE_FILE}, {INDEX_FILE} or .gguf file, only pickle weights, which \
                                 gemma-export never loads (they can run code)")
                    } else {
                        format!("no {SINGLE_FILE}, {INDEX_FILE} or .gguf file")
                    },
                })
            }
            _ => Err(HubError::GgufChoice {
                repo: repo.into(),
                revision: revision.into(),
                files: ggufs,
            }),
        };
    };
    let mut files: Vec<String> = SIDE_FILES
        .iter()
        .filter(|f| has(f))
        .map(|f| f.to_string())
        .collect();
    files.push(weights.to_string());
    Ok(Selection::Safetensors { files, sharded })
}

/// The distinct shard files of a `model.safetensors.index.json`, each a plain file name beside the index.
pub(super) fn shard_names(index: &Path) -> Result<Vec<String>, HubError> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = fs::read_to_string(index).map_err(|source| HubError::Io {
        path: index.into(),
        source,
    })?;
    let idx: Index = serde_json::from_str(&text)
        .map_err(|e| HubError::Invalid(format!("{}: not a shard index: {e}", index.display())))?;
    let mut shards: Vec<String> = idx.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    for s in &shards {
        check_file_name(s).map_err(|e| HubError::Invalid(format!("{}: {e}", index.display())))?;
    }
    Ok(shards)
}
