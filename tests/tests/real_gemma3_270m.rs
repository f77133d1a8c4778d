//! The real Gemma 3 270M (the public Q4_K_M GGUF, fetched by scripts/get-model and turned into a bf16 folder by scripts/test): exported,
//! run through ONNX Runtime, and compared with transformers fp32 eager (tests/fixtures/real/gemma3-270m.json):
//! greedy generation gives the same 32 token ids for each prompt, and perplexity is within 0.1%.

use gemma_runtime::{
    perplexity, Decoder, GenerateOptions, Generator, RuntimeOptions, SamplingConfig, Tokenizer,
};
use gemma_tests::*;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One export shared by the tests of this file.
fn exported() -> &'static PathBuf {
    static EXPORT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &EXPORT
        .get_or_init(|| {
            let src = gemma3_270m_dir().expect("the real Gemma 3 270M checkpoint");
            export_to_temp(&src).expect("export of the real Gemma 3 270M")
        })
        .1
}

fn runtime() -> RuntimeOptions {
    RuntimeOptions::cpu().with_threads(Some(2))
}

#[test]
fn greedy_generation_matches_transformers_token_for_token() {
    let reference = real_reference();
    let mut generator = Generator::open(exported(), &runtime()).unwrap();
    for p in &reference.prompts {
        assert_eq!(
            generator.encode_prompt(&p.text).unwrap(),
            p.input_ids,
            "tokenization of {:?}",
            p.text
        );
        let options = GenerateOptions {
            max_new_tokens: p.generated_ids.len(),
            sampling: SamplingConfig::greedy(),
            ..Default::default()
        };
        let mut streamed = String::new();
        let out = generator
            .generate(&p.text, &options, |t| streamed.push_str(t))
            .unwrap();
        assert_eq!(
            out.token_ids, p.generated_ids,
            "greedy continuation of {:?}: got {:?}",
            p.text, out.text
        );
        assert_eq!(out.prompt_tokens, p.input_ids.len());
        assert_eq!(
            streamed, out.text,
            "streamed text must equal the final text"
        );
        eprintln!("{:?} → {:?}", p.text, out.text);
    }
}

#[test]
fn perplexity_matches_transformers_within_0_1_percent() {
    let reference = real_reference().perplexity;
    let text =
        std::fs::read_to_string(fixtures_dir().join("real").join(&reference.text_file)).unwrap();
    let mut decoder = Decoder::open(exported(), &runtime()).unwrap();
    let tokenizer = Tokenizer::from_dir(exported()).unwrap();
    let got = perplexity(&mut decoder, &tokenizer, &text, reference.context).unwrap();
    assert_eq!(got.tokens, reference.tokens);
    assert_eq!(got.predicted, reference.predicted);
    let rel = (got.perplexity / reference.perplexity - 1.0).abs();
    eprintln!(
        "perplexity {:.4} (transformers {:.4}), mean NLL {:.6} (transformers {:.6}), relative difference {rel:e}",
        got.perplexity, reference.perplexity, got.mean_nll, reference.mean_nll
    );
    assert!(
        rel <= 1e-3,
        "perplexity {} vs transformers {}: {rel} relative",
        got.perplexity,
        reference.perplexity
    );
}
