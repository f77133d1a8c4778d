//! The export contract: what an export folder holds and what its `gemma-onnx.json` says, written once for the
//! exporter (which fills it) and the runtime (which reads and validates it). docs/export-format.md describes the
//! same contract for people.
//!
//! * [`Manifest`]: `gemma-onnx.json`, with its sections [`CpuSection`], [`VisionSection`] (and its
//!   [`PreprocessSection`]), [`ClassifierSection`], [`LoraSection`], [`MatformerSection`] and the [`FileFingerprint`]s of the graph files; typed enums for the
//!   values the runtime branches on ([`Family`], [`GraphKind`], [`LayerType`], [`Precision`], [`DType`]).
//! * [`files`]: the file names of an export folder.
//! * [`io`]: the graphs' input and output tensor names, the symbolic KV dimensions and the metadata keys.
//!
//! # Versions
//!
//! `format_version` is the newest version a manifest's content needs ([`format_version_for`]: 2 for Gemma 3n, 1
//! otherwise, so older readers keep reading every other export). A reader accepts every version from 1 up to
//! [`FORMAT_VERSION`] (a manifest without the field is version 1) and refuses a newer one, naming both versions
//! ([`check_format_version`]). Within one version, fields are only ever added as optional (absent in older
//! exports, with a default), and readers ignore fields they do not know; a change an older reader would misread
//! (a new required field, a new value of an enum, a new meaning) raises the version.

mod classifier;
pub mod files;
mod gemma3n;
pub mod io;
mod manifest;
mod vision;

pub use crate::config::{Family, LayerType};
pub use classifier::{select_policies, ClassifierSection, Policy};
pub use gemma3n::{
    shared_kv_sources, window_sized_kv, Gemma3nAudioSection, Gemma3nSection, Gemma3nVisionSection,
};
pub use manifest::{
    CpuSection, DType, FileFingerprint, GraphKind, LoraSection, Manifest, MatformerSection,
    Precision,
};
pub use vision::{PreprocessConfig, PreprocessSection, VisionSection, PIL_BICUBIC, PIL_BILINEAR};

/// The value of `format` in every manifest: tells an export folder's manifest from any other JSON file.
pub const FORMAT: &str = "gemma-onnx";

/// The newest `format_version` this code writes and reads. Version 2 added the family `gemma3n` and the manifest's
/// `gemma3n` section.
pub const FORMAT_VERSION: u32 = 2;

/// The `format_version` a manifest of `family` is written with: the oldest that can express it.
pub fn format_version_for(family: Family) -> u32 {
    match family.spec().gemma3n_layers {
        true => 2,
        false => 1,
    }
}

/// Why a manifest's `format_version` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Written by a newer exporter than this reader knows.
    #[error(
        "format_version {found} is newer than this runtime reads (format_version {FORMAT_VERSION} and older); \
         update gemma-onnx or re-export the model with this version's gemma-export"
    )]
    Newer { found: u32 },
    /// 0 was never written.
    #[error("format_version {found} does not exist (versions start at 1; this runtime reads 1 to {FORMAT_VERSION})")]
    Invalid { found: u32 },
}

/// Checks that a manifest of `format_version` `found` is one this code reads: 1 to [`FORMAT_VERSION`].
pub fn check_format_version(found: u32) -> Result<(), VersionError> {
    match found {
        0 => Err(VersionError::Invalid { found }),
        v if v > FORMAT_VERSION => Err(VersionError::Newer { found }),
        _ => Ok(()),
    }
}

/// The name of `family` in the manifest and in the graphs' metadata (its serde name): `gemma`, `gemma2`, `gemma3`.
pub fn family_name(family: Family) -> &'static str {
    family.spec().id
}

#[cfg(test)]
mod tests;
