//! Which execution provider runs which operator of an export, checked before a session is created, so that
//! `--ep cuda|tensorrt|coreml` never runs part of a graph on the CPU without saying so (issue 15 item 5).
//!
//! Two guards work together. [`check`] reads the graph's nodes and refuses, by name, the ONNX Runtime contrib ops
//! (`com.microsoft`) that gemma-export writes and that the provider has no kernel for, and says which export to
//! make instead. Every other node is left to ONNX Runtime itself: [`crate::ort_env::create_session`] sets
//! `session.disable_cpu_ep_fallback`, so a node that no provider but the CPU takes fails session creation instead of
//! running on the CPU. `--allow-fallback` ([`crate::RuntimeOptions::allow_fallback`]) turns both off.
//!
//! The table follows ONNX Runtime's registered kernels (its `OperatorKernels.md`): the CUDA provider has
//! `MatMulNBits`, `GatherBlockQuantized`, `RotaryEmbedding` and `SkipSimplifiedLayerNormalization` for float32,
//! float16 and bfloat16, but `GroupQueryAttention` for float16 and bfloat16 only, while the `cpu` graph keeps its
//! activations and KV cache in float32 at every precision. The vision encoder of an int8/int4 `cpu`-graph export
//! adds `MultiHeadAttention` (CUDA: float32 and float16) and `DynamicQuantizeMatMul` (no CUDA kernel). TensorRT and CoreML run no contrib op; with the `cuda`
//! feature, nodes TensorRT declines go to the CUDA provider (see `ExecutionProvider::dispatch`), so its table is
//! the union of both.

use std::path::{Path, PathBuf};

use crate::ort_env::ExecutionProvider;

mod wire;

/// ONNX Runtime's contrib-op domain.
pub const CONTRIB_DOMAIN: &str = "com.microsoft";

/// How far a provider runs one op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Support {
    Yes,
    /// Only when the graph's activations are float16 or bfloat16.
    HalfOnly,
    No,
}

/// `(op, CUDA, TensorRT, CoreML)` for every contrib op gemma-export writes. A contrib op not listed is treated as
/// unsupported by every provider but the CPU.
const CONTRIB_OPS: [(&str, Support, Support, Support); 7] = [
    (
        "GroupQueryAttention",
        Support::HalfOnly,
        Support::No,
        Support::No,
    ),
    ("MatMulNBits", Support::Yes, Support::No, Support::No),
    (
        "GatherBlockQuantized",
        Support::Yes,
        Support::No,
        Support::No,
    ),
    ("RotaryEmbedding", Support::Yes, Support::No, Support::No),
    // The SigLIP tower of int8/int4 `--graph cpu` vision exports (gemma-export's `vision/kernels.rs`): CUDA has
    // MultiHeadAttention for float32 and float16, and no DynamicQuantizeMatMul.
    ("MultiHeadAttention", Support::Yes, Support::No, Support::No),
    (
        "DynamicQuantizeMatMul",
        Support::No,
        Support::No,
        Support::No,
    ),
    (
        "SkipSimplifiedLayerNormalization",
        Support::Yes,
        Support::No,
        Support::No,
    ),
];

/// How many node names an error lists per op.
const NAMES_SHOWN: usize = 3;

/// Nodes of one op type that the provider cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOp {
    pub domain: String,
    pub op_type: String,
    pub count: usize,
    /// The first [`NAMES_SHOWN`] node names, in graph order.
    pub first_nodes: Vec<String>,
    /// Why, in a few words ("float32 activations; CUDA runs it in float16/bfloat16 only").
    pub why: String,
}

impl std::fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} ×{} ({}): {}",
            self.domain,
            self.op_type,
            self.count,
            self.why,
            self.first_nodes.join(", ")
        )?;
        if self.count > self.first_nodes.len() {
            write!(f, ", …")?;
        }
        Ok(())
    }
}

/// Why an export cannot run on the chosen execution provider as it is.
#[derive(Debug, thiserror::Error)]
pub enum EpSupportError {
    #[error("{}: cannot read the graph to check it against --ep {provider}: {detail}", .path.display())]
    Unreadable {
        provider: ExecutionProvider,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "--ep {provider}: {} has nodes that the {provider} execution provider cannot run, which ONNX Runtime would \
         silently run on the CPU:\n  {}\nExport for this provider instead: {advice}; or pass --allow-fallback to run \
         those nodes on the CPU.",
        .path.display(),
        .ops.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ")
    )]
    Unsupported {
        provider: ExecutionProvider,
        path: PathBuf,
        ops: Vec<UnsupportedOp>,
        advice: String,
    },
}

