//! What a fetch is told: where the hub and its cache are (from the `HF_*` environment, as huggingface_hub reads
//! it), what to fetch ([`HubRequest`]), and whether a source names a Hub repository at all ([`is_hub_id`]).

use std::fs;
use std::path::PathBuf;

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

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
