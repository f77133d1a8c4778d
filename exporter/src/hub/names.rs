//! The names a fetch puts into paths and URLs: repository file names, revisions, commits and ETags are checked
//! before they become cache paths (nothing may escape the cache), and percent-encoded before they become URLs.

use super::HubError;

/// A repository file name we may join under the snapshot folder: relative, no `..`, no empty components.
pub(super) fn check_file_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a plain relative file name"))
    }
}

pub(super) fn check_revision(revision: &str) -> Result<(), HubError> {
    check_file_name(revision).map_err(|e| HubError::Invalid(format!("--revision: {e}")))
}

/// Commit hashes and ETags become file names: letters, digits, `-` and `_` only.
pub(super) fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub(super) fn check_commit(commit: &str, url: &str) -> Result<(), HubError> {
    if safe_component(commit) {
        Ok(())
    } else {
        Err(HubError::BadResponse {
            url: url.into(),
            reason: format!("commit {commit:?} is not a hash"),
        })
    }
}

/// Percent-encodes a path segment (a revision such as `refs/pr/1` becomes one segment, as huggingface_hub does).
pub(super) fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a file path, keeping its `/`.
pub(super) fn encode_path(s: &str) -> String {
    s.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// `scheme://host[:port]` of a URL.
pub(super) fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

pub(super) fn same_origin(url: &str, endpoint: &str) -> bool {
    origin(url).eq_ignore_ascii_case(origin(endpoint))
}
