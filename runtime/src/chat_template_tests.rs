//! Unit tests of `chat_template.rs`.

use super::*;

fn gemma3() -> ChatTemplate {
    let dir = crate::test_support::gemma3_tokenizer_dir();
    ChatTemplate::from_dir(&dir)
        .unwrap()
        .expect("the Gemma 3 tokenizer_config.json has a chat template")
}

#[test]
fn gemma3_system_and_user() {
    let t = gemma3();
    let s = t
        .render(
            &[Message::system("Be helpful."), Message::user("Hello")],
            true,
        )
        .unwrap();
    assert_eq!(
        s,
        "<bos><start_of_turn>user\nBe helpful.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
    );
}

#[test]
fn gemma3_multi_turn() {
    let t = gemma3();
    let msgs = [
        Message::user("Hi there "),
        Message::assistant("  Hello! How can I help?\n"),
        Message::user("Tell me a joke."),
    ];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello! How can I help?<end_of_turn>\n\
         <start_of_turn>user\nTell me a joke.<end_of_turn>\n<start_of_turn>model\n"
    );
    assert_eq!(
        t.render(&msgs[..2], false).unwrap(),
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello! How can I help?<end_of_turn>\n"
    );
    // With a system prompt, it goes into the first user turn only.
    let mut with_system = vec![Message::system("Be brief.")];
    with_system.extend_from_slice(&msgs);
    let s = t.render(&with_system, true).unwrap();
    assert!(s.starts_with("<bos><start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n"));
    assert!(s.contains("<start_of_turn>user\nTell me a joke.<end_of_turn>"));
}

#[test]
fn gemma3_list_content() {
    let t = gemma3();
    let msgs = serde_json::json!([{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": " Describe this. "}
    ]}]);
    assert_eq!(
        t.render_value(&msgs, true).unwrap(),
        "<bos><start_of_turn>user\n<start_of_image>Describe this.<end_of_turn>\n<start_of_turn>model\n"
    );
}

#[test]
fn raise_exception_becomes_a_typed_error() {
    let t = gemma3();
    let e = t
        .render(&[Message::user("a"), Message::user("b")], true)
        .unwrap_err();
    match e {
        Error::TemplateException(msg) => {
            assert_eq!(
                msg,
                "Conversation roles must alternate user/assistant/user/assistant/..."
            )
        }
        other => panic!("expected TemplateException, got {other:?}"),
    }
    // The next render starts clean.
    t.render(&[Message::user("a")], true).unwrap();
}

#[test]
fn gemma2_style_template_rejects_system() {
    let src = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";
    let t = ChatTemplate::new(src, "<bos>", "<eos>").unwrap();
    assert_eq!(
        t.render(&[Message::user(" Hi ")], true).unwrap(),
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    assert!(matches!(
        t.render(&[Message::system("x"), Message::user("y")], true),
        Err(Error::TemplateException(m)) if m == "System role not supported"
    ));
}

#[test]
fn trim_and_lstrip_blocks_like_transformers() {
    // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before it.
    let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}";
    let t = ChatTemplate::new(src, "<bos>", "<eos>").unwrap();
    assert_eq!(
        t.render(&[Message::user("a"), Message::user("b")], false)
            .unwrap(),
        "[a]\n[b]\n"
    );
}

#[test]
fn python_string_methods_work() {
    let src = "{{ messages[0].content.strip().upper() }}|{{ messages[0].content.startswith(' he') }}|{{ eos_token }}";
    let t = ChatTemplate::new(src, "<bos>", "<eos>").unwrap();
    assert_eq!(
        t.render(&[Message::user(" hello ")], false).unwrap(),
        "HELLO|True|<eos>"
    );
}

#[test]
fn syntax_errors_are_reported_at_load() {
    let e = ChatTemplate::new("{% for %}", "<bos>", "<eos>")
        .err()
        .unwrap();
    assert!(matches!(e, Error::ChatTemplate(_)), "{e:?}");
}

#[test]
fn folder_sources() {
    let dir = tempfile::tempdir().unwrap();
    assert!(ChatTemplate::from_dir(dir.path()).unwrap().is_none());
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{{ bos_token }}{{ messages[0].content }}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>"}"#,
    )
    .unwrap();
    let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
    assert_eq!(t.render(&[Message::user("x")], false).unwrap(), "<s>x");
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ eos_token }}"}]}"#,
    )
    .unwrap();
    let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "D<eos>");
}

#[test]
fn strftime_now_formats_a_date() {
    let s = strftime_now("%d %B %Y");
    assert!(s.len() >= "01 May 2025".len(), "{s}");
    assert!(s.split(' ').nth(2).unwrap().parse::<i32>().unwrap() >= 2024);
}

/// Templates come from downloaded files: one that never ends or floods its output fails with a clear error.
#[test]
fn endless_and_flooding_templates_are_stopped() {
    let user = [Message::user("a")];
    let endless = ChatTemplate::new(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "<bos>",
        "<eos>",
    )
    .unwrap();
    let err = endless.render(&user, true).unwrap_err().to_string();
    assert!(err.contains("steps, the limit"), "{err}");
    let flood = ChatTemplate::new(
        "{% for a in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "<bos>",
        "<eos>",
    )
    .unwrap();
    let err = flood.render(&user, true).unwrap_err().to_string();
    assert!(err.contains("larger than 16 MiB"), "{err}");
}
