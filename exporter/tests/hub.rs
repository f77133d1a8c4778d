//! `gemma-export ORG/NAME` against a mock Hugging Face Hub served by the test on 127.0.0.1 (`common/mock_hub.rs`).
//! Each test has its own `HF_HOME` and hub, and runs the real binary. LoRA (`--lora`) on a Hub id and on a Hub GGUF
//! file is checked to give the same export as on the local source.

mod common;

use common::mock_hub::{
    export, files_of, one_repo, resolve_requests, File, MockHub, Repo, GOOD_TOKEN,
};
use common::{fixtures, manifest, stderr, tiny_fixture as fixture};
use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

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

/// A hub address nobody listens on: for runs that must not need the hub.
const NO_HUB: &str = "http://127.0.0.1:9";

/// `gemma-export SRC -o OUT -q EXTRA…` with the hub at `hub`, `HF_HOME` = `home` and the extra environment `env`.
fn export_q(
    hub: &str,
    home: &Path,
    src: &str,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut args = vec![src, "-o", out.to_str().unwrap(), "-q"];
    args.extend_from_slice(extra);
    export(hub, home, &args, env)
}

/// Exports the local folder `dir` to `out`, needing no hub.
fn export_local(dir: &Path, out: &Path) {
    assert_ok(&export_q(NO_HUB, out, dir.to_str().unwrap(), out, &[], &[]));
}

const COMMIT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
const COMMIT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2";
const SINGLE: &str = "gqa-f16-hf5";
const SHARDED: &str = "gqa-bf16-sharded-hf4";

#[test]
fn download_exports_the_same_model_as_the_local_folder() {
    let hub = one_repo(
        "google/tiny-gemma",
        Repo::single(COMMIT_A, &fixture(SINGLE)),
    );
    let tmp = tempfile::tempdir().unwrap();
    let [home, out, local] = ["hf", "out", "local"].map(|n| tmp.path().join(n));
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
    let adapter = fixtures().join("lora/rslora");
    let tmp = tempfile::tempdir().unwrap();
    let [home, out, local, plain] = ["hf", "out", "local", "plain"].map(|n| tmp.path().join(n));
    let lora = ["--lora", adapter.to_str().unwrap()];
    let local_src = fixture(SINGLE);
    let local_src = local_src.to_str().unwrap();
    assert_ok(&export_q(
        &hub.url,
        &home,
        "google/tiny-gemma",
        &out,
        &lora,
        &[],
    ));
    assert_ok(&export_q(NO_HUB, &home, local_src, &local, &lora, &[]));
    assert_same_export(&out, &local);

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
    let gguf = fixtures().join("gguf/gemma3/model.gguf");
    let adapter = fixtures().join("lora/gguf-gemma3");
    let files = vec![
        File::new("README.md", b"# tiny GGUF".to_vec()),
        File::new("tiny-gemma3-BF16.gguf", std::fs::read(&gguf).unwrap()),
    ];
    let hub = one_repo(
        "someone/tiny-gemma3-GGUF",
        Repo::with_files(COMMIT_A, files),
    );
    let tmp = tempfile::tempdir().unwrap();
    let [home, out, local] = ["hf", "out", "local"].map(|n| tmp.path().join(n));
    let lora = ["--lora", adapter.to_str().unwrap()];
    let id = "someone/tiny-gemma3-GGUF";
    assert_ok(&export_q(&hub.url, &home, id, &out, &lora, &[]));
    assert_ok(&export_q(
        NO_HUB,
        &home,
        gguf.to_str().unwrap(),
        &local,
        &lora,
        &[],
    ));
    assert_same_export(&out, &local);
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
    let id = "google/tiny-gemma";
    assert_ok(&export_q(
        &hub.url,
        &home,
        id,
        Path::new(&out("one")),
        &[],
        &[],
    ));
    assert!(!resolve_requests(&hub.seen()).is_empty());

    hub.clear();
    assert_ok(&export_q(
        &hub.url,
        &home,
        id,
        Path::new(&out("two")),
        &[],
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
    let run = export_q(NO_HUB, &home, id, Path::new(&out("down")), &[], &[]);
    assert_ok(&run);
    assert!(stderr(&run)
        .contains("warning: http://127.0.0.1:9/api/models/google/tiny-gemma/revision/main"));
    assert_same_export(Path::new(&out("one")), Path::new(&out("down")));

    // Offline: nothing is asked of the hub (here: a port nobody listens on).
    hub.clear();
    let offline = [("HF_HUB_OFFLINE", "1")];
    assert_ok(&export_q(
        NO_HUB,
        &home,
        id,
        Path::new(&out("three")),
        &[],
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
    let [home, out, local] = ["hf", "out", "local"].map(|n| tmp.path().join(n));
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
        NO_HUB,
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
    let [home, out, local] = ["hf", "out", "local"].map(|n| tmp.path().join(n));
    let id = "google/tiny-gemma";
    let v1 = ["--revision", "v1"];
    let run = export_q(&hub.url, &home, id, &out, &v1, &[]);
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
    let at_commit = ["--revision", COMMIT_B];
    assert_ok(&export_q(&hub.url, &home, id, &out2, &at_commit, &[]));
    assert!(resolve_requests(&hub.seen()).is_empty());
    assert_same_export(&out, &out2);

    // Offline, the tag is found in refs/ with all its shards; a shard gone from the snapshot is named.
    let out3 = tmp.path().join("out3");
    let offline = [("HF_HUB_OFFLINE", "1")];
    assert_ok(&export_q(NO_HUB, &home, id, &out3, &v1, &offline));
    assert_same_export(&out, &out3);
    let shard = "model-00003-of-00004.safetensors";
    std::fs::remove_file(repo_dir.join("snapshots").join(COMMIT_B).join(shard)).unwrap();
    let out4 = tmp.path().join("out4");
    let run = export_q(NO_HUB, &home, id, &out4, &v1, &offline);
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
    let file = |name: &str, bytes: &[u8]| File::new(name, bytes.to_vec());
    let q4 = file("tiny-Q4_K_M.gguf", b"GGUF q4 bytes");
    let q8 = file("tiny-Q8_0.gguf", b"GGUF q8 bytes");
    let files = vec![file("README.md", b"# GGUF"), q4, q8.clone()];
    let hub = one_repo("someone/tiny-GGUF", Repo::with_files(COMMIT_A, files));
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
