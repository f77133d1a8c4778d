//! The errors of a Hub fetch, each naming the repository, revision, file or URL it is about, and the advice an
//! access refusal needs (how to get a token, where to accept the licence).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{}", access_message(.repo, .url, .status, .endpoint, .token, .server, .gated))]
    Access {
        repo: String,
        url: String,
        status: u16,
        endpoint: String,
        /// Where the token that was sent came from, if one was.
        token: Option<String>,
        /// The hub's own explanation (`X-Error-Message`), if it gave one.
        server: Option<String>,
        /// The hub said the repository is gated (`X-Error-Code: GatedRepo`).
        gated: bool,
    },
    #[error("repository {repo} not found at {url} (HTTP {status}); check the name, or set HF_TOKEN if it is private")]
    RepoNotFound {
        repo: String,
        url: String,
        status: u16,
    },
    #[error("revision {revision:?} not found in {repo} ({url}): give a branch, tag or commit of the repository")]
    RevisionNotFound {
        repo: String,
        revision: String,
        url: String,
    },
    #[error("file {file} not found in {repo} at revision {revision} ({url})")]
    EntryNotFound {
        repo: String,
        revision: String,
        file: String,
        url: String,
    },
    #[error("{url}: HTTP {status}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Http {
        url: String,
        status: u16,
        message: Option<String>,
    },
    #[error("{url}: {source} (no network? HF_HUB_OFFLINE=1 exports from the cache only)")]
    Network { url: String, source: ureq::Error },
    #[error("{url}: unexpected answer from the hub: {reason}")]
    BadResponse { url: String, reason: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{url}: the download stopped at {got} of {expected} bytes{}; run again to resume it", .cause.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Truncated {
        url: String,
        got: u64,
        /// The announced size, `?` when the hub gave none.
        expected: String,
        cause: Option<String>,
    },
    #[error("{repo} at revision {revision} has no weights gemma-export reads: {reason}")]
    NoWeights {
        repo: String,
        revision: String,
        reason: String,
    },
    #[error("{repo} at revision {revision} holds several GGUF files; choose one with --gguf-file: {}", .files.join(", "))]
    GgufChoice {
        repo: String,
        revision: String,
        files: Vec<String>,
    },
    #[error("--gguf-file {name}: not in {repo} at revision {revision}; it has: {}", if .files.is_empty() { "no .gguf files".to_string() } else { .files.join(", ") })]
    GgufNotFound {
        repo: String,
        revision: String,
        name: String,
        files: Vec<String>,
    },
    #[error("HF_HUB_OFFLINE is set and {repo} at revision {revision} is not in the cache {}: {reason}; download it once with the network on", .cache.display())]
    NotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

fn access_message(
    repo: &str,
    url: &str,
    status: &u16,
    endpoint: &str,
    token: &Option<String>,
    server: &Option<String>,
    gated: &bool,
) -> String {
    let server = server
        .as_deref()
        .map(|m| format!(" The hub says: {m}"))
        .unwrap_or_default();
    let page = format!("{endpoint}/{repo}");
    let why = if *gated {
        "it is gated"
    } else {
        "it is gated or private (or does not exist)"
    };
    match token {
        None => format!(
            "access to {repo} denied ({url}: HTTP {status}): {why} and no token was given.{server}\n\
             To get access: log in at {endpoint}, open {page} and accept the licence; create a read token at \
             {endpoint}/settings/tokens; then set HF_TOKEN=<token> (or save it with `hf auth login`) and run again."
        ),
        Some(source) => format!(
            "access to {repo} denied ({url}: HTTP {status}) with the token from {source}.{server}\n\
             Check that the token is valid and can read the repository, and that you accepted the licence at \
             {page} (a gated repository may wait for approval)."
        ),
    }
}
