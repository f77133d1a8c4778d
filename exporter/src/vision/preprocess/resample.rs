//! Pillow's `Image.resize(size, BILINEAR)` (and `BICUBIC`, [`Filter`]) on uint8 RGB, bit for bit, in standard ONNX
//! ops.
//!
//! Why not ONNX `Resize` (opset 18+, `antialias=1`, linear, half_pixel)? ONNX Runtime 1.31 implements it with
//! other filter bounds: on a 480×640 → 64×64 test image it differs from Pillow by up to 18 LSB (0.14 after
//! normalisation), far outside the 0.02 the processor port must meet. Pillow's algorithm
//! (`libImaging/Resample.c`, Pillow 13) is:
//!
//! * Separable passes, each rounding to uint8. The horizontal pass runs first, except when the height shrinks
//!   by more than twice as many pixels as the width (`h − S_h > 0 && h − S_h > 2·(w − S_w)`), where the vertical
//!   pass runs first. The order changes results by ±1 LSB, so the graph follows it with an `If`.
//! * For each output index `o` of a pass from `n` to `S` pixels: `scale = n/S`, `fs = max(scale, 1)` (the
//!   triangle widened when shrinking: the antialiasing), `center = (o + 0.5)·scale`,
//!   `xmin = max(⌊center − fs + 0.5⌋, 0)`, `xmax = min(⌊center + fs + 0.5⌋, n)`, weights
//!   `w_t = max(0, 1 − |(t − center + 0.5)/fs|)` for `t ∈ [xmin, xmax)` summed left to right into `ww`, then
//!   `k_t = ⌊w_t/ww · 2²² + 0.5⌋`, and `out = min((2²¹ + Σ k_t·pix_t) >> 22, 255)`.
//!
//! The graph computes exactly that: the weights in float64 with the same operation order (a Loop over taps keeps
//! the left-to-right sum), the sums in int32 (they stay below 2³¹: Σk ≈ 2²², pixels ≤ 255). A pass does not build
//! an `S × n` matrix (a MatMul would cost `n·S` per row, 80× the filter's ~`2n` taps at 4032 → 896 px); it loops
//! over the `2·⌈fs⌉ + 1` tap positions instead, gathering one column (or row) of the image per output pixel per
//! tap: work and memory stay proportional to the pass's output. A pass whose size does not change is skipped,
//! as Pillow does (its arithmetic would be the identity anyway: weights 2²² and 0).
//!
//! It costs more than Pillow but far less than the vision encoder that follows (docs/benchmarks.md, "The image
//! path").

use super::ops::{self, at, counted_loop, f64s, f64t, i32s, i64s, i64v};
use crate::builder::{Attr, Dim, GraphBuilder, Value};
use crate::onnx::DataType;

/// Fixed-point precision of Pillow's 8-bit resampling (`PRECISION_BITS = 32 − 8 − 2`).
const PRECISION_BITS: u32 = 22;

/// Pillow's resampling filter of a resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BILINEAR` (Gemma 3): the triangle, support 1.
    Bilinear,
    /// `Image.BICUBIC` (SigLIP, PaliGemma): Keys' cubic with `a = −0.5`, support 2. Its weights can be negative:
    /// Pillow rounds those half away from zero (`(int)(−0.5 + k·2²²)`) and clips sums below 0 to 0.
    Bicubic,
}

impl Filter {
    /// The filter of PIL resample code `code` (2 or 3; anything else is bilinear, which the config refuses first).
    pub fn from_pil(code: i64) -> Filter {
        match code {
            3 => Filter::Bicubic,
            _ => Filter::Bilinear,
        }
    }
}

