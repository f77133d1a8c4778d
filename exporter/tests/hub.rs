//! `gemma-export ORG/NAME` against a mock Hugging Face Hub served by the test on 127.0.0.1.
//!
//! The mock answers as huggingface.co does: the listing API (`/api/models/{repo}/revision/{rev}`), and `resolve/`
//! with `X-Repo-Commit` and `ETag`; safetensors files are "LFS" files whose `resolve/` redirects (302) to a second
//! server standing for the CDN, with `X-Linked-Etag`/`X-Linked-Size`, and the CDN honours `Range`. Errors carry
//! `X-Error-Code` as the real hub's do. Each test has its own `HF_HOME` and hub, and runs the real binary.
//! LoRA (`--lora`) on a Hub id and on a Hub GGUF file is checked to give the same export as on the local source.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const GOOD_TOKEN: &str = "hf_good";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny")
        .join(name)
}

/// One file of a commit, with the ETag the hub gives it.
#[derive(Clone)]
struct File {
    name: String,
    bytes: Arc<Vec<u8>>,
    etag: String,
}

fn etag(bytes: &[u8]) -> String {
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
fn files_of(dir: &Path) -> Vec<File> {
    let mut files: Vec<File> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            File {
                name: p.file_name().unwrap().to_str().unwrap().to_string(),
                etag: etag(&bytes),
                bytes: Arc::new(bytes),
            }
        })
        .collect();
    files.push(File {
        name: "README.md".into(),
        bytes: Arc::new(b"# tiny Gemma\n".to_vec()),
        etag: etag(b"# tiny Gemma\n"),
    });
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

#[derive(Clone, Default)]
struct Repo {
    /// branch or tag → commit
    refs: HashMap<String, String>,
    /// commit → files
    commits: HashMap<String, Vec<File>>,
    /// Files need `Authorization: Bearer hf_good`.
    gated: bool,
    /// Listed, but `resolve/` answers 404.
    missing: Vec<String>,
}

impl Repo {
    fn single(commit: &str, dir: &Path) -> Repo {
        let mut r = Repo::default();
        r.refs.insert("main".into(), commit.into());
        r.commits.insert(commit.into(), files_of(dir));
        r
    }
}

/// A request the mock saw.
#[derive(Clone, Debug)]
struct Seen {
    server: &'static str,
    method: String,
    url: String,
    range: Option<String>,
    auth: Option<String>,
}

