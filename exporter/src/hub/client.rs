//! One repository at one revision on the hub: the HTTP agents, the listing request, and the mapping of a refused
//! answer to a [`HubError`] that says what to do. The cache and download steps are `impl Hub` blocks in
//! `cache.rs` and `download.rs`.

use super::names::{encode_segment, same_origin};
use super::select::RepoInfo;
use super::{HubEnv, HubError};
use std::path::PathBuf;
use std::time::Duration;

/// One repository at one revision, with the HTTP agents and the cache paths.
pub(super) struct Hub<'a> {
    pub(super) repo: &'a str,
    pub(super) revision: &'a str,
    pub(super) env: &'a HubEnv,
    pub(super) progress: bool,
    /// Follows redirects (sending the token only to the hub's own host): listings and downloads.
    pub(super) agent: ureq::Agent,
    /// Follows none, so a HEAD on `resolve/` shows the hub's own headers (commit, ETag, size) rather than a CDN's.
    pub(super) no_redirect: ureq::Agent,
}

impl<'a> Hub<'a> {
    pub(super) fn new(
        repo: &'a str,
        revision: &'a str,
        env: &'a HubEnv,
        progress: bool,
    ) -> Hub<'a> {
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

    pub(super) fn repo_dir(&self) -> PathBuf {
        self.env
            .cache
            .join(format!("models--{}", self.repo.replace('/', "--")))
    }

    pub(super) fn list_url(&self) -> String {
        format!(
            "{}/api/models/{}/revision/{}",
            self.env.endpoint,
            self.repo,
            encode_segment(self.revision)
        )
    }

    /// Adds the token when `url` is on the hub's own host (never to a CDN).
    pub(super) fn auth<B>(
        &self,
        req: ureq::RequestBuilder<B>,
        url: &str,
    ) -> ureq::RequestBuilder<B> {
        match &self.env.token {
            Some(t) if same_origin(url, &self.env.endpoint) => {
                req.header("Authorization", format!("Bearer {}", t.value))
            }
            _ => req,
        }
    }

    pub(super) fn list(&self) -> Result<RepoInfo, HubError> {
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
    pub(super) fn check(
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
}
