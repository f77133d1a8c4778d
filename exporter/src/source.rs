//! What SRC names: an existing local folder or file is used as it is; anything else shaped like `org/name` is a
//! Hugging Face Hub id, fetched into the Hugging Face cache by [`crate::hub`].

use crate::hub::{self, HubEnv, HubError, HubRequest};
use std::path::{Path, PathBuf};

/// The local path to export from: `src` itself when it exists, else the cached snapshot of the Hub id `src`.
/// `--revision` and `--gguf-file` (in `req`) apply to Hub ids only.
pub fn resolve(src: &Path, req: &HubRequest) -> Result<PathBuf, HubError> {
    if src.exists() {
        if req.revision.is_some() || req.gguf_file.is_some() {
            return Err(HubError::Invalid(format!(
                "--revision and --gguf-file apply to Hub ids; {} is a local path",
                src.display()
            )));
        }
        return Ok(src.to_path_buf());
    }
    match src.to_str() {
        Some(id) if hub::is_hub_id(id) => hub::fetch(id, req, &HubEnv::from_env()),
        _ => Err(HubError::Invalid(format!(
            "{}: no such file or folder, and not a Hugging Face Hub id (org/name); expected a checkpoint folder \
             (config.json + *.safetensors) or a Hub id such as google/gemma-3-270m",
            src.display()
        ))),
    }
}