struct MockHub {
    url: String,
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
    fn start(repos: HashMap<String, Repo>) -> MockHub {
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

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn clear(&self) {
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
        let Some(commit) = repo
            .refs
            .get(&rev)
            .cloned()
            .or_else(|| repo.commits.contains_key(&rev).then(|| rev.clone()))
        else {
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
        let Some(commit) = repo
            .refs
            .get(&rev)
            .cloned()
            .or_else(|| repo.commits.contains_key(&rev).then(|| rev.clone()))
        else {
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
fn export(hub: &str, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "gemma-export failed:\n{}",
        stderr(out)
    );
}

/// model.onnx and model.onnx_data of two exports are byte for byte the same.
fn assert_same_export(a: &Path, b: &Path) {
    for f in ["model.onnx", "model.onnx_data"] {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(
            x == y,
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

fn export_local(dir: &Path, out: &Path) {
    assert_ok(&export(
        "http://127.0.0.1:9",
        out,
        &[dir.to_str().unwrap(), "-o", out.to_str().unwrap(), "-q"],
        &[],
    ));
}

const COMMIT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
const COMMIT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2";
const SINGLE: &str = "gqa-f16-hf5";
const SHARDED: &str = "gqa-bf16-sharded-hf4";

fn one_repo(id: &str, repo: Repo) -> MockHub {
    MockHub::start(HashMap::from([(id.to_string(), repo)]))
}

fn resolve_requests(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| s.server == "cdn" || s.url.contains("/resolve/"))
        .collect()
}

#[test]
fn download_exports_the_same_model_as_the_local_folder() {
    let hub = one_repo(
        "google/tiny-gemma",
        Repo::single(COMMIT_A, &fixture(SINGLE)),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (home, out, local) = (
        tmp.path().join("hf"),
        tmp.path().join("out"),
        tmp.path().join("local"),
    );
    // Without -q: the progress bars run too (drawn nowhere, stderr is not a terminal).
    let run = export(
        &hub.url,
        &home,
        &["google/tiny-gemma", "-o", out.to_str().unwrap()],
        &[],
    );
    assert_ok(&run);
    export_local(&fixture(SINGLE), &local);
    assert_same_export(&out, &local);

    // huggingface_hub's layout: refs/main → commit, snapshots/<commit>/<file> → ../../blobs/<etag>.
    let repo_dir = home.join("hub/models--google--tiny-gemma");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT_A
    );
    let files = files_of(&fixture(SINGLE));
    for name in ["config.json", "generation_config.json", "model.safetensors"] {
        let f = files.iter().find(|f| f.name == name).unwrap();
        let pointer = repo_dir.join("snapshots").join(COMMIT_A).join(name);
        let target = std::fs::read_link(&pointer).unwrap();
        assert_eq!(target, Path::new("../../blobs").join(&f.etag), "{name}");
        assert_eq!(std::fs::read(&pointer).unwrap(), *f.bytes, "{name}");
    }
    // Only what the export needs: no README, no reference.safetensors, no leftovers.
    let snapshot: Vec<String> = std::fs::read_dir(repo_dir.join("snapshots").join(COMMIT_A))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(snapshot.len(), 3, "{snapshot:?}");
    for e in std::fs::read_dir(repo_dir.join("blobs")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(!name.ends_with(".incomplete"), "{name}");
    }
    // The weights came from the CDN with no token (none was set) and no Range (nothing to resume).
    let seen = hub.seen();
    let cdn: Vec<_> = seen.iter().filter(|s| s.server == "cdn").collect();
    assert_eq!(cdn.len(), 1, "{seen:#?}");
    assert!(cdn[0].range.is_none() && cdn[0].auth.is_none(), "{cdn:?}");
    assert_eq!(cdn[0].method, "GET");
    // The hub is asked once per file: a HEAD for its commit, ETag and size (small files then a GET).
    let heads = seen.iter().filter(|s| s.method == "HEAD").count();
    assert_eq!(heads, 3, "{seen:#?}");
}

/// LoRA on a Hub source: `gemma-export ORG/NAME --lora DIR` merges a local adapter into the downloaded weights
/// exactly as into the same checkpoint in a local folder (the `rslora` adapter of tests/fixtures/lora/, made by peft
/// for this checkpoint; its parity with peft's merged model is tests/tests/lora.rs's).
#[test]
fn lora_on_a_hub_id_equals_lora_on_the_local_folder() {
    let hub = one_repo(
        "google/tiny-gemma",
        Repo::single(COMMIT_A, &fixture(SINGLE)),
    );
    let adapter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lora/rslora");
    let tmp = tempfile::tempdir().unwrap();
    let (home, out, local, plain) = (
        tmp.path().join("hf"),
        tmp.path().join("out"),
        tmp.path().join("local"),
        tmp.path().join("plain"),
    );
    let lora = ["--lora", adapter.to_str().unwrap(), "-q"];
    let args = |src: &str, out: &Path| {
        let mut a = vec![src.to_string(), "-o".into(), out.to_str().unwrap().into()];
        a.extend(lora.iter().map(|s| s.to_string()));
        a
    };
    let run = |hub: &str, a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        export(hub, &home, &a, &[])
    };
    assert_ok(&run(&hub.url, args("google/tiny-gemma", &out)));
    assert_ok(&run(
        "http://127.0.0.1:9",
        args(fixture(SINGLE).to_str().unwrap(), &local),
    ));
    assert_same_export(&out, &local);

    let manifest = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("gemma-onnx.json")).unwrap())
            .unwrap()
    };
    let (from_hub, from_folder) = (
        manifest(&out)["lora"].clone(),
        manifest(&local)["lora"].clone(),
    );
    assert_eq!(from_hub, from_folder);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.join("fixture.json")).unwrap())
            .unwrap();
    assert_eq!(
        from_hub["merged_modules"], expected["merged_modules"],
        "{from_hub}"
    );
    assert_eq!(from_hub["use_rslora"], true, "{from_hub}");

    // The adapter is not a no-op here: without it the weights differ.
    export_local(&fixture(SINGLE), &plain);
    assert!(
        std::fs::read(out.join("model.onnx_data")).unwrap()
            != std::fs::read(plain.join("model.onnx_data")).unwrap(),
        "the merged export has the plain model's weights"
    );
}

