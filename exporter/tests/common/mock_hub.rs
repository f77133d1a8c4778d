//! A mock Hugging Face Hub on 127.0.0.1 for `exporter/tests/hub.rs`.
//!
//! It answers as huggingface.co does: the listing API (`/api/models/{repo}/revision/{rev}`), and `resolve/` with
//! `X-Repo-Commit` and `ETag`; safetensors files are "LFS" files whose `resolve/` redirects (302) to a second
//! server standing for the CDN, with `X-Linked-Etag`/`X-Linked-Size`, and the CDN honours `Range`. Errors carry
//! `X-Error-Code` as the real hub's do. Every request is recorded ([`MockHub::seen`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// The token a gated repository accepts.
pub const GOOD_TOKEN: &str = "hf_good";

/// One file of a commit, with the ETag the hub gives it.
#[derive(Clone)]
pub struct File {
    pub name: String,
    pub bytes: Arc<Vec<u8>>,
    pub etag: String,
}

impl File {
    pub fn new(name: &str, bytes: Vec<u8>) -> File {
        File {
            name: name.into(),
            etag: etag(&bytes),
            bytes: Arc::new(bytes),
        }
    }
}

pub fn etag(bytes: &[u8]) -> String {
    let mut out = String::new();
    for seed in 0..4u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut h);
        bytes.hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Every file of a fixture folder (reference.safetensors too: the exporter must not fetch it).
pub fn files_of(dir: &Path) -> Vec<File> {
    let mut files: Vec<File> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            File::new(name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.push(File::new("README.md", b"# tiny Gemma\n".to_vec()));
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

#[derive(Clone, Default)]
pub struct Repo {
    /// branch or tag → commit
    pub refs: HashMap<String, String>,
    /// commit → files
    pub commits: HashMap<String, Vec<File>>,
    /// Files need `Authorization: Bearer hf_good`.
    pub gated: bool,
    /// Listed, but `resolve/` answers 404.
    pub missing: Vec<String>,
}

impl Repo {
    /// `main` at `commit`, which holds `files`.
    pub fn with_files(commit: &str, files: Vec<File>) -> Repo {
        let mut r = Repo::default();
        r.refs.insert("main".into(), commit.into());
        r.commits.insert(commit.into(), files);
        r
    }

    /// `main` at `commit`, which holds the files of the folder `dir` ([`files_of`]).
    pub fn single(commit: &str, dir: &Path) -> Repo {
        Repo::with_files(commit, files_of(dir))
    }

    /// The commit a branch, a tag or a commit id names.
    fn commit(&self, rev: &str) -> Option<String> {
        self.refs
            .get(rev)
            .cloned()
            .or_else(|| self.commits.contains_key(rev).then(|| rev.to_string()))
    }
}

/// A request the mock saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `hub` or `cdn`.
    pub server: &'static str,
    pub method: String,
    pub url: String,
    pub range: Option<String>,
    pub auth: Option<String>,
}

pub struct MockHub {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    servers: Vec<Arc<tiny_http::Server>>,
}

impl Drop for MockHub {
    fn drop(&mut self) {
        for s in &self.servers {
            s.unblock();
        }
    }
}

fn header(req: &tiny_http::Request, name: &str) -> Option<String> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.to_string())
}

fn h(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap()
}

fn error(status: u16, code: &str, message: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_data(message.as_bytes().to_vec())
        .with_status_code(status)
        .with_header(h("X-Error-Code", code))
        .with_header(h("X-Error-Message", message))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

impl MockHub {
    pub fn start(repos: HashMap<String, Repo>) -> MockHub {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hub = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let cdn = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}", hub.server_addr().to_ip().unwrap());
        let cdn_url = format!("http://{}", cdn.server_addr().to_ip().unwrap());
        let blobs: HashMap<String, Arc<Vec<u8>>> = repos
            .values()
            .flat_map(|r| r.commits.values().flatten())
            .map(|f| (f.etag.clone(), f.bytes.clone()))
            .collect();

        let log = |server: &'static str, req: &tiny_http::Request, seen: &Mutex<Vec<Seen>>| {
            seen.lock().unwrap().push(Seen {
                server,
                method: req.method().to_string(),
                url: req.url().to_string(),
                range: header(req, "Range"),
                auth: header(req, "Authorization"),
            });
        };

        let (s, sv) = (seen.clone(), hub.clone());
        std::thread::spawn(move || {
            for req in sv.incoming_requests() {
                log("hub", &req, &s);
                let resp = hub_answer(&req, &repos, &cdn_url);
                let _ = req.respond(resp);
            }
        });
        let (s, sv) = (seen.clone(), cdn.clone());
        std::thread::spawn(move || {
            for req in sv.incoming_requests() {
                log("cdn", &req, &s);
                let etag = req.url().trim_start_matches("/blobs/").to_string();
                let resp = match blobs.get(&etag) {
                    None => error(404, "", "no such blob"),
                    Some(bytes) => ranged(&req, bytes),
                };
                let _ = req.respond(resp);
            }
        });
        MockHub {
            url,
            seen,
            servers: vec![hub, cdn],
        }
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// The body, or the part a `Range: bytes=N-` asks for (206 with `Content-Range`).
fn ranged(req: &tiny_http::Request, bytes: &[u8]) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let start = header(req, "Range")
        .and_then(|r| r.strip_prefix("bytes=").map(str::to_string))
        .and_then(|r| r.strip_suffix('-').map(str::to_string))
        .map(|n| n.parse::<usize>().unwrap());
    match start {
        Some(n) if n < bytes.len() => tiny_http::Response::from_data(bytes[n..].to_vec())
            .with_status_code(206)
            .with_header(h(
                "Content-Range",
                &format!("bytes {n}-{}/{}", bytes.len() - 1, bytes.len()),
            )),
        Some(_) => error(416, "", "range not satisfiable"),
        None => tiny_http::Response::from_data(bytes.to_vec()),
    }
}

