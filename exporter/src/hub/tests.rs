//! Unit tests of the `hub` module.

use super::names::{
    check_file_name, encode_path, encode_segment, origin, safe_component, same_origin,
};
use super::*;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn hub_ids() {
    for ok in [
        "google/gemma-3-270m",
        "a/b",
        "org_1/model.v2",
        "Org-x/A_b.c",
    ] {
        assert!(is_hub_id(ok), "{ok}");
    }
    for bad in [
        "gemma",
        "/abs/path",
        "a/b/c",
        "./a",
        "a/../b",
        "a--b/c",
        "-a/b",
        "a/b.",
        "a/",
        "a b/c",
        "~/models",
        "C:\\models\\x",
    ] {
        assert!(!is_hub_id(bad), "{bad}");
    }
    assert!(!is_hub_id(&format!("org/{}", "x".repeat(100))));
}

#[test]
fn selects_side_files_and_single_weights_never_pickles() {
    let listing = names(&[
        ".gitattributes",
        "README.md",
        "config.json",
        "tokenizer.json",
        "tokenizer.model",
        "chat_template.jinja",
        "model.safetensors",
        "pytorch_model.bin",
        "original/consolidated.safetensors",
    ]);
    let sel = select_files("o/n", "main", &listing, None).unwrap();
    assert_eq!(
        sel,
        Selection::Safetensors {
            files: names(&[
                "config.json",
                "tokenizer.json",
                "tokenizer.model",
                "chat_template.jinja",
                "model.safetensors"
            ]),
            sharded: false
        }
    );
}

#[test]
fn selects_the_index_of_a_sharded_repo() {
    let listing = names(&[
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]);
    let sel = select_files("o/n", "main", &listing, None).unwrap();
    assert_eq!(
        sel,
        Selection::Safetensors {
            files: names(&["config.json", "model.safetensors.index.json"]),
            sharded: true
        }
    );
}

#[test]
fn gguf_repos_need_one_file_or_a_choice() {
    let one = names(&["README.md", "gemma-3-270m-Q4_K_M.gguf"]);
    assert_eq!(
        select_files("o/n", "main", &one, None).unwrap(),
        Selection::Gguf("gemma-3-270m-Q4_K_M.gguf".into())
    );
    let two = names(&["a-Q4_K_M.gguf", "q8/a-Q8_0.gguf"]);
    let err = select_files("o/n", "main", &two, None).unwrap_err();
    assert!(matches!(err, HubError::GgufChoice { .. }), "{err}");
    assert!(
        err.to_string().contains("a-Q4_K_M.gguf, q8/a-Q8_0.gguf"),
        "{err}"
    );
    assert_eq!(
        select_files("o/n", "main", &two, Some("a-Q8_0.gguf")).unwrap(),
        Selection::Gguf("q8/a-Q8_0.gguf".into())
    );
    let err = select_files("o/n", "main", &two, Some("b.gguf")).unwrap_err();
    assert!(err.to_string().contains("--gguf-file b.gguf"), "{err}");
}

#[test]
fn pickle_only_repos_are_refused() {
    let err = select_files(
        "o/n",
        "v1",
        &names(&["config.json", "pytorch_model.bin"]),
        None,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("o/n at revision v1") && msg.contains("pickle"),
        "{msg}"
    );
}

#[test]
fn file_names_and_revisions_stay_inside_the_cache() {
    for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "", "a\\b"] {
        assert!(check_file_name(bad).is_err(), "{bad}");
    }
    assert!(check_file_name("refs/pr/1").is_ok());
    assert!(!safe_component("../etc"));
    assert!(safe_component("3f1a9c0d"));
}

#[test]
fn urls() {
    assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
    assert_eq!(encode_path("q8/a b.gguf"), "q8/a%20b.gguf");
    assert_eq!(origin("http://127.0.0.1:8080/a/b"), "http://127.0.0.1:8080");
    assert!(same_origin(
        "https://huggingface.co/x",
        "https://huggingface.co"
    ));
    assert!(!same_origin(
        "https://cdn.hf.co/x",
        "https://huggingface.co"
    ));
}