/// LoRA on a GGUF file from the Hub: a repository holding only the tiny Gemma 3 GGUF of tests/fixtures/gguf/gemma3
/// (its only `.gguf`, so it is picked without `--gguf-file`), exported with `--lora` on the adapter peft made for
/// that model, gives the same export as the local file with the same adapter.
#[test]
fn lora_on_a_hub_gguf_equals_lora_on_the_local_gguf() {
    let gguf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf/gemma3/model.gguf");
    let adapter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lora/gguf-gemma3");
    let bytes = std::fs::read(&gguf).unwrap();
    let mut repo = Repo::default();
    repo.refs.insert("main".into(), COMMIT_A.into());
    repo.commits.insert(
        COMMIT_A.into(),
        vec![
            File {
                name: "README.md".into(),
                bytes: Arc::new(b"# tiny GGUF".to_vec()),
                etag: etag(b"# tiny GGUF"),
            },
            File {
                name: "tiny-gemma3-BF16.gguf".into(),
                etag: etag(&bytes),
                bytes: Arc::new(bytes),
            },
        ],
    );
    let hub = one_repo("someone/tiny-gemma3-GGUF", repo);
    let tmp = tempfile::tempdir().unwrap();
    let (home, out, local) = (
        tmp.path().join("hf"),
        tmp.path().join("out"),
        tmp.path().join("local"),
    );
    let run = |hub: &str, src: &str, out: &Path| {
        let args = [
            src,
            "-o",
            out.to_str().unwrap(),
            "--lora",
            adapter.to_str().unwrap(),
            "-q",
        ];
        export(hub, &home, &args, &[])
    };
    assert_ok(&run(&hub.url, "someone/tiny-gemma3-GGUF", &out));
    assert_ok(&run("http://127.0.0.1:9", gguf.to_str().unwrap(), &local));
    assert_same_export(&out, &local);
    let manifest = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("gemma-onnx.json")).unwrap())
            .unwrap()
    };
    let from_hub = manifest(&out);
    assert_eq!(from_hub["source_format"], "gguf");
    assert_eq!(from_hub["lora"], manifest(&local)["lora"]);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.join("fixture.json")).unwrap())
            .unwrap();
    assert_eq!(
        from_hub["lora"]["merged_modules"], expected["merged_modules"],
        "{from_hub}"
    );
}

#[test]
fn second_run_uses_the_cache_and_offline_mode_needs_no_hub() {
    let hub = one_repo(
        "google/tiny-gemma",
        Repo::single(COMMIT_A, &fixture(SINGLE)),
    );
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let out = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    assert_ok(&export(
        &hub.url,
        &home,
        &["google/tiny-gemma", "-o", &out("one"), "-q"],
        &[],
    ));
    assert!(!resolve_requests(&hub.seen()).is_empty());

    hub.clear();
    assert_ok(&export(
        &hub.url,
        &home,
        &["google/tiny-gemma", "-o", &out("two"), "-q"],
        &[],
    ));
    let seen = hub.seen();
    assert!(
        resolve_requests(&seen).is_empty(),
        "files were requested again: {seen:#?}"
    );
    assert_eq!(seen.len(), 1, "only the listing: {seen:#?}");
    assert!(seen[0]
        .url
        .starts_with("/api/models/google/tiny-gemma/revision/main"));
    assert_same_export(Path::new(&out("one")), Path::new(&out("two")));

    // The hub unreachable: the cached snapshot of the revision is used, with a warning that names the URL.
    let run = export(
        "http://127.0.0.1:9",
        &home,
        &["google/tiny-gemma", "-o", &out("down"), "-q"],
        &[],
    );
    assert_ok(&run);
    assert!(stderr(&run)
        .contains("warning: http://127.0.0.1:9/api/models/google/tiny-gemma/revision/main"));
    assert_same_export(Path::new(&out("one")), Path::new(&out("down")));

    // Offline: nothing is asked of the hub (here: a port nobody listens on).
    hub.clear();
    let offline = [("HF_HUB_OFFLINE", "1")];
    assert_ok(&export(
        "http://127.0.0.1:9",
        &home,
        &["google/tiny-gemma", "-o", &out("three"), "-q"],
        &offline,
    ));
    assert_same_export(Path::new(&out("one")), Path::new(&out("three")));
    // Offline, a revision never downloaded is refused by name.
    let run = export(
        &hub.url,
        &home,
        &["google/tiny-gemma", "-o", &out("four"), "--revision", "v1"],
        &offline,
    );
    assert!(!run.status.success());
    let err = stderr(&run);
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.contains("google/tiny-gemma at revision v1"),
        "{err}"
    );
    assert!(
        hub.seen().is_empty(),
        "offline runs asked the hub: {:#?}",
        hub.seen()
    );
}