/// One node as far as this check needs it.
#[derive(Clone, Debug, Default)]
pub struct Node {
    pub domain: String,
    pub op_type: String,
    pub name: String,
}

/// The nodes of a graph (subgraphs included) and its activation type.
#[derive(Clone, Debug, Default)]
pub struct GraphOps {
    pub nodes: Vec<Node>,
    /// ONNX `TensorProto.DataType` of the `logits` output (else the first output): the type gemma-export keeps
    /// every activation in.
    pub activation_type: Option<i32>,
}

/// ONNX element types for float16 and bfloat16.
const FLOAT16: i32 = 10;
const BFLOAT16: i32 = 16;

/// Checks the graph at `model` against `provider` (always passes for the CPU).
pub fn check(model: &Path, provider: ExecutionProvider) -> Result<(), EpSupportError> {
    if provider == ExecutionProvider::Cpu {
        return Ok(());
    }
    let unreadable = |detail: String| EpSupportError::Unreadable {
        provider,
        path: model.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(model).map_err(|e| unreadable(e.to_string()))?;
    let graph = wire::graph_ops(&bytes).map_err(unreadable)?;
    let ops = unsupported(&graph, provider);
    if ops.is_empty() {
        return Ok(());
    }
    let quantized = ops.iter().any(|o| {
        matches!(
            o.op_type.as_str(),
            "MatMulNBits" | "GatherBlockQuantized" | "DynamicQuantizeMatMul"
        )
    });
    let advice = match provider {
        ExecutionProvider::Cuda => "gemma-export SRC -o OUT --graph portable (standard ONNX operators, which the \
                                    CUDA provider runs; add --precision fp16 for half the weight memory)"
            .to_string(),
        _ => format!(
            "gemma-export SRC -o OUT --graph portable --precision fp16 (standard ONNX operators only{})",
            if quantized {
                "; int8/int4 exports use ONNX Runtime's contrib quantized operators at every --graph"
            } else {
                ""
            }
        ),
    };
    Err(EpSupportError::Unsupported {
        provider,
        path: model.to_path_buf(),
        ops,
        advice,
    })
}

/// The contrib ops of `graph` that `provider` cannot run, grouped by op type in order of first appearance.
pub fn unsupported(graph: &GraphOps, provider: ExecutionProvider) -> Vec<UnsupportedOp> {
    let half = matches!(graph.activation_type, Some(FLOAT16 | BFLOAT16));
    let mut out: Vec<UnsupportedOp> = Vec::new();
    for node in graph.nodes.iter().filter(|n| n.domain == CONTRIB_DOMAIN) {
        let Some(why) = refusal(provider, &node.op_type, half) else {
            continue;
        };
        let name = if node.name.is_empty() {
            "(unnamed)".to_string()
        } else {
            node.name.clone()
        };
        match out.iter_mut().find(|o| o.op_type == node.op_type) {
            Some(op) => {
                op.count += 1;
                if op.first_nodes.len() < NAMES_SHOWN {
                    op.first_nodes.push(name);
                }
            }
            None => out.push(UnsupportedOp {
                domain: node.domain.clone(),
                op_type: node.op_type.clone(),
                count: 1,
                first_nodes: vec![name],
                why,
            }),
        }
    }
    out
}

/// Why `provider` cannot run contrib op `op`, or `None` when it can.
fn refusal(provider: ExecutionProvider, op: &str, half: bool) -> Option<String> {
    let row = CONTRIB_OPS.iter().find(|(name, ..)| *name == op);
    let Some(&(_, cuda, tensorrt, coreml)) = row else {
        return Some("an operator gemma-onnx has no provider table for".into());
    };
    let runs = |s: Support| s == Support::Yes || (s == Support::HalfOnly && half);
    let ok = match provider {
        ExecutionProvider::Cpu => true,
        ExecutionProvider::Cuda => runs(cuda),
        ExecutionProvider::TensorRt => runs(tensorrt) || (cfg!(feature = "cuda") && runs(cuda)),
        ExecutionProvider::CoreMl => runs(coreml),
    };
    if ok {
        None
    } else if provider == ExecutionProvider::Cuda && cuda == Support::HalfOnly {
        Some("float32 activations; the CUDA provider runs it in float16/bfloat16 only".into())
    } else {
        Some(format!("the {provider} provider has no kernel for it"))
    }
}
