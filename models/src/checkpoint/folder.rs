//! Finding the weights in a checkpoint folder: `model.safetensors`, or an index with shards that must stay inside
//! the folder; pickle files are refused with an explanation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use super::shard::Shard;
use crate::error::CheckpointError;

/// Extensions of pickle-based PyTorch weights, which we refuse to load.
const PICKLE_EXTENSIONS: [&str; 4] = ["bin", "pt", "pth", "ckpt"];

/// Opens the shards named by a `model.safetensors.index.json` and checks that each listed tensor is in its shard.
/// Returns the shards and, for each listed tensor, the index of its shard.
pub(super) fn open_index(
    dir: &Path,
    index: &Path,
) -> Result<(Vec<Shard>, BTreeMap<String, usize>), CheckpointError> {
    let index_err = |detail: String| CheckpointError::Index {
        path: index.to_path_buf(),
        detail,
    };
    let text = crate::files::read_regular_to_string(index, crate::files::MAX_JSON_BYTES).map_err(
        |source| CheckpointError::Io {
            path: index.to_path_buf(),
            source,
        },
    )?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| index_err(format!("not JSON: {e}")))?;
    let Some(weight_map) = json.get("weight_map").and_then(|m| m.as_object()) else {
        return Err(index_err("no `weight_map` object".to_string()));
    };

    let roots = allowed_roots(dir)?;
    let mut shards: Vec<Shard> = Vec::new();
    let mut shard_of_file: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tensors = BTreeMap::new();
    for (name, entry) in weight_map {
        let Some(file) = entry.as_str() else {
            return Err(index_err(format!(
                "weight_map entry for {name:?} is not a file name: {entry}"
            )));
        };
        let shard_index = match shard_of_file.get(file) {
            Some(&i) => i,
            None => {
                let path = resolve_shard_path(dir, &roots, index, name, file)?;
                shards.push(Shard::open(&path)?);
                shard_of_file.insert(file, shards.len() - 1);
                shards.len() - 1
            }
        };
        let shard = &shards[shard_index];
        if !shard.tensors.contains_key(name) {
            return Err(CheckpointError::NotInShard {
                index: index.to_path_buf(),
                tensor: name.clone(),
                shard: shard.path.clone(),
            });
        }
        tensors.insert(name.clone(), shard_index);
    }
    Ok((shards, tensors))
}

/// Refuses `path` (a file of the checkpoint folder `dir`) when, symlinks resolved, it lies outside `dir` and outside
/// its Hub-cache `blobs` folder: the same rule as the index shards, for the single `model.safetensors`,
/// config.json and every tokenizer, template and processor file the exporter reads or copies. A path that does not
/// exist passes (the caller reports it if it needs it).
pub fn check_inside(dir: &Path, path: &Path) -> Result<(), CheckpointError> {
    let Ok(target) = path.canonicalize() else {
        return Ok(());
    };
    if allowed_roots(dir)?
        .iter()
        .any(|root| target.starts_with(root))
    {
        Ok(())
    } else {
        Err(CheckpointError::SymlinkEscapes {
            path: path.to_path_buf(),
            target,
        })
    }
}

/// The folders a shard may resolve into after following symlinks: the checkpoint folder itself, plus — for a
/// Hugging Face hub cache snapshot (`…/models--org--name/snapshots/<rev>/`, whose files are symlinks to
/// `../../blobs/<hash>`) — that model's `blobs` folder.
fn allowed_roots(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let canonical = dir.canonicalize().map_err(|source| CheckpointError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut roots = vec![canonical.clone()];
    if let Some(snapshots) = canonical
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
    {
        if let Some(blobs) = snapshots.parent().map(|repo| repo.join("blobs")) {
            if blobs.is_dir() {
                roots.push(blobs);
            }
        }
    }
    Ok(roots)
}

/// Checks a `weight_map` file entry and returns its path: it must be a plain relative path without `..`, and must
/// still be inside the folder (or its hub-cache blobs folder) once symlinks are resolved.
fn resolve_shard_path(
    dir: &Path,
    roots: &[PathBuf],
    index: &Path,
    tensor: &str,
    entry: &str,
) -> Result<PathBuf, CheckpointError> {
    let escapes = |why: String| CheckpointError::IndexEntryEscapes {
        index: index.to_path_buf(),
        tensor: tensor.to_string(),
        entry: entry.to_string(),
        why,
    };
    let relative = Path::new(entry);
    if entry.is_empty() {
        return Err(escapes("empty file name".to_string()));
    }
    for component in relative.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(escapes("it contains `..`".to_string())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(escapes("it is an absolute path".to_string()))
            }
        }
    }
    let path = dir.join(relative);
    let canonical = path.canonicalize().map_err(|e| CheckpointError::Index {
        path: index.to_path_buf(),
        detail: format!(
            "weight_map entry for {tensor:?} names {entry:?}, which cannot be opened ({}): {e}",
            path.display()
        ),
    })?;
    if !roots.iter().any(|root| canonical.starts_with(root)) {
        return Err(escapes(format!(
            "it resolves to {} through a symlink",
            canonical.display()
        )));
    }
    Ok(path)
}

/// The error for a folder without safetensors weights: pickle files are called out, other weight-like files
/// are listed as a hint.
pub(super) fn no_weights_error(dir: &Path) -> CheckpointError {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            return CheckpointError::Io {
                path: dir.to_path_buf(),
                source,
            }
        }
    };
    let files: BTreeSet<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    let extension = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
    };
    if let Some(pickle) = files
        .iter()
        .find(|p| extension(p).is_some_and(|e| PICKLE_EXTENSIONS.contains(&e.as_str())))
    {
        return CheckpointError::PickleRefused {
            path: pickle.clone(),
        };
    }
    let others: Vec<String> = files
        .iter()
        .filter(|p| extension(p).is_some_and(|e| e == "safetensors" || e == "gguf"))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let hint = if others.is_empty() {
        String::new()
    } else {
        format!(
            " (found {}; other safetensors file names need a model.safetensors.index.json, and GGUF is not supported)",
            others.join(", ")
        )
    };
    CheckpointError::NoWeights {
        dir: dir.to_path_buf(),
        hint,
    }
}
