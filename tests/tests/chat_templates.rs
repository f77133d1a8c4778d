//! Chat templates rendered by the runtime (minijinja, `runtime/src/chat_template.rs`) are byte-identical to transformers'
//! `apply_chat_template(tokenize=False)`: the Gemma 1/2 hub template and the Gemma 3 one, with system prompts,
//! several turns, images in the content (Gemma 3), and the error cases, whose message must be the template's own
//! `raise_exception` text. References: `fixtures/chat/templates.json` (`make_fixtures.py templates`).

use gemma_runtime::{ChatTemplate, Error};
use gemma_tests::{fixtures_dir, gemma3_270m_dir};
use serde_json::Value;

fn references() -> Value {
    let path = fixtures_dir().join("chat/templates.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The Gemma 3 tokenizer files of the real Gemma 3 270M (rebuilt from its GGUF by scripts/test), as the real 270M test model carries them.
fn shared_gemma3_dir() -> std::path::PathBuf {
    gemma3_270m_dir().expect("the real Gemma 3 270M checkpoint")
}

/// Renders every case with `template` and compares; returns (rendered, errors) counts.
fn check_cases(doc: &Value, which: &str, template: &ChatTemplate) -> (usize, usize) {
    let (mut rendered, mut errors) = (0, 0);
    for case in doc["cases"].as_array().unwrap() {
        if case["template"] != which {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let result = template.render_value(&case["messages"], gen);
        match (case.get("rendered"), case.get("error")) {
            (Some(expected), None) => {
                let got = result.unwrap_or_else(|e| panic!("{which} / {name}: {e}"));
                assert_eq!(got, expected.as_str().unwrap(), "{which} / {name}");
                rendered += 1;
            }
            (None, Some(expected)) => match result {
                Err(Error::TemplateException(msg)) => {
                    assert_eq!(msg, expected.as_str().unwrap(), "{which} / {name}");
                    errors += 1;
                }
                other => {
                    panic!("{which} / {name}: expected the template's exception, got {other:?}")
                }
            },
            _ => panic!("{which} / {name}: a case has either `rendered` or `error`"),
        }
    }
    (rendered, errors)
}

#[test]
fn gemma2_template_matches_transformers() {
    let doc = references();
    let t = ChatTemplate::new(
        doc["templates"]["gemma2"].as_str().unwrap(),
        "<bos>",
        "<eos>",
    )
    .unwrap();
    let (rendered, errors) = check_cases(&doc, "gemma2", &t);
    // 6 renders; system role (3 cases) and role order (2 cases) refused.
    assert_eq!((rendered, errors), (6, 5));
}

#[test]
fn gemma3_template_matches_transformers() {
    let doc = references();
    let t = ChatTemplate::new(
        doc["templates"]["gemma3"].as_str().unwrap(),
        "<bos>",
        "<eos>",
    )
    .unwrap();
    let (rendered, errors) = check_cases(&doc, "gemma3", &t);
    assert_eq!((rendered, errors), (13, 3));
}

/// The committed Gemma 3 template is the one the real checkpoint ships, and loading it from the folder
/// (tokenizer_config.json, bos/eos from there) renders the same.
#[test]
fn gemma3_template_from_the_model_folder() {
    let doc = references();
    let dir = shared_gemma3_dir();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["chat_template"], doc["templates"]["gemma3"]);
    let t = ChatTemplate::from_dir(&dir).unwrap().unwrap();
    assert_eq!(check_cases(&doc, "gemma3", &t), (13, 3));
}
