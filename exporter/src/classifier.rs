//! The `classifier` section of a classifier export (ShieldGemma 2), read from the checkpoint's processor files: the
//! default policies (`processor_config.json` `policy_definitions`, in file order) and the prompt template (the
//! processor's chat template: `chat_template.jinja`, else `chat_template.json`, else `processor_config.json`
//! `chat_template`). The answer token ids come from config.json ([`gemma_models::ClassifierConfig`]).
//!
//! transformers falls back to built-in policies when `policy_definitions` is absent; we refuse instead, because
//! the policies of an export should be the checkpoint's own, and the processor needs its template anyway.

use std::fmt;
use std::path::Path;

use gemma_models::contract::{ClassifierSection, Policy};
use gemma_models::ClassifierConfig;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::ExportError;

const PROCESSOR_CONFIG: &str = "processor_config.json";
const TEMPLATE_JINJA: &str = "chat_template.jinja";
const TEMPLATE_JSON: &str = "chat_template.json";

/// The policies of a JSON object, in file order (serde_json's maps sort their keys).
struct Ordered(Vec<Policy>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of policy name → policy text")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((name, text)) = map.next_entry::<String, String>()? {
                    out.push(Policy::new(name, text));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct ProcessorFile {
    policy_definitions: Option<Ordered>,
    chat_template: Option<String>,
}

#[derive(Deserialize)]
struct TemplateFile {
    chat_template: String,
}

fn read(path: &Path) -> Result<String, ExportError> {
    gemma_models::files::read_regular_to_string(path, gemma_models::files::MAX_JSON_BYTES)
        .map_err(|e| ExportError::io(path, e))
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ExportError> {
    serde_json::from_str(&read(path)?).map_err(|source| ExportError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The section for the checkpoint folder `src` with answer tokens `ids`. Fails, naming the file, when the policies
/// or the template are missing or malformed.
pub fn section(src: &Path, ids: &ClassifierConfig) -> Result<ClassifierSection, ExportError> {
    let config_path = src.join(PROCESSOR_CONFIG);
    let missing = |what: &str| {
        ExportError::ProcessorConfig {
        path: config_path.clone(),
        reason: format!(
            "{what}: a ShieldGemma 2 export needs the checkpoint's processor files (ShieldGemma2Processor \
             save_pretrained)"
        ),
    }
    };
    if !config_path.is_file() {
        return Err(missing("not found"));
    }
    let config: ProcessorFile = parse(&config_path)?;
    let policies = config
        .policy_definitions
        .ok_or_else(|| missing("no `policy_definitions`"))?
        .0;
    if policies.is_empty() {
        return Err(missing("`policy_definitions` is empty"));
    }
    let mut sources = vec![format!("{PROCESSOR_CONFIG}#policy_definitions")];
    let (jinja, json) = (src.join(TEMPLATE_JINJA), src.join(TEMPLATE_JSON));
    let prompt_template = if jinja.is_file() {
        sources.push(TEMPLATE_JINJA.into());
        read(&jinja)?
    } else if json.is_file() {
        sources.push(TEMPLATE_JSON.into());
        parse::<TemplateFile>(&json)?.chat_template
    } else if let Some(t) = config.chat_template {
        sources.push(format!("{PROCESSOR_CONFIG}#chat_template"));
        t
    } else {
        return Err(missing(&format!(
            "no prompt template (the processor's chat template: {TEMPLATE_JINJA}, {TEMPLATE_JSON} or \
             `chat_template` here)"
        )));
    };
    Ok(ClassifierSection {
        yes_token_id: ids.yes_token_id,
        no_token_id: ids.no_token_id,
        policies,
        prompt_template,
        sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_keep_file_order_and_missing_parts_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ClassifierConfig {
            yes_token_id: 5,
            no_token_id: 6,
        };
        let e = section(dir.path(), &ids).unwrap_err().to_string();
        assert!(
            e.contains(PROCESSOR_CONFIG) && e.contains("not found"),
            "{e}"
        );
        std::fs::write(
            dir.path().join(PROCESSOR_CONFIG),
            r#"{"image_seq_length": 4}"#,
        )
        .unwrap();
        let e = section(dir.path(), &ids).unwrap_err().to_string();
        assert!(e.contains("policy_definitions"), "{e}");
        let config = r#"{"policy_definitions": {"z": "Z text", "a": "A text"}}"#;
        std::fs::write(dir.path().join(PROCESSOR_CONFIG), config).unwrap();
        let e = section(dir.path(), &ids).unwrap_err().to_string();
        assert!(
            e.contains("prompt template") && e.contains(TEMPLATE_JINJA),
            "{e}"
        );
        std::fs::write(dir.path().join(TEMPLATE_JSON), r#"{"chat_template": "T"}"#).unwrap();
        let s = section(dir.path(), &ids).unwrap();
        let names: Vec<&str> = s.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!((names, s.prompt_template.as_str()), (vec!["z", "a"], "T"));
        assert_eq!((s.yes_token_id, s.no_token_id), (5, 6));
    }
}
