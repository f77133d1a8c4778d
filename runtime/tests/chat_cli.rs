//! `gemma chat` end to end on the tiny Gemma 2 export of `common` (word-level tokenizer, see there):
//!
//! * which prompt the CLI fed (compared with the library on the expected ids), system prompt folding;
//! * where a reply stops: `<end_of_turn>`, found *by name*, is moved onto a token the model is known to generate,
//!   and the rerun must stop right there;
//! * how the session reuses, re-prefills or trims the conversation (`-v` debug lines), and its errors.

mod common;

use common::*;
use gemma_runtime::{GenerateOptions, Generator, RuntimeOptions, Tokenizer};
use serde_json::{json, Value};

/// `--messages` with a system prompt on a Gemma 2 template: folded into the first user message with a note, and the
/// CLI feeds exactly the folded prompt (the library, given those ids, generates the same tokens).
#[test]
fn messages_file_folds_the_system_prompt_for_gemma2() {
    let tmp = export();
    let dir = out_dir(&tmp);
    write_tokenizer(&dir, &[]);
    write_template(&dir, &gemma2_template());
    let conv = write_messages(
        tmp.path(),
        json!([{"role": "system", "content": "w20 w21"}, {"role": "user", "content": " w30 w31 w32 "}]),
    );
    let d = dir.to_str().unwrap();
    let c = conv.to_str().unwrap();
    let o = gemma(
        &["chat", "-m", d, "--messages", c, "--json", "-n", "6"],
        None,
    );
    let v = json_of(success(&o));
    assert!(stderr(&o).contains("no system role"), "{}", stderr(&o));
    assert_eq!(v["system_folded"], json!(true));

    let expected =
        "<bos><start_of_turn>user\nw20 w21\n\nw30 w31 w32<end_of_turn>\n<start_of_turn>model\n";
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let ids = tokenizer.encode(expected, false).unwrap();
    assert_eq!(
        ids,
        vec![2, 106, 250, 20, 21, 30, 31, 32, END_OF_TURN, 106, 251]
    );
    assert_eq!(v["prompt_tokens"], json!(ids.len()));

    let mut generator =
        Generator::open(&dir, &RuntimeOptions::cpu().with_threads(Some(1))).unwrap();
    let stops = generator.chat_stop_token_ids();
    assert_eq!(
        stops,
        vec![1, END_OF_TURN],
        "<eos> from the config, <end_of_turn> by name"
    );
    let options = GenerateOptions {
        max_new_tokens: 6,
        ..GenerateOptions::default()
    };
    let out = generator
        .generate_from_ids_until(&ids, &stops, &options, |_| {})
        .unwrap();
    assert_eq!(token_ids(&v), out.token_ids);
    assert_eq!(v["text"], json!(out.text));

    // Without folding, the template's own refusal is the error.
    let o = gemma(
        &[
            "chat",
            "-m",
            d,
            "--messages",
            c,
            "--no-fold-system",
            "-n",
            "6",
        ],
        None,
    );
    let err = failure(&o);
    assert!(
        err.contains("System role not supported") && err.contains("no system role"),
        "{err}"
    );
}

/// A chat reply stops at `<end_of_turn>` found by name in tokenizer.json, although generation_config.json lists only
/// `<eos>`. The template here prints no turn markers, so moving `<end_of_turn>` to another id leaves the prompt as it
/// was: the rerun must stop exactly where the model generates that id.
#[test]
fn chat_stops_at_end_of_turn_looked_up_by_name() {
    let tmp = export();
    let dir = out_dir(&tmp);
    let gen_config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("generation_config.json")).unwrap())
            .unwrap();
    assert_eq!(gen_config["eos_token_id"], json!(1));
    write_template(
        &dir,
        "{{ bos_token }}{% for m in messages %}{{ m['content'] }} {% endfor %}",
    );
    let conv = write_messages(
        tmp.path(),
        json!([{"role": "user", "content": "w10 w11 w12"}]),
    );
    let args = [
        "chat",
        "-m",
        dir.to_str().unwrap(),
        "--messages",
        conv.to_str().unwrap(),
        "--json",
        "-n",
        "8",
        // Seeded sampling: the same tokens in both runs, and more varied than greedy on a random model.
        "--temperature",
        "2",
        "--seed",
        "5",
    ];

    write_tokenizer(&dir, &[]);
    let first = json_of(success(&gemma(&args, None)));
    let ids = token_ids(&first);
    if first["stop_reason"] == json!("eos") && ids.last() == Some(&END_OF_TURN) {
        return; // the model itself ended its turn at id 107: the lookup worked
    }
    let k = stop_index(&ids, &[10, 11, 12]);
    eprintln!(
        "generated {ids:?}; <end_of_turn> moved to id {} (index {k})",
        ids[k]
    );
    write_tokenizer(&dir, &[(ids[k], "<end_of_turn>")]);
    let second = json_of(success(&gemma(&args, None)));
    assert_eq!(token_ids(&second), ids[..=k].to_vec(), "first run: {ids:?}");
    assert_eq!(second["stop_reason"], json!("eos"));
}

