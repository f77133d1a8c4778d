//! The body of Gemma 3n's text decoder graph, after its inputs (`mod.rs`): the layers on the AltUp streams, then
//! the head (the unembedding, the final norm, the lm_head) and the graph outputs.

use super::{
    altup, cpu, layer, n3_of, ple, rms_norm, sizes, Result, Tables, Text, BATCH, SEQUENCE,
};
use crate::builder::Value;
use crate::decoder::head;
use crate::decoder::io::{
    present_key, present_value, GLOBAL_CACHE_DIM, KEPT_SEQUENCE, LOGITS, SLIDING_CACHE_DIM,
    TOTAL_SEQUENCE,
};
use crate::layers::Ctx;
use crate::onnx::DataType;
use gemma_models::contract::window_sized_kv;
use gemma_models::names;

/// The decoder's body after its inputs and `tables`: the layers, the last `keep` positions (cpu; all without),
/// the unembedding, the final norm and the lm_head, and the outputs.
pub(super) fn decode(
    cx: &mut Ctx<'_>,
    tx: &Text,
    (embeds, per_layer): (&Value, &Value),
    tables: &Tables,
    (past, keep): (&[(Value, Value)], Option<&Value>),
) -> Result<()> {
    let (t, prefix) = (&tx.t, tx.prefix.as_str());
    let (h, _, layers) = sizes(t);
    let kv_layers = past.len();
    let x0 = cx.flatten_rows(embeds, h);
    let ple = ple::project(cx, tx, &x0, per_layer)?;
    let mut streams = altup::embed(cx, tx, &x0)?;
    let mut kv: Vec<cpu::LayerKv> = Vec::with_capacity(kv_layers);
    for l in 0..layers {
        let io = layer::LayerIo {
            tables,
            past,
            ple: &ple,
        };
        streams = layer::layer(cx, tx, l, &streams, &io, &mut kv)?;
    }
    // cpu: the streams of the last `keep` positions only `[B, K, k·H]`, whose `[B, K]` shape the hidden states get.
    let batch_seq = match keep {
        Some(keep) => {
            cx.g.set_scope("/model/keep");
            let k = n3_of(t).altup_num_inputs;
            let kept = head::keep_last_positions(
                cx.g,
                &streams,
                keep,
                &tables.batch_seq,
                k * h,
                "streams",
            );
            let rows =
                cx.g.const_i64("rows_streams_hidden", &[-1, k as i64, h as i64]);
            streams = cx.g.reshape("streams_kept", &kept, &rows);
            cx.g.shape_range("batch_kept", &kept, None, 2)
        }
        None => tables.batch_seq.clone(),
    };
    let x = altup::unembed(cx, tx, &streams)?;
    cx.g.set_scope("/model/norm");
    let x = rms_norm(cx, &x, Some(&names::final_norm(prefix)), t.rms_norm_eps)?;
    let hidden = cx.g.const_i64("hidden_dim", &[h as i64]);
    let shape3 = cx.g.concat("hidden_3d", &[&batch_seq, &hidden], 0);
    let x3 = cx.g.reshape("hidden_states", &x, &shape3);
    let logits = cx.lm_head(&x3, t, prefix)?;

    let g = &mut *cx.g;
    g.set_scope("");
    let kept = if keep.is_some() {
        KEPT_SEQUENCE
    } else {
        SEQUENCE
    };
    let logits_dims = [BATCH.into(), kept.into(), t.vocab_size.into()];
    g.output(&logits, LOGITS, DataType::Float, &logits_dims);
    for (l, kv) in kv.iter().enumerate() {
        // The input's dims name the present's length: the cpu graph's buffers are the same tensors.
        let len = match keep {
            Some(_) if window_sized_kv(&t.layer_types, kv_layers, l) => SLIDING_CACHE_DIM,
            Some(_) => GLOBAL_CACHE_DIM,
            None => TOTAL_SEQUENCE,
        };
        let dims = [
            BATCH.into(),
            t.num_key_value_heads.into(),
            len.into(),
            t.head_dim.into(),
        ];
        g.output(&kv.key, &present_key(l), DataType::Float, &dims);
        g.output(&kv.value, &present_value(l), DataType::Float, &dims);
    }
    Ok(())
}
