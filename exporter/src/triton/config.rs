//! The two `config.pbtxt` files of the repository, in the protobuf text format of Triton's `model_config.proto`
//! (`inference.ModelConfig`).
//!
//! The decoder's KV cache is Triton implicit state (`sequence_batching.state`): each `past_key_values.{i}.*` input
//! is paired with its `present.{i}.*` output, and Triton feeds the output of one request of a sequence as the input
//! of the next. Triton cannot start a state empty: a `-1` dimension of `state.dims` starts at 1 on a sequence's
//! first request, whatever `initial_state` says (triton-inference-server/core, `SequenceStates::Initialize`). So
//! the initial state is one zero row (`initial_state.dims` with that 1, `zero_data`), and every request's
//! `attention_mask` carries a 0 for that row: the row is left padding, which the portable graph masks exactly
//! (the sliding window counts KV slots, and the pad shifts queries and keys alike).

use gemma_models::contract::{io, Manifest};
use std::fmt::Write;

/// The first line of every `config.pbtxt` this module writes; `--force` replaces only folders whose config starts
/// with it.
pub const HEADER: &str = "# Written by gemma-export";

/// The `parameters` key that names the decoder model in the generate model's config.
pub const DECODER_PARAMETER: &str = "decoder_model";
/// The `parameters` key with the stop token ids (comma-separated) in the generate model's config.
pub const STOP_PARAMETER: &str = "stop_token_ids";
/// How long Triton keeps an idle sequence's KV state before freeing its slot (60 s).
const IDLE_MICROSECONDS: u64 = 60_000_000;

/// One `input`/`output` entry: name, Triton data type, dims, optional.
struct Io<'a> {
    name: &'a str,
    data_type: &'a str,
    dims: Vec<i64>,
    optional: bool,
}

fn dims_text(dims: &[i64]) -> String {
    let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[ {} ]", d.join(", "))
}

fn io_section(out: &mut String, section: &str, ios: &[Io<'_>]) {
    let entries: Vec<String> = ios
        .iter()
        .map(|io| {
            let optional = if io.optional {
                "\n    optional: true"
            } else {
                ""
            };
            format!(
                "  {{\n    name: \"{}\"\n    data_type: {}\n    dims: {}{optional}\n  }}",
                io.name,
                io.data_type,
                dims_text(&io.dims)
            )
        })
        .collect();
    let _ = writeln!(out, "{section} [\n{}\n]", entries.join(",\n"));
}

/// The decoder model: the portable graph under the onnxruntime backend, batch 1 per sequence (`max_batch_size: 0`,
/// so the dims below are the graph's own), the KV cache as implicit state.
pub fn decoder(name: &str, manifest: &Manifest) -> String {
    let (kv, hd) = (manifest.num_kv_heads as i64, manifest.head_dim as i64);
    let mut out = format!(
        "{HEADER} {}: the portable decoder, its KV cache as implicit state.\n\
         # Each KV state starts as one zero row (Triton starts a -1 dimension at 1): every request's attention_mask\n\
         # has a leading 0 for it. Requests of one sequence share a correlation id, the first with the START flag.\n",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "name: \"{name}\"\nbackend: \"onnxruntime\"\nmax_batch_size: 0"
    );
    let ids = |name| Io {
        name,
        data_type: "TYPE_INT64",
        dims: vec![1, -1],
        optional: false,
    };
    let mut inputs = vec![
        ids(io::INPUT_IDS),
        ids(io::ATTENTION_MASK),
        ids(io::POSITION_IDS),
    ];
    // An initializer with a default in the graph: optional, fed as [1] (logits for the last K positions).
    inputs.push(Io {
        name: io::LOGITS_TO_KEEP,
        data_type: "TYPE_INT64",
        dims: vec![1],
        optional: true,
    });
    io_section(&mut out, "input", &inputs);
    let logits = Io {
        name: io::LOGITS,
        data_type: "TYPE_FP32",
        dims: vec![-1, -1, manifest.vocab_size as i64],
        optional: false,
    };
    io_section(&mut out, "output", &[logits]);
    let states: Vec<String> = (0..manifest.num_layers)
        .flat_map(|l| {
            [
                (io::past_key(l), io::present_key(l)),
                (io::past_value(l), io::present_value(l)),
            ]
        })
        .map(|(past, present)| {
            format!(
                "    {{\n      input_name: \"{past}\"\n      output_name: \"{present}\"\n      \
                 data_type: TYPE_FP32\n      dims: {}\n      initial_state {{\n        \
                 data_type: TYPE_FP32\n        dims: {}\n        zero_data: true\n        \
                 name: \"one masked zero row\"\n      }}\n    }}",
                dims_text(&[1, kv, -1, hd]),
                dims_text(&[1, kv, 1, hd])
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "sequence_batching {{\n  max_sequence_idle_microseconds: {IDLE_MICROSECONDS}\n  direct {{ }}\n  \
         state [\n{}\n  ]\n}}",
        states.join(",\n")
    );
    out
}

/// The generate model: the Python backend running `model.py` (tokenizer and greedy decode loop over `decoder`).
pub fn generate(name: &str, decoder: &str, stop_ids: &[u32]) -> String {
    let mut out = format!(
        "{HEADER} {}: tokenizer and greedy decode loop (Python backend, BLS) over the model \"{decoder}\".\n\
         # Give text_input (needs the Python package tokenizers) or input_ids; max_tokens defaults to 64.\n",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "name: \"{name}\"\nbackend: \"python\"\nmax_batch_size: 0"
    );
    let io = |name, data_type, dims: &[i64], optional| Io {
        name,
        data_type,
        dims: dims.to_vec(),
        optional,
    };
    let inputs = [
        io("text_input", "TYPE_STRING", &[1], true),
        io("input_ids", "TYPE_INT64", &[-1], true),
        io("max_tokens", "TYPE_INT32", &[1], true),
    ];
    io_section(&mut out, "input", &inputs);
    let outputs = [
        io("text_output", "TYPE_STRING", &[1], false),
        io("output_ids", "TYPE_INT64", &[-1], false),
    ];
    io_section(&mut out, "output", &outputs);
    let stops: Vec<String> = stop_ids.iter().map(|i| i.to_string()).collect();
    let _ = writeln!(
        out,
        "parameters [\n  {{\n    key: \"{DECODER_PARAMETER}\"\n    value {{ string_value: \"{decoder}\" }}\n  }},\n  \
         {{\n    key: \"{STOP_PARAMETER}\"\n    value {{ string_value: \"{}\" }}\n  }}\n]",
        stops.join(",")
    );
    let _ = writeln!(out, "instance_group [\n  {{\n    kind: KIND_CPU\n  }}\n]");
    out
}