/// Interactive use through a pipe: one reply per line; the second turn prefills only its new tokens; end of input
/// ends the program normally.
#[test]
fn interactive_turns_reuse_the_cache() {
    let tmp = export();
    let dir = out_dir(&tmp);
    write_tokenizer(&dir, &[]);
    write_template(&dir, &gemma2_template());
    let o = gemma(
        &["chat", "-m", dir.to_str().unwrap(), "-n", "4", "-v"],
        Some("w10 w11\n\nw12 w13\n"),
    );
    let err = stderr(success(&o));
    let stats: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("cached tokens reused"))
        .collect();
    assert_eq!(
        stats.len(),
        2,
        "two turns (the blank line is skipped): {err}"
    );
    // Turn 1: <bos> <sot> user w10 w11 <eot> <sot> model = 8 tokens, nothing cached.
    assert!(
        stats[0].starts_with("[0 cached tokens reused, 8 prefilled"),
        "{err}"
    );
    // Turn 2 feeds the end of reply 1 (its last token, never fed, and <eot>), then <sot> user w12 w13 <eot> <sot>
    // model: 2 + 7 tokens if reply 1 ran to -n 4, or 1 + 7 if it ended with <end_of_turn> (fed as part of the text).
    let reused: usize = stats[1][1..].split(' ').next().unwrap().parse().unwrap();
    assert!(reused >= 8 + 3, "{err}");
    assert!(
        stats[1].contains(" 9 prefilled") || stats[1].contains(" 8 prefilled"),
        "{err}"
    );
    assert!(err.contains("[debug] reusing"), "{err}");
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
}

/// A conversation that outgrows --max-context drops its oldest exchange (with a note) and goes on.
#[test]
fn context_overflow_drops_the_oldest_turns() {
    let tmp = export();
    let dir = out_dir(&tmp);
    write_tokenizer(&dir, &[]);
    write_template(&dir, &gemma2_template());
    let lines = "w10 w11\nw12 w13\nw14 w15\nw16 w17\nw18 w19\n";
    let o = gemma(
        &[
            "chat",
            "-m",
            dir.to_str().unwrap(),
            "-n",
            "4",
            "-v",
            "--max-context",
            "30",
        ],
        Some(lines),
    );
    let err = stderr(success(&o));
    assert!(
        err.contains("note: the conversation no longer fit"),
        "{err}"
    );
    assert!(err.contains("dropped the 2 oldest message(s)"), "{err}");
    let turns = err
        .lines()
        .filter(|l| l.contains("cached tokens reused"))
        .count();
    assert_eq!(turns, 5, "every line got a reply: {err}");
    // No turn used more than 30 positions: reused + prefilled + 4 ≤ 30.
    for l in err.lines().filter(|l| l.contains("cached tokens reused")) {
        let n: Vec<usize> = l
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(n[0] + n[1] + 4 <= 30, "{l}");
    }
}

/// A template that renders the history differently each turn (here: it prints the message count before every
/// message) cannot reuse the cache: the whole conversation is prefilled again, with a debug line saying why.
#[test]
fn history_rendered_differently_is_prefilled_again() {
    let tmp = export();
    let dir = out_dir(&tmp);
    write_tokenizer(&dir, &[]);
    write_template(
        &dir,
        "{{ bos_token }}{% for m in messages %}w{{ messages|length }} {{ m['content'] }} {% endfor %}",
    );
    let o = gemma(
        &["chat", "-m", dir.to_str().unwrap(), "-n", "3", "-v"],
        Some("w10\nw11\n"),
    );
    let err = stderr(success(&o));
    assert!(
        err.contains("[debug] the template re-rendered the history differently")
            && err.contains("prefilling the whole conversation"),
        "{err}"
    );
    let last = err
        .lines()
        .rfind(|l| l.contains("cached tokens reused"))
        .unwrap();
    assert!(last.starts_with("[0 cached tokens reused"), "{err}");
}

#[test]
fn conversation_errors_are_clear() {
    let tmp = export();
    let dir = out_dir(&tmp);
    let d = dir.to_str().unwrap();
    write_tokenizer(&dir, &[]);
    write_template(&dir, &gemma2_template());
    let run = |messages: Value, extra: &[&str]| {
        let conv = write_messages(tmp.path(), messages);
        let mut args = vec!["chat", "-m", d, "--messages", conv.to_str().unwrap()];
        args.extend_from_slice(extra);
        failure(&gemma(&args, None))
    };
    let err = run(
        json!([{"role": "user", "content": "w1"}, {"role": "user", "content": "w2"}]),
        &[],
    );
    assert!(
        err.contains("Conversation roles must alternate user/assistant/user/assistant/..."),
        "{err}"
    );
    let err = run(
        json!([{"role": "user", "content": "w1"}, {"role": "assistant", "content": "w2"}]),
        &[],
    );
    assert!(err.contains("must end with a user message"), "{err}");
    let err = run(
        json!([{"role": "system", "content": "w1"}, {"role": "user", "content": "w2"}]),
        &["--system", "w3"],
    );
    assert!(err.contains("both --system and a system message"), "{err}");
    let err = run(json!([{"role": "user", "content": ["w1"]}]), &[]);
    assert!(
        err.contains("message 0: `content` must be a string"),
        "{err}"
    );
    let err = run(
        json!([{"role": "user", "content": "w1"}, {"role": "tool", "content": "w2"}]),
        &[],
    );
    assert!(err.contains("message 1 has role \"tool\""), "{err}");

    // No chat template at all.
    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    let err = failure(&gemma(&["chat", "-m", d], Some("w1\n")));
    assert!(err.contains("has no chat template"), "{err}");
    // --json is for --messages only.
    let o = gemma(&["chat", "-m", d, "--json"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