/// Resizes `x` (uint8 HWC `[h, w, 3]`, h, w ≥ 1) like Pillow and returns it planar, `[3, out_h, out_w]`;
/// `scope` names the nodes.
///
/// Every pass resamples axis 0 of a `[n, a, 3]` tensor, transposing in between: a tap then gathers whole
/// contiguous rows and its weights broadcast over runs of `a·3` values, which is several times faster than
/// gathering single bytes along the last axis or broadcasting over runs of 3 (uint8 transposes are cheap next
/// to the int32 sums).
pub fn resize(
    g: &mut GraphBuilder,
    scope: &str,
    x: &Value,
    (out_h, out_w): (usize, usize),
    filter: Filter,
) -> Value {
    let prev = g.set_scope(scope);
    // Pillow's pass order: vertical first iff (h − S_h) > 0 && (h − S_h) > 2·(w − S_w).
    let shape = g.op("Shape", "shape", &[x], &[]);
    let (i0, i1) = (i64s(g, "idx0", 0), i64s(g, "idx1", 1));
    let h = at(g, "h", &shape, &i0, 0);
    let w = at(g, "w", &shape, &i1, 0);
    let (sh, sw) = (
        i64s(g, "out_h", out_h as i64),
        i64s(g, "out_w", out_w as i64),
    );
    let dh = g.op("Sub", "dh", &[&h, &sh], &[]);
    let dw = g.op("Sub", "dw", &[&w, &sw], &[]);
    let zero = i64s(g, "zero", 0);
    let two = i64s(g, "two", 2);
    let dw2 = g.op("Mul", "dw2", &[&dw, &two], &[]);
    let shrinks = g.op("Less", "h_shrinks", &[&zero, &dh], &[]);
    let more = g.op("Less", "h_shrinks_more", &[&dw2, &dh], &[]);
    let vertical_first = g.op("And", "vertical_first", &[&shrinks, &more], &[]);

    let dims: Vec<Dim> = vec![3i64.into(), out_h.into(), out_w.into()];
    let swap = |b: &mut GraphBuilder, label: &str, v: &Value, perm: &[i64]| {
        b.op(
            "Transpose",
            label,
            &[v],
            &[("perm", Attr::Ints(perm.to_vec()))],
        )
    };
    let vscope = format!("{scope}/vertical_first");
    let then_branch = ops::branch(&vscope, DataType::Uint8, &dims, |b| {
        let y = pass(b, &format!("{vscope}/rows"), x, out_h, filter); // [S_h, w, 3]
        let y = swap(b, "to_wh", &y, &[1, 0, 2]); // [w, S_h, 3]
        let y = pass(b, &format!("{vscope}/cols"), &y, out_w, filter); // [S_w, S_h, 3]
        swap(b, "to_chw", &y, &[2, 1, 0])
    });
    let hscope = format!("{scope}/horizontal_first");
    let else_branch = ops::branch(&hscope, DataType::Uint8, &dims, |b| {
        let y = swap(b, "to_wh", x, &[1, 0, 2]); // [w, h, 3]
        let y = pass(b, &format!("{hscope}/cols"), &y, out_w, filter); // [S_w, h, 3]
        let y = swap(b, "to_hw", &y, &[1, 0, 2]); // [h, S_w, 3]
        let y = pass(b, &format!("{hscope}/rows"), &y, out_h, filter); // [S_h, S_w, 3]
        swap(b, "to_chw", &y, &[2, 0, 1])
    });
    let out = g.op(
        "If",
        "pass_order",
        &[&vertical_first],
        &[
            ("then_branch", Attr::Graph(then_branch)),
            ("else_branch", Attr::Graph(else_branch)),
        ],
    );
    g.set_scope(prev);
    out
}

/// One Pillow pass along axis 0 of `x` (uint8 `[n, a, 3]`) to `out_len`, skipped (as Pillow does) when `n` is
/// already `out_len`: the arithmetic would give the identity anyway, and an 896×896 input costs ~5× less.
fn pass(g: &mut GraphBuilder, scope: &str, x: &Value, out_len: usize, filter: Filter) -> Value {
    let prev = g.set_scope(scope);
    let shape = g.op("Shape", "shape", &[x], &[]);
    let axis0 = i64s(g, "axis0", 0);
    let n = at(g, "in_len", &shape, &axis0, 0);
    let s = i64s(g, "out_len", out_len as i64);
    let same = g.op("Equal", "same_size", &[&n, &s], &[]);
    let dims: Vec<Dim> = vec![(out_len as i64).into(), "rest".into(), 3i64.into()];
    let keep_scope = format!("{scope}/unchanged");
    let keep = ops::branch(&keep_scope, DataType::Uint8, &dims, |b| {
        b.op("Identity", "input", &[x], &[])
    });
    let resample_scope = format!("{scope}/resample");
    let resample = ops::branch(&resample_scope, DataType::Uint8, &dims, |b| {
        resample_axis0(b, &resample_scope, x, (&shape, &n), out_len, filter)
    });
    let out = g.op(
        "If",
        "skip_if_same_size",
        &[&same],
        &[
            ("then_branch", Attr::Graph(keep)),
            ("else_branch", Attr::Graph(resample)),
        ],
    );
    g.set_scope(prev);
    out
}

