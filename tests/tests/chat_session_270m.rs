//! A chat session on the real Gemma 3 270M export keeps its KV cache between turns: the second turn prefills only
//! the tokens that are new (counted here independently from the template and tokenizer) and, greedy, replies
//! exactly as a fresh prefill of the whole conversation does.

use gemma_runtime::generate::with_single_bos;
use gemma_runtime::{
    ChatOptions, Conversation, GenerateOptions, Generator, Message, RuntimeOptions, StopReason,
};
use gemma_tests::*;
use std::path::PathBuf;
use std::sync::OnceLock;

fn exported() -> &'static PathBuf {
    static EXPORT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &EXPORT
        .get_or_init(|| {
            let src = gemma3_270m_dir().expect("the real Gemma 3 270M checkpoint");
            export_to_temp(&src).expect("export of the real Gemma 3 270M")
        })
        .1
}

fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        ..GenerateOptions::default()
    }
}

/// Token ids of `messages` rendered with the generation prompt, as a fresh prefill would feed them.
fn conversation_ids(generator: &Generator, messages: &[Message]) -> Vec<u32> {
    let text = generator
        .chat_template()
        .unwrap()
        .render(messages, true)
        .unwrap();
    with_single_bos(
        generator.tokenizer().encode(&text, false).unwrap(),
        generator.bos_token_id(),
    )
}

#[test]
fn later_turns_prefill_only_new_tokens_and_match_a_fresh_prefill() {
    let generator =
        Generator::open(exported(), &RuntimeOptions::cpu().with_threads(Some(2))).unwrap();
    let options = ChatOptions {
        generate: greedy(20),
        ..ChatOptions::default()
    };
    let mut session = Conversation::new(generator, options).unwrap();

    let r1 = session
        .send("What is the capital of France?", |_| {})
        .unwrap();
    let first = conversation_ids(
        session.generator(),
        &[Message::user("What is the capital of France?")],
    );
    assert_eq!((r1.reused_tokens, r1.prefilled_tokens), (0, first.len()));
    // The cache holds the prompt and every reply token but the last (which was never fed).
    assert_eq!(
        session.cached_tokens().len(),
        first.len() + r1.output.token_ids.len() - 1
    );

    let mut previous_stop = r1.output.stop_reason;
    for (turn, user) in [(2, "And of Italy?"), (3, "Which one is larger?")] {
        let cached = session.cached_tokens().to_vec();
        let report = session.send(user, |_| {}).unwrap();

        // The whole conversation up to this user message, rendered and tokenized from scratch.
        let history = session.history();
        let asked = &history[..history.len() - 1];
        let full = conversation_ids(session.generator(), asked);
        assert!(
            full.starts_with(&cached),
            "turn {turn}: the cached tokens are not the start of the re-rendered conversation"
        );
        assert!(!report.reprefilled, "turn {turn}: {:?}", report.debug);
        assert_eq!(report.reused_tokens, cached.len(), "turn {turn}");
        assert_eq!(
            report.prefilled_tokens,
            full.len() - cached.len(),
            "turn {turn}"
        );

        // Counted independently: the previous reply's unfed last token (unless it was the stop token, which the
        // template writes as <end_of_turn> itself), then the turn markers around the new user message.
        let tail = format!(
            "<end_of_turn>\n<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"
        );
        let tail = session
            .generator()
            .tokenizer()
            .encode(&tail, false)
            .unwrap();
        let expected_new = tail.len() + usize::from(previous_stop != StopReason::Eos);
        assert_eq!(report.prefilled_tokens, expected_new, "turn {turn}");
        assert!(report.prefilled_tokens * 3 < full.len(), "turn {turn}");

        // Greedy from a fresh prefill of the whole conversation: the same reply.
        let stops = session.generator().chat_stop_token_ids();
        let fresh = session
            .generator_mut()
            .generate_from_ids_until(&full, &stops, &greedy(20), |_| {})
            .unwrap();
        assert_eq!(fresh.token_ids, report.output.token_ids, "turn {turn}");
        eprintln!(
            "turn {turn}: {} tokens in the conversation, {} reused from the cache, {} prefilled; reply of {} \
             tokens ({:?}) identical to a fresh prefill",
            full.len(),
            report.reused_tokens,
            report.prefilled_tokens,
            report.output.token_ids.len(),
            report.output.stop_reason
        );
        previous_stop = report.output.stop_reason;
    }
}
