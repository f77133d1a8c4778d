//! Hugging Face Hub sources: `gemma-export google/gemma-3-270m -o OUT` downloads what an export needs into the
//! Hugging Face cache and exports from the snapshot folder.
//!
//! The cache is huggingface_hub's own layout, so Python and this exporter share downloads:
//!
//! ```text
//! $HF_HUB_CACHE (default $HF_HOME/hub, HF_HOME default ~/.cache/huggingface)
//!   models--org--name/
//!     blobs/<etag>                       the file contents, named by ETag (sha256 for LFS files)
//!     blobs/<etag>.incomplete            a download in progress; the next run resumes it with an HTTP Range
//!     snapshots/<commit>/<file>          → ../../blobs/<etag>
//!     refs/<revision>                    the commit the branch or tag named last time we asked
//!   .locks/models--org--name/<etag>.lock the same flock huggingface_hub takes while it writes a blob
//! ```
//!
//! Which files: the listing (`/api/models/{repo}/revision/{rev}`) decides. The configs, tokenizer, chat template and
//! processor files the export copies, then the weights the checkpoint reader opens: `model.safetensors`, or
//! `model.safetensors.index.json` and the shards its `weight_map` names. A repository without safetensors but with
//! `.gguf` files gives the one named by `--gguf-file`, or its only one. Pickle files (`*.bin`, `*.pt`) are never
//! fetched: loading them can run code.
//!
//! Environment: `HF_TOKEN` (else the token file `$HF_TOKEN_PATH` or `$HF_HOME/token`), `HF_HOME`, `HF_HUB_CACHE`,
//! `HF_ENDPOINT`, `HF_HUB_OFFLINE`, and the usual `HTTPS_PROXY`/`NO_PROXY`.
//!
//! Written on `ureq` (blocking, rustls on ring) rather than the `hf-hub` crate: hf-hub 1.0 is async (tokio, reqwest
//! with aws-lc, hf-xet), and hf-hub 0.4's blocking API reads neither `HF_TOKEN` nor `HF_HUB_CACHE` nor
//! `HF_HUB_OFFLINE`, resumes from `.part` files Python does not know, appends a resumed body without checking for
//! `206 Partial Content`, and downloads a blob again when another snapshot already holds it.

mod cache;
mod client;
mod download;
mod env;
mod error;
mod names;
mod select;

pub use env::{is_hub_id, HubEnv, HubRequest, Token};
pub use error::HubError;
pub use select::{select_files, Selection};

use client::Hub;
use names::{check_commit, check_revision};
use select::shard_names;
use std::path::PathBuf;

/// The single safetensors file and the shard index, as the checkpoint reader looks for them.
const SINGLE_FILE: &str = gemma_models::checkpoint::SINGLE_FILE;
const INDEX_FILE: &str = gemma_models::checkpoint::INDEX_FILE;

/// Makes sure the files an export of `repo` needs are in the cache and returns the local source: the snapshot
/// folder, or the GGUF file in it.
pub fn fetch(repo: &str, req: &HubRequest, env: &HubEnv) -> Result<PathBuf, HubError> {
    if !is_hub_id(repo) {
        return Err(HubError::Invalid(format!(
            "{repo:?} is not a Hub model id (org/name)"
        )));
    }
    let revision = req.revision.as_deref().unwrap_or("main");
    check_revision(revision)?;
    let hub = Hub::new(repo, revision, env, req.progress);
    if env.offline {
        return hub.cached(req.gguf_file.as_deref());
    }
    let info = match hub.list() {
        Ok(info) => info,
        // Like huggingface_hub: no network, but the revision was downloaded before → use what is cached.
        Err(e @ HubError::Network { .. }) => {
            return match hub.cached(req.gguf_file.as_deref()) {
                Ok(path) => {
                    eprintln!(
                        "warning: {e}\n  using the cached snapshot {}",
                        path.display()
                    );
                    Ok(path)
                }
                Err(_) => Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let commit = info.sha.clone().ok_or_else(|| HubError::BadResponse {
        url: hub.list_url(),
        reason: "no \"sha\" in the listing".into(),
    })?;
    check_commit(&commit, &hub.list_url())?;
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let selection = select_files(repo, revision, &names, req.gguf_file.as_deref())?;
    hub.write_ref(&commit)?;
    let snapshot = hub.repo_dir().join("snapshots").join(&commit);
    if req.progress {
        eprintln!(
            "{repo} at {revision} is commit {commit}: {}",
            snapshot.display()
        );
    }
    match selection {
        Selection::Gguf(file) => hub.get(&commit, &file),
        Selection::Safetensors { files, sharded } => {
            for file in &files {
                hub.get(&commit, file)?;
            }
            if sharded {
                for shard in shard_names(&snapshot.join(INDEX_FILE))? {
                    if !names.contains(&shard) {
                        return Err(HubError::EntryNotFound {
                            repo: repo.into(),
                            revision: revision.into(),
                            file: format!("{shard} (named in {INDEX_FILE})"),
                            url: hub.list_url(),
                        });
                    }
                    hub.get(&commit, &shard)?;
                }
            }
            Ok(snapshot)
        }
    }
}

#[cfg(test)]
mod tests;