/// The pass itself: `x` is `[n, a, 3]` with shape `shape` and `n` rows.
fn resample_axis0(
    g: &mut GraphBuilder,
    scope: &str,
    x: &Value,
    (shape, n): (&Value, &Value),
    out_len: usize,
    filter: Filter,
) -> Value {
    let prev = g.set_scope(scope);
    let s = out_len as i64;

    // Filter geometry, per output index (float64, Pillow's `precompute_coeffs`).
    let n_d = g.cast("in_len_f64", n, DataType::Double);
    let out_d = f64s(g, "out_len", s as f64);
    let scale = g.op("Div", "scale", &[&n_d, &out_d], &[]);
    let one = f64s(g, "one", 1.0);
    let half = f64s(g, "half", 0.5);
    let zero_d = f64s(g, "zero", 0.0);
    // support = filterscale · the filter's support (1 for bilinear: filterscale itself).
    let fs = g.op("Max", "filterscale", &[&scale, &one], &[]);
    let inv_fs = g.op("Div", "inv_filterscale", &[&one, &fs], &[]);
    let fs = match filter {
        Filter::Bilinear => fs,
        Filter::Bicubic => {
            let two_d = f64s(g, "bicubic_support", 2.0);
            g.op("Mul", "support", &[&fs, &two_d], &[])
        }
    };
    let ceil_fs = g.op("Ceil", "ceil_support", &[&fs], &[]);
    let ceil_fs = g.cast("ceil_support_i64", &ceil_fs, DataType::Int64);
    let two = i64s(g, "two", 2);
    let one_i = i64s(g, "one_i64", 1);
    let taps = g.op("Mul", "taps2", &[&ceil_fs, &two], &[]);
    let taps = g.op("Add", "taps", &[&taps, &one_i], &[]);
    let mids: Vec<f64> = (0..out_len).map(|o| o as f64 + 0.5).collect();
    let mids = f64t(g, "mids", &[s], &mids);
    let center = g.op("Mul", "center", &[&mids, &scale], &[]);
    let lo = g.op("Sub", "center_minus_support", &[&center, &fs], &[]);
    let lo = g.op("Add", "xmin_unrounded", &[&lo, &half], &[]);
    let lo = g.op("Floor", "xmin_floor", &[&lo], &[]);
    let xmin = g.op("Max", "xmin", &[&lo, &zero_d], &[]);
    let hi = g.op("Add", "center_plus_support", &[&center, &fs], &[]);
    let hi = g.op("Add", "xmax_unrounded", &[&hi, &half], &[]);
    let hi = g.op("Floor", "xmax_floor", &[&hi], &[]);
    let xmax = g.op("Min", "xmax", &[&hi, &n_d], &[]);
    let count = g.op("Sub", "tap_count", &[&xmax, &xmin], &[]);

    // Triangle weights, one tap position j per iteration, and their left-to-right sum `ww`.
    let ww0 = f64t(g, "ww_init", &[s], &vec![0.0; out_len]);
    let wscope = format!("{scope}/weights");
    let f64_vec = vec![Dim::Fixed(s)];
    let outs = counted_loop(
        g,
        "weights",
        &wscope,
        &taps,
        &[(&ww0, DataType::Double, f64_vec.clone())],
        &[(DataType::Double, f64_vec)],
        |b, j, carried| {
            let jd = b.cast("j_f64", j, DataType::Double);
            let t = b.op("Add", "t", &[&xmin, &jd], &[]);
            let v = b.op("Sub", "t_minus_center", &[&t, &center], &[]);
            let v = b.op("Add", "plus_half", &[&v, &half], &[]);
            let v = b.op("Mul", "scaled", &[&v, &inv_fs], &[]);
            let a = b.op("Abs", "abs", &[&v], &[]);
            let inside = b.op("Less", "inside", &[&a, &one], &[]);
            let w = match filter {
                Filter::Bilinear => {
                    let tri = b.op("Sub", "triangle", &[&one, &a], &[]);
                    b.op("Where", "w_filter", &[&inside, &tri, &zero_d], &[])
                }
                Filter::Bicubic => bicubic(b, &a, &inside, &one, &zero_d),
            };
            let valid = b.op("Less", "valid", &[&jd, &count], &[]);
            let w = b.op("Where", "w", &[&valid, &w, &zero_d], &[]);
            let ww = b.op("Add", "ww", &[&carried[0], &w], &[]);
            vec![ww, w]
        },
    );
    let (ww, weights) = (&outs[0], &outs[1]);
    // k = ⌊w / ww · 2²² + 0.5⌋ as int32, [taps, S].
    let k = g.op("Div", "normalized", &[weights, ww], &[]);
    let unit = f64s(g, "fixed_point_one", (1u64 << PRECISION_BITS) as f64);
    let k = g.op("Mul", "fixed_point", &[&k, &unit], &[]);
    let k = match filter {
        Filter::Bilinear => {
            let k = g.op("Add", "round", &[&k, &half], &[]);
            g.op("Floor", "trunc", &[&k], &[])
        }
        Filter::Bicubic => {
            // (int)(k + 0.5) for k ≥ 0, (int)(k − 0.5) below: C's casts truncate toward zero.
            let up = g.op("Add", "round", &[&k, &half], &[]);
            let up = g.op("Floor", "trunc", &[&up], &[]);
            let down = g.op("Sub", "round_negative", &[&k, &half], &[]);
            let down = g.op("Ceil", "trunc_negative", &[&down], &[]);
            let negative = g.op("Less", "negative", &[&k, &zero_d], &[]);
            g.op("Where", "rounded", &[&negative, &down, &up], &[])
        }
    };
    let k = g.cast("coefficients", &k, DataType::Int32);

    // Σ_j k_j · x[min(xmin + j, n − 1)], starting from 2²¹ (rounding), in int32.
    let xmin_i = g.cast("xmin_i64", &xmin, DataType::Int64);
    let last = g.op("Sub", "last_index", &[n, &one_i], &[]);
    let (from1, to3) = (i64v(g, "from1", &[1]), i64v(g, "to3", &[3]));
    let rest = g.op("Slice", "rest_dims", &[shape, &from1, &to3], &[]);
    let sv = i64v(g, "out_len_vec", &[s]);
    let out_shape = g.op(
        "Concat",
        "out_shape",
        &[&sv, &rest],
        &[("axis", Attr::Int(0))],
    );
    let bias = i32s(g, "rounding", 1 << (PRECISION_BITS - 1));
    let acc0 = g.op("Expand", "acc_init", &[&bias, &out_shape], &[]);
    let k_shape = i64v(g, "k_shape", &[s, 1, 1]);
    let acc_dims: Vec<Dim> = vec![s.into(), "rest".into(), 3i64.into()];
    let tscope = format!("{scope}/taps");
    let outs = counted_loop(
        g,
        "taps",
        &tscope,
        &taps,
        &[(&acc0, DataType::Int32, acc_dims)],
        &[],
        |b, j, carried| {
            let idx = b.op("Add", "index", &[&xmin_i, j], &[]);
            let idx = b.op("Min", "index_clamped", &[&idx, &last], &[]);
            let px = b.op("Gather", "pixels", &[x, &idx], &[("axis", Attr::Int(0))]);
            let px = b.cast("pixels_i32", &px, DataType::Int32);
            let kj = at(b, "k_j", &k, j, 0);
            let kj = b.op("Reshape", "k_j_bcast", &[&kj, &k_shape], &[]);
            let term = b.op("Mul", "term", &[&px, &kj], &[]);
            vec![b.op("Add", "acc", &[&carried[0], &term], &[])]
        },
    );
    let shift = i32s(g, "fixed_point_one_i32", 1 << PRECISION_BITS);
    let y = g.op("Div", "shift", &[&outs[0], &shift], &[]);
    let max = i32s(g, "max_u8", 255);
    let mut y = g.op("Min", "clip", &[&y, &max], &[]);
    if filter == Filter::Bicubic {
        let zero = i32s(g, "min_u8", 0);
        y = g.op("Max", "clip_low", &[&y, &zero], &[]);
    }
    let y = g.cast("to_u8", &y, DataType::Uint8);
    g.set_scope(prev);
    y
}

