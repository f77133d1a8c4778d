//! The manifest's `classifier` section: what a runtime needs to turn a classifier export's logits into
//! probabilities (ShieldGemma 2: [`crate::family::ClassifierSpec`]).
//!
//! For each policy, the prompt is `prompt_template` (a Jinja chat template, the processor's) rendered with
//! `messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": <policy text>}]}]`, no
//! generation prompt, `bos_token` set; its one `<start_of_image>` is expanded as the Gemma 3 processor does (no Pan &
//! Scan), and the text is tokenized **with** the tokenizer's special tokens (`ShieldGemma2Processor` calls the
//! tokenizer on the rendered text, which adds a `<bos>` before the template's own). The probabilities are
//! `softmax([logit[yes_token_id], logit[no_token_id]])` at the last position.

use serde::{Deserialize, Serialize};

/// The `classifier` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassifierSection {
    /// The token whose probability means "violates the policy" (config.json `yes_token_index`).
    pub yes_token_id: u32,
    /// The token of "does not violate" (`no_token_index`).
    pub no_token_id: u32,
    /// The default policies, in the processor's order (`policy_definitions`).
    pub policies: Vec<Policy>,
    /// The Jinja template that makes one policy's prompt (the processor's chat template).
    pub prompt_template: String,
    /// The files the policies and the template came from, e.g. `processor_config.json#policy_definitions`.
    pub sources: Vec<String>,
}

/// One policy: its name (the key `--policy` selects) and the text the prompt quotes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub text: String,
}

impl Policy {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Policy {
        Policy {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// `ShieldGemma2Processor`'s policy set: the defaults, with `custom` ones overriding a default of the same name in
/// place and the others appended (a Python dict update); `selected` picks and orders them by name (all when
/// empty). Fails on a selected name that is not in the set, listing the known ones.
pub fn select_policies(
    defaults: &[Policy],
    custom: &[Policy],
    selected: &[String],
) -> Result<Vec<Policy>, String> {
    let mut all: Vec<Policy> = defaults.to_vec();
    for c in custom {
        match all.iter_mut().find(|p| p.name == c.name) {
            Some(p) => p.text = c.text.clone(),
            None => all.push(c.clone()),
        }
    }
    if selected.is_empty() {
        return Ok(all);
    }
    selected
        .iter()
        .map(|name| {
            all.iter().find(|p| &p.name == name).cloned().ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "unknown policy {name:?}; the model's policies are {} (add one with --policy-text NAME=TEXT)",
                    known.join(", ")
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_policies_override_in_place_and_append() {
        let d = [Policy::new("a", "A"), Policy::new("b", "B")];
        let c = [Policy::new("c", "C"), Policy::new("a", "A2")];
        let all = select_policies(&d, &c, &[]).unwrap();
        assert_eq!(
            all,
            [
                Policy::new("a", "A2"),
                Policy::new("b", "B"),
                Policy::new("c", "C")
            ]
        );
        let some = select_policies(&d, &c, &["c".into(), "b".into()]).unwrap();
        assert_eq!(some, [Policy::new("c", "C"), Policy::new("b", "B")]);
        let e = select_policies(&d, &[], &["x".into()]).unwrap_err();
        assert!(e.contains("\"x\"") && e.contains("a, b"), "{e}");
    }
}
