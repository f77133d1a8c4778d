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

use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The single safetensors file and the shard index, as the checkpoint reader looks for them.
const SINGLE_FILE: &str = gemma_models::checkpoint::SINGLE_FILE;
const INDEX_FILE: &str = gemma_models::checkpoint::INDEX_FILE;

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

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

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

/// Where the hub is and where its cache lives, from the environment (see the module docs).
#[derive(Debug, Clone)]
pub struct HubEnv {
    pub endpoint: String,
    /// The hub cache folder (`$HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache: PathBuf,
    pub token: Option<Token>,
    pub offline: bool,
}

/// An access token and where it came from (named in access errors; never printed).
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub source: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(from {})", self.source)
    }
}

impl HubEnv {
    /// Reads `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_TOKEN_PATH` and `HF_HUB_OFFLINE` as
    /// huggingface_hub does.
    pub fn from_env() -> HubEnv {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                var("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(".cache")
            });
            cache.join("huggingface")
        });
        let cache = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token_path = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("token"));
        let token = if let Some(v) = var("HF_TOKEN") {
            Some(Token {
                value: v.trim().to_string(),
                source: "HF_TOKEN".into(),
            })
        } else {
            fs::read_to_string(&token_path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .map(|value| Token {
                    value,
                    source: token_path.display().to_string(),
                })
        };
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "on" | "yes" | "true"
            )
        });
        HubEnv {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            cache,
            token,
            offline,
        }
    }
}

/// What to fetch from a repository.
#[derive(Debug, Clone, Default)]
pub struct HubRequest {
    /// Branch, tag or commit; `main` when absent.
    pub revision: Option<String>,
    /// The GGUF file to take from a repository of GGUF files.
    pub gguf_file: Option<String>,
    /// A progress bar per file on stderr.
    pub progress: bool,
}

/// Whether `s` has the shape of a Hub model id, `org/name` (huggingface_hub's `validate_repo_id`: letters, digits,
/// `-`, `_`, `.`; no `--` or `..`; not starting or ending with `-` or `.`; at most 96 characters).
pub fn is_hub_id(s: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
    };
    let mut parts = s.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(org), Some(name), None) => {
            s.len() <= 96 && part_ok(org) && part_ok(name) && !s.contains("--") && !s.contains("..")
        }
        _ => false,
    }
}

/// The files of one commit of a repository, as the listing API gives them.
#[derive(Debug, Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
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