/// Pillow's `bicubic_filter` at `a = |x|` (float64, its operation order): `((1.5·a − 2.5)·a)·a + 1` below 1,
/// `(((a − 5)·a + 8)·a − 4)·(−0.5)` below 2, else 0.
fn bicubic(b: &mut GraphBuilder, a: &Value, below_one: &Value, one: &Value, zero: &Value) -> Value {
    let c = |b: &mut GraphBuilder, name: &str, v: f64| f64s(b, name, v);
    let (k15, k25) = (c(b, "cubic_1_5", 1.5), c(b, "cubic_2_5", 2.5));
    let near = b.op("Mul", "near_1", &[&k15, a], &[]);
    let near = b.op("Sub", "near_2", &[&near, &k25], &[]);
    let near = b.op("Mul", "near_3", &[&near, a], &[]);
    let near = b.op("Mul", "near_4", &[&near, a], &[]);
    let near = b.op("Add", "near", &[&near, one], &[]);
    let (k5, k8, k4, ka) = (
        c(b, "cubic_5", 5.0),
        c(b, "cubic_8", 8.0),
        c(b, "cubic_4", 4.0),
        c(b, "cubic_a", -0.5),
    );
    let far = b.op("Sub", "far_1", &[a, &k5], &[]);
    let far = b.op("Mul", "far_2", &[&far, a], &[]);
    let far = b.op("Add", "far_3", &[&far, &k8], &[]);
    let far = b.op("Mul", "far_4", &[&far, a], &[]);
    let far = b.op("Sub", "far_5", &[&far, &k4], &[]);
    let far = b.op("Mul", "far", &[&far, &ka], &[]);
    let two = c(b, "cubic_support", 2.0);
    let below_two = b.op("Less", "inside_support", &[a, &two], &[]);
    let outer = b.op("Where", "w_far", &[&below_two, &far, zero], &[]);
    b.op("Where", "w_filter", &[below_one, &near, &outer], &[])
}