#[test]
fn a_partial_download_is_resumed_with_a_range_request() {
    let hub = one_repo(
        "google/tiny-gemma",
        Repo::single(COMMIT_A, &fixture(SINGLE)),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (home, out, local) = (
        tmp.path().join("hf"),
        tmp.path().join("out"),
        tmp.path().join("local"),
    );
    let weights = files_of(&fixture(SINGLE))
        .into_iter()
        .find(|f| f.name == "model.safetensors")
        .unwrap();
    // What an interrupted run leaves: the first bytes in blobs/<etag>.incomplete.
    let blobs = home.join("hub/models--google--tiny-gemma/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let have = weights.bytes.len() / 3;
    std::fs::write(
        blobs.join(format!("{}.incomplete", weights.etag)),
        &weights.bytes[..have],
    )
    .unwrap();

    assert_ok(&export(
        &hub.url,
        &home,
        &["google/tiny-gemma", "-o", out.to_str().unwrap(), "-q"],
        &[],
    ));
    let seen = hub.seen();
    let cdn: Vec<_> = seen.iter().filter(|s| s.server == "cdn").collect();
    assert_eq!(cdn.len(), 1, "{seen:#?}");
    assert_eq!(
        cdn[0].range.as_deref(),
        Some(format!("bytes={have}-").as_str())
    );
    assert_eq!(
        std::fs::read(blobs.join(&weights.etag)).unwrap(),
        *weights.bytes
    );
    assert!(!blobs.join(format!("{}.incomplete", weights.etag)).exists());
    export_local(&fixture(SINGLE), &local);
    assert_same_export(&out, &local);
}

#[test]
fn gated_repo_needs_a_token_sent_as_bearer() {
    let mut repo = Repo::single(COMMIT_A, &fixture(SINGLE));
    repo.gated = true;
    let hub = one_repo("google/gated-gemma", repo);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let out = tmp.path().join("out");
    let args = ["google/gated-gemma", "-o", out.to_str().unwrap(), "-q"];

    // No token: the access message, a failure, nothing in OUT (nor its temporary folder), no blob.
    let run = export(&hub.url, &home, &args, &[]);
    assert!(!run.status.success());
    let err = stderr(&run);
    for part in [
        "google/gated-gemma",
        "HTTP 401",
        "accept the licence",
        "settings/tokens",
        "HF_TOKEN",
        "is restricted",
    ] {
        assert!(err.contains(part), "{part:?} missing from:\n{err}");
    }
    assert!(std::fs::read_dir(tmp.path())
        .unwrap()
        .all(|e| e.unwrap().file_name() == "hf"));
    let blobs = home.join("hub/models--google--gated-gemma/blobs");
    assert!(!blobs.exists() || std::fs::read_dir(&blobs).unwrap().next().is_none());

    // A wrong token: told which token was refused.
    let run = export(&hub.url, &home, &args, &[("HF_TOKEN", "hf_wrong")]);
    assert!(!run.status.success());
    let err = stderr(&run);
    assert!(err.contains("with the token from HF_TOKEN"), "{err}");
    assert!(!err.contains("hf_wrong"), "the token was printed:\n{err}");
    assert!(!out.exists());

    // The right token: every hub request carries it as a bearer token, the CDN never sees it.
    hub.clear();
    assert_ok(&export(&hub.url, &home, &args, &[("HF_TOKEN", GOOD_TOKEN)]));
    let seen = hub.seen();
    let bearer = format!("Bearer {GOOD_TOKEN}");
    assert!(
        seen.iter()
            .filter(|s| s.server == "hub")
            .all(|s| s.auth.as_deref() == Some(bearer.as_str())),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .filter(|s| s.server == "cdn")
            .all(|s| s.auth.is_none()),
        "{seen:#?}"
    );
    assert!(seen.iter().any(|s| s.server == "cdn"));

    // The token file in HF_HOME, as `hf auth login` writes it, works the same (fresh cache, fresh output).
    let home2 = tmp.path().join("hf2");
    std::fs::create_dir_all(&home2).unwrap();
    std::fs::write(home2.join("token"), format!("{GOOD_TOKEN}\n")).unwrap();
    let out2 = tmp.path().join("out2");
    hub.clear();
    assert_ok(&export(
        &hub.url,
        &home2,
        &["google/gated-gemma", "-o", out2.to_str().unwrap(), "-q"],
        &[],
    ));
    assert!(hub
        .seen()
        .iter()
        .any(|s| s.url.contains("/resolve/") && s.auth.as_deref() == Some(bearer.as_str())));
    assert_same_export(&out, &out2);
}

#[test]
fn missing_repo_revision_and_file_are_named() {
    let mut broken = Repo::single(COMMIT_A, &fixture(SINGLE));
    broken.missing.push("model.safetensors".into());
    let hub = MockHub::start(HashMap::from([
        (
            "google/tiny-gemma".to_string(),
            Repo::single(COMMIT_A, &fixture(SINGLE)),
        ),
        ("google/broken".to_string(), broken),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let out = tmp.path().join("out");
    let fail = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-o", out.to_str().unwrap(), "-q"]);
        let run = export(&hub.url, &home, &all, &[]);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert!(!out.exists());
        stderr(&run)
    };
    let err = fail(&["google/nope"]);
    assert!(
        err.contains("repository google/nope not found") && err.contains("HTTP 404"),
        "{err}"
    );
    let err = fail(&["google/tiny-gemma", "--revision", "v9"]);
    assert!(
        err.contains("revision \"v9\" not found in google/tiny-gemma"),
        "{err}"
    );
    let err = fail(&["google/broken"]);
    assert!(
        err.contains("file model.safetensors not found in google/broken at revision main"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "/google/broken/resolve/{COMMIT_A}/model.safetensors"
        )),
        "{err}"
    );
    // No hub at all (nothing cached): the error names the URL.
    let run = export(
        "http://127.0.0.1:9",
        &home,
        &["google/tiny-gemma", "-o", out.to_str().unwrap()],
        &[],
    );
    assert!(!run.status.success());
    let err = stderr(&run);
    assert!(
        err.contains("http://127.0.0.1:9/api/models/google/tiny-gemma/revision/main: "),
        "{err}"
    );
    // Not a local path and not org/name: said so, nothing asked of the hub.
    hub.clear();
    let err = fail(&["no-such-folder"]);
    assert!(
        err.contains("no-such-folder: no such file or folder, and not a Hugging Face Hub id"),
        "{err}"
    );
    assert!(hub.seen().is_empty());
}

#[test]
fn revision_resolves_to_that_commits_files() {
    // main is the single-file checkpoint; the tag v1 is another commit holding a sharded one.
    let mut repo = Repo::single(COMMIT_A, &fixture(SINGLE));
    repo.refs.insert("v1".into(), COMMIT_B.into());
    repo.commits
        .insert(COMMIT_B.into(), files_of(&fixture(SHARDED)));
    let hub = one_repo("google/tiny-gemma", repo);
    let tmp = tempfile::tempdir().unwrap();
    let (home, out, local) = (
        tmp.path().join("hf"),
        tmp.path().join("out"),
        tmp.path().join("local"),
    );
    let run = export(
        &hub.url,
        &home,
        &[
            "google/tiny-gemma",
            "-o",
            out.to_str().unwrap(),
            "-q",
            "--revision",
            "v1",
        ],
        &[],
    );
    assert_ok(&run);
    export_local(&fixture(SHARDED), &local);
    assert_same_export(&out, &local);

    let repo_dir = home.join("hub/models--google--tiny-gemma");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/v1")).unwrap(),
        COMMIT_B
    );
    assert!(!repo_dir.join("refs/main").exists());
    assert!(!repo_dir.join("snapshots").join(COMMIT_A).exists());
    // Every file was asked for at the commit the tag named, the shards the index lists among them.
    let seen = hub.seen();
    let resolves: Vec<_> = seen
        .iter()
        .filter(|s| s.url.contains("/resolve/"))
        .collect();
    assert!(
        resolves
            .iter()
            .all(|s| s.url.contains(&format!("/resolve/{COMMIT_B}/"))),
        "{resolves:#?}"
    );
    for shard in 1..=4 {
        let name = format!("model-0000{shard}-of-00004.safetensors");
        assert!(
            repo_dir
                .join("snapshots")
                .join(COMMIT_B)
                .join(&name)
                .is_file(),
            "{name}"
        );
    }
    assert!(
        !resolves.iter().any(|s| s.url.contains("reference")),
        "{resolves:#?}"
    );

    // The commit itself works as a revision too, and from the cache: no file is fetched again.
    hub.clear();
    let out2 = tmp.path().join("out2");
    assert_ok(&export(
        &hub.url,
        &home,
        &[
            "google/tiny-gemma",
            "-o",
            out2.to_str().unwrap(),
            "-q",
            "--revision",
            COMMIT_B,
        ],
        &[],
    ));
    assert!(resolve_requests(&hub.seen()).is_empty());
    assert_same_export(&out, &out2);

    // Offline, the tag is found in refs/ with all its shards; a shard gone from the snapshot is named.
    let out3 = tmp.path().join("out3");
    let offline = [("HF_HUB_OFFLINE", "1")];
    let args = [
        "google/tiny-gemma",
        "-o",
        out3.to_str().unwrap(),
        "-q",
        "--revision",
        "v1",
    ];
    assert_ok(&export("http://127.0.0.1:9", &home, &args, &offline));
    assert_same_export(&out, &out3);
    let shard = "model-00003-of-00004.safetensors";
    std::fs::remove_file(repo_dir.join("snapshots").join(COMMIT_B).join(shard)).unwrap();
    let out4 = tmp.path().join("out4");
    let args = [
        "google/tiny-gemma",
        "-o",
        out4.to_str().unwrap(),
        "-q",
        "--revision",
        "v1",
    ];
    let run = export("http://127.0.0.1:9", &home, &args, &offline);
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains(&format!("no {shard} in")),
        "{}",
        stderr(&run)
    );
}

#[test]
fn gguf_repo_gives_the_chosen_gguf_file() {
    // A repository of GGUF files only (as llama.cpp users publish them): --gguf-file picks one, and only that one
    // is downloaded; its path in the snapshot becomes SRC. The bytes are not a real GGUF, so the export itself
    // fails afterwards; what is checked here is the download.
    let file = |name: &str, bytes: &[u8]| File {
        name: name.into(),
        bytes: Arc::new(bytes.to_vec()),
        etag: etag(bytes),
    };
    let q4 = file("tiny-Q4_K_M.gguf", b"GGUF q4 bytes");
    let q8 = file("tiny-Q8_0.gguf", b"GGUF q8 bytes");
    let mut repo = Repo::default();
    repo.refs.insert("main".into(), COMMIT_A.into());
    repo.commits.insert(
        COMMIT_A.into(),
        vec![file("README.md", b"# GGUF"), q4, q8.clone()],
    );
    let hub = one_repo("someone/tiny-GGUF", repo);
    let tmp = tempfile::tempdir().unwrap();
    let (home, out) = (tmp.path().join("hf"), tmp.path().join("out"));
    let args = ["someone/tiny-GGUF", "-o", out.to_str().unwrap(), "-q"];

    let run = export(&hub.url, &home, &args, &[]);
    let err = stderr(&run);
    assert!(!run.status.success());
    assert!(
        err.contains("choose one with --gguf-file: tiny-Q4_K_M.gguf, tiny-Q8_0.gguf"),
        "{err}"
    );
    assert!(resolve_requests(&hub.seen()).is_empty());

    let mut with_choice = args.to_vec();
    with_choice.extend(["--gguf-file", "tiny-Q8_0.gguf"]);
    let run = export(&hub.url, &home, &with_choice, &[]);
    assert!(!run.status.success(), "not a real GGUF, yet exported");
    let pointer = home
        .join("hub/models--someone--tiny-GGUF/snapshots")
        .join(COMMIT_A)
        .join("tiny-Q8_0.gguf");
    assert_eq!(std::fs::read(&pointer).unwrap(), *q8.bytes);
    assert!(
        stderr(&run).contains(pointer.to_str().unwrap()),
        "{}",
        stderr(&run)
    );
    let seen = hub.seen();
    let files: Vec<_> = resolve_requests(&seen);
    assert!(
        files.iter().all(|s| s.url.ends_with("/tiny-Q8_0.gguf")),
        "{files:#?}"
    );
    assert!(!out.exists());
}