fn hub_answer(
    req: &tiny_http::Request,
    repos: &HashMap<String, Repo>,
    cdn: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let url = req.url().to_string();
    let parts: Vec<&str> = url.trim_start_matches('/').split('/').collect();
    // /api/models/{org}/{name}/revision/{rev}
    if parts.len() == 6 && parts[0] == "api" && parts[1] == "models" && parts[4] == "revision" {
        let id = format!("{}/{}", parts[2], parts[3]);
        let Some(repo) = repos.get(&id) else {
            return error(404, "RepoNotFound", "Repository not found");
        };
        let rev = percent_decode(parts[5]);
        let Some(commit) = repo.commit(&rev) else {
            return error(404, "RevisionNotFound", "Invalid rev id");
        };
        let siblings: Vec<_> = repo.commits[&commit]
            .iter()
            .map(|f| serde_json::json!({ "rfilename": f.name }))
            .collect();
        let body = serde_json::json!({ "id": id, "sha": commit, "siblings": siblings, "gated": repo.gated });
        return tiny_http::Response::from_data(body.to_string().into_bytes())
            .with_header(h("Content-Type", "application/json"));
    }
    // /{org}/{name}/resolve/{rev}/{file}
    if parts.len() >= 5 && parts[2] == "resolve" {
        let id = format!("{}/{}", parts[0], parts[1]);
        let Some(repo) = repos.get(&id) else {
            return error(404, "RepoNotFound", "Repository not found");
        };
        if repo.gated
            && header(req, "Authorization").as_deref() != Some(&format!("Bearer {GOOD_TOKEN}"))
        {
            return error(
                401,
                "GatedRepo",
                &format!("Access to model {id} is restricted. You must have access to it and be authenticated to access it. Please log in."),
            );
        }
        let rev = percent_decode(parts[3]);
        let Some(commit) = repo.commit(&rev) else {
            return error(404, "RevisionNotFound", "Invalid rev id");
        };
        let name = percent_decode(&parts[4..].join("/"));
        let file = repo.commits[&commit].iter().find(|f| f.name == name);
        let Some(file) = file.filter(|_| !repo.missing.contains(&name)) else {
            return error(404, "EntryNotFound", "Entry not found");
        };
        if name.ends_with(".safetensors") {
            // An LFS file: the hub redirects to the CDN and says what is there.
            return tiny_http::Response::from_data(Vec::new())
                .with_status_code(302)
                .with_header(h("Location", &format!("{cdn}/blobs/{}", file.etag)))
                .with_header(h("X-Repo-Commit", &commit))
                .with_header(h("X-Linked-Etag", &format!("\"{}\"", file.etag)))
                .with_header(h("X-Linked-Size", &file.bytes.len().to_string()));
        }
        return ranged(req, &file.bytes)
            .with_header(h("X-Repo-Commit", &commit))
            .with_header(h("ETag", &format!("\"{}\"", file.etag)));
    }
    error(404, "", "not found")
}

/// Runs gemma-export with the hub at `hub`, `HF_HOME` = `home` and the given extra environment.
pub fn export(hub: &str, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gemma-export"));
    cmd.args(args).env("HF_ENDPOINT", hub).env("HF_HOME", home);
    for var in [
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A hub holding one repository.
pub fn one_repo(id: &str, repo: Repo) -> MockHub {
    MockHub::start(HashMap::from([(id.to_string(), repo)]))
}

/// The requests for files: `resolve/` on the hub and everything on the CDN.
pub fn resolve_requests(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| s.server == "cdn" || s.url.contains("/resolve/"))
        .collect()
}