/// The distinct shard files of a `model.safetensors.index.json`, each a plain file name beside the index.
fn shard_names(index: &Path) -> Result<Vec<String>, HubError> {
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

/// A repository file name we may join under the snapshot folder: relative, no `..`, no empty components.
fn check_file_name(name: &str) -> Result<(), String> {
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

fn check_revision(revision: &str) -> Result<(), HubError> {
    check_file_name(revision).map_err(|e| HubError::Invalid(format!("--revision: {e}")))
}

/// Commit hashes and ETags become file names: letters, digits, `-` and `_` only.
fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn check_commit(commit: &str, url: &str) -> Result<(), HubError> {
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
fn encode_segment(s: &str) -> String {
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
fn encode_path(s: &str) -> String {
    s.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// One repository at one revision, with the HTTP agents and the cache paths.
struct Hub<'a> {
    repo: &'a str,
    revision: &'a str,
    env: &'a HubEnv,
    progress: bool,
    /// Follows redirects (sending the token only to the hub's own host): listings and downloads.
    agent: ureq::Agent,
    /// Follows none, so a HEAD on `resolve/` shows the hub's own headers (commit, ETag, size) rather than a CDN's.
    no_redirect: ureq::Agent,
}

impl<'a> Hub<'a> {
    fn new(repo: &'a str, revision: &'a str, env: &'a HubEnv, progress: bool) -> Hub<'a> {
        let config = |redirects: u32| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .max_redirects_will_error(redirects > 0)
                .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
                .user_agent(concat!("gemma-onnx/", env!("CARGO_PKG_VERSION")))
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(60)))
                .timeout_per_read(Some(Duration::from_secs(60)))
                .build()
                .new_agent()
        };
        Hub {
            repo,
            revision,
            env,
            progress,
            agent: config(10),
            no_redirect: config(0),
        }
    }

    fn repo_dir(&self) -> PathBuf {
        self.env
            .cache
            .join(format!("models--{}", self.repo.replace('/', "--")))
    }

    fn list_url(&self) -> String {
        format!(
            "{}/api/models/{}/revision/{}",
            self.env.endpoint,
            self.repo,
            encode_segment(self.revision)
        )
    }

    /// Adds the token when `url` is on the hub's own host (never to a CDN).
    fn auth<B>(&self, req: ureq::RequestBuilder<B>, url: &str) -> ureq::RequestBuilder<B> {
        match &self.env.token {
            Some(t) if same_origin(url, &self.env.endpoint) => {
                req.header("Authorization", format!("Bearer {}", t.value))
            }
            _ => req,
        }
    }

    fn list(&self) -> Result<RepoInfo, HubError> {
        let url = self.list_url();
        let req = self.auth(self.agent.get(&url), &url);
        let mut resp = self.check(req.call(), &url, None)?;
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|source| HubError::Network {
                url: url.clone(),
                source,
            })?;
        serde_json::from_str(&text).map_err(|e| HubError::BadResponse {
            url,
            reason: format!("the listing is not the expected JSON: {e}"),
        })
    }

    /// Maps an answer to an error naming the repository, revision and file; passes 2xx and 3xx through.
    fn check(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        url: &str,
        file: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, HubError> {
        let resp = result.map_err(|source| HubError::Network {
            url: url.into(),
            source,
        })?;
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let code = header("x-error-code").unwrap_or_default();
        let message = header("x-error-message");
        let url = url.to_string();
        let repo = self.repo.to_string();
        let revision = self.revision.to_string();
        let code = code.as_str();
        Err(if code == "RevisionNotFound" {
            HubError::RevisionNotFound {
                repo,
                revision,
                url,
            }
        } else if code == "EntryNotFound"
            || (status == 404 && file.is_some() && code != "RepoNotFound")
        {
            HubError::EntryNotFound {
                repo,
                revision,
                file: file.unwrap_or_default().into(),
                url,
            }
        } else if status == 404 || (code == "RepoNotFound" && self.env.token.is_some()) {
            HubError::RepoNotFound { repo, url, status }
        } else if matches!(status, 401 | 403) || code == "RepoNotFound" || code == "GatedRepo" {
            HubError::Access {
                repo,
                url,
                status,
                endpoint: self.env.endpoint.clone(),
                token: self.env.token.as_ref().map(|t| t.source.clone()),
                server: message,
                gated: code == "GatedRepo",
            }
        } else {
            HubError::Http {
                url,
                status,
                message,
            }
        })
    }

    /// `refs/<revision>` ← commit, unless the revision is the commit itself.
    fn write_ref(&self, commit: &str) -> Result<(), HubError> {
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
    fn cached(&self, gguf_file: Option<&str>) -> Result<PathBuf, HubError> {
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

    /// `snapshots/<commit>/<file>`, downloading the blob unless the snapshot or another snapshot has it.
    fn get(&self, commit: &str, file: &str) -> Result<PathBuf, HubError> {
        check_file_name(file).map_err(|e| HubError::BadResponse {
            url: self.list_url(),
            reason: e,
        })?;
        let pointer = self.repo_dir().join("snapshots").join(commit).join(file);
        if pointer.is_file() {
            return Ok(pointer);
        }
        let url = format!(
            "{}/{}/resolve/{}/{}",
            self.env.endpoint,
            self.repo,
            commit,
            encode_path(file)
        );
        let meta = self.metadata(&url, file)?;
        let blob = self.repo_dir().join("blobs").join(&meta.etag);
        if !blob.is_file() {
            let lock = self.lock(&meta.etag)?;
            if !blob.is_file() {
                let from = meta.location.as_deref().unwrap_or(&url);
                self.download(from, file, meta.size, &blob)?;
            }
            drop(lock);
        }
        link(&blob, &pointer, file)?;
        Ok(pointer)
    }

    /// HEAD on `resolve/`: the ETag names the blob, the size bounds the download, a redirect gives the CDN URL.
    /// Relative redirects (a renamed repository) are followed here, as huggingface_hub does.
    fn metadata(&self, url: &str, file: &str) -> Result<FileMeta, HubError> {
        let mut current = url.to_string();
        for _ in 0..10 {
            let req = self
                .auth(self.no_redirect.head(&current), &current)
                .header("Accept-Encoding", "identity");
            let resp = self.check(req.call(), &current, Some(file))?;
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let location = header("location");
            if resp.status().is_redirection() {
                if let Some(loc) = location.as_deref().filter(|l| l.starts_with('/')) {
                    current = format!("{}{loc}", origin(&current));
                    continue;
                }
            }
            let bad = |reason: &str| HubError::BadResponse {
                url: current.clone(),
                reason: reason.into(),
            };
            let etag = header("x-linked-etag")
                .or_else(|| header("etag"))
                .ok_or_else(|| bad("no ETag header"))?;
            let etag = etag
                .trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string();
            if !safe_component(&etag) {
                return Err(bad(&format!("ETag {etag:?} is not a hash")));
            }
            let size = header("x-linked-size")
                .or_else(|| header("content-length"))
                .map(|s| s.trim().parse::<u64>())
                .transpose()
                .map_err(|_| bad("the size header is not a number"))?;
            let location = if resp.status().is_redirection() {
                Some(location.ok_or_else(|| bad("a redirect without Location"))?)
            } else {
                None
            };
            return Ok(FileMeta {
                etag,
                size,
                location,
            });
        }
        Err(HubError::BadResponse {
            url: url.into(),
            reason: "more than 10 redirects".into(),
        })
    }

    /// The lock huggingface_hub takes on a blob (`.locks/models--org--name/<etag>.lock`), so two exports (or an
    /// export and Python) never write the same `.incomplete` file.
    fn lock(&self, etag: &str) -> Result<fs::File, HubError> {
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

    /// Downloads `url` into `blob` through `blob.incomplete`, resuming what an earlier run left there.
    fn download(
        &self,
        url: &str,
        file: &str,
        size: Option<u64>,
        blob: &Path,
    ) -> Result<(), HubError> {
        let mut part = OsString::from(blob.as_os_str());
        part.push(".incomplete");
        let part = PathBuf::from(part);
        let io = |source| HubError::Io {
            path: part.clone(),
            source,
        };
        fs::create_dir_all(part.parent().expect("blobs/ has a parent")).map_err(io)?;
        let mut start = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if size.is_some_and(|s| start > s) {
            start = 0;
        }
        let mut req = self
            .auth(self.agent.get(url), url)
            .header("Accept-Encoding", "identity");
        if start > 0 {
            req = req.header("Range", format!("bytes={start}-"));
        }
        let resp = self.check(req.call(), url, Some(file))?;
        let status = resp.status().as_u16();
        // 206: the server continues where we stopped; 200: it sends everything, so start over.
        let resumed = status == 206
            && resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|r| r.starts_with(&format!("bytes {start}-")));
        if !resumed {
            start = 0;
            if status == 206 {
                return Err(HubError::BadResponse {
                    url: url.into(),
                    reason: "206 Partial Content for a range we did not ask for".into(),
                });
            }
        }
        let mut out = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&part)
            .map_err(io)?;
        let bar = self.bar(file, size, start);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = start;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // What arrived stays in the .incomplete file for the next run.
                    bar.abandon();
                    return Err(HubError::Truncated {
                        url: url.into(),
                        got,
                        expected: size.map_or("?".into(), |s| s.to_string()),
                        cause: Some(e.to_string()),
                    });
                }
            };
            got += n as u64;
            if size.is_some_and(|s| got > s) {
                bar.abandon();
                return Err(HubError::BadResponse {
                    url: url.into(),
                    reason: format!("more than the announced {} bytes", size.unwrap_or(0)),
                });
            }
            out.write_all(&buf[..n]).map_err(io)?;
            bar.set_position(got);
        }
        out.sync_all().map_err(io)?;
        drop(out);
        if let Some(expected) = size.filter(|&s| got != s) {
            bar.abandon();
            return Err(HubError::Truncated {
                url: url.into(),
                got,
                expected: expected.to_string(),
                cause: None,
            });
        }
        bar.finish();
        fs::rename(&part, blob).map_err(|source| HubError::Io {
            path: blob.into(),
            source,
        })
    }

    fn bar(&self, file: &str, size: Option<u64>, start: u64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = match size {
            Some(s) => ProgressBar::new(s),
            None => ProgressBar::no_length(),
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(file.to_string());
        bar.set_position(start);
        bar
    }
}

struct FileMeta {
    etag: String,
    size: Option<u64>,
    /// The CDN URL a redirect pointed to.
    location: Option<String>,
}

/// `snapshots/<commit>/<file>` → `../../blobs/<etag>` (one more `..` per folder in `file`); a copy where the
/// platform has no symlinks.
fn link(blob: &Path, pointer: &Path, file: &str) -> Result<(), HubError> {
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

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

fn same_origin(url: &str, endpoint: &str) -> bool {
    origin(url).eq_ignore_ascii_case(origin(endpoint))
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
