//! The huggingface_hub cache layout (see the module docs of `hub`): refs, snapshots of symlinks into
//! content-addressed blobs, the per-blob lock, and the offline lookup of a snapshot downloaded before.

use super::client::Hub;
use super::names::safe_component;
use super::select::{select_files, shard_names, Selection};
use super::{HubError, INDEX_FILE};
use std::fs;
use std::path::{Path, PathBuf};

impl Hub<'_> {
    /// `refs/<revision>` ← commit, unless the revision is the commit itself.
    pub(super) fn write_ref(&self, commit: &str) -> Result<(), HubError> {
        if self.revision == commit {
            return Ok(());
        }
        let path = self.repo_dir().join("refs").join(self.revision);
        if fs::read_to_string(&path).is_ok_and(|c| c.trim() == commit) {
            return Ok(());
        }
        let io = |source| HubError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(path.parent().expect("refs/<revision> has a parent")).map_err(io)?;
        fs::write(&path, commit).map_err(io)
    }

    /// The cached snapshot of the revision, without the network: the folder, or the GGUF file in it.
    pub(super) fn cached(&self, gguf_file: Option<&str>) -> Result<PathBuf, HubError> {
        let not_cached = |reason: String| HubError::NotCached {
            repo: self.repo.into(),
            revision: self.revision.into(),
            cache: self.env.cache.clone(),
            reason,
        };
        let ref_path = self.repo_dir().join("refs").join(self.revision);
        let commit = match fs::read_to_string(&ref_path) {
            Ok(c) => c.trim().to_string(),
            Err(_) if safe_component(self.revision) && self.revision.len() == 40 => {
                self.revision.to_string()
            }
            Err(_) => return Err(not_cached(format!("no {}", ref_path.display()))),
        };
        if !safe_component(&commit) {
            return Err(not_cached(format!("{} is damaged", ref_path.display())));
        }
        let snapshot = self.repo_dir().join("snapshots").join(&commit);
        if !snapshot.is_dir() {
            return Err(not_cached(format!("no {}", snapshot.display())));
        }
        let mut names = Vec::new();
        list_files(&snapshot, "", &mut names);
        match select_files(self.repo, self.revision, &names, gguf_file)? {
            Selection::Gguf(file) => Ok(snapshot.join(file)),
            Selection::Safetensors { mut files, sharded } => {
                if sharded && names.iter().any(|n| n == INDEX_FILE) {
                    files.extend(shard_names(&snapshot.join(INDEX_FILE))?);
                }
                match files.iter().find(|f| !names.contains(f)) {
                    None => Ok(snapshot),
                    Some(f) => Err(not_cached(format!("no {f} in {}", snapshot.display()))),
                }
            }
        }
    }

    /// The lock huggingface_hub takes on a blob (`.locks/models--org--name/<etag>.lock`), so two exports (or an
    /// export and Python) never write the same `.incomplete` file.
    pub(super) fn lock(&self, etag: &str) -> Result<fs::File, HubError> {
        let dir = self
            .env
            .cache
            .join(".locks")
            .join(self.repo_dir().file_name().expect("models--org--name"));
        let path = dir.join(format!("{etag}.lock"));
        let io = |source| HubError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(file)
    }
}

/// `snapshots/<commit>/<file>` → `../../blobs/<etag>` (one more `..` per folder in `file`); a copy where the
/// platform has no symlinks.
pub(super) fn link(blob: &Path, pointer: &Path, file: &str) -> Result<(), HubError> {
    let io = |source| HubError::Io {
        path: pointer.into(),
        source,
    };
    fs::create_dir_all(pointer.parent().expect("snapshot file has a parent")).map_err(io)?;
    // A dangling link (its blob was deleted) is replaced.
    if fs::symlink_metadata(pointer).is_ok() {
        fs::remove_file(pointer).map_err(io)?;
    }
    #[cfg(unix)]
    {
        let mut target = PathBuf::from("../..");
        for _ in 1..file.split('/').count() {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob.file_name().expect("blob has a name"));
        std::os::unix::fs::symlink(&target, pointer).map_err(io)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        fs::copy(blob, pointer).map(|_| ()).map_err(io)
    }
}

/// Files under `dir`, as repository paths (`a/b.gguf`).
fn list_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let path = e.path();
        if path.is_dir() {
            list_files(&path, &format!("{prefix}{name}/"), out);
        } else if path.is_file() {
            out.push(format!("{prefix}{name}"));
        }
    }
}
