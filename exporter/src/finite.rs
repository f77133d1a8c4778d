//! Refusing non-finite weights: a NaN or ±inf in a checkpoint (a diverged run, a bad conversion, a corrupt file)
//! would otherwise be exported without a word and make every generation garbage. Each streaming loop calls
//! [`check`] once per chunk it reads, so the cost is one comparison per element; the error names the tensor, the
//! value and the first bad element (flat index and coordinates). `gemma-export --allow-nonfinite` turns the check
//! off (and the manifest records that it was off).

use crate::ExportError;
use gemma_models::TensorView;

/// Fails on the first non-finite value of `values`, which hold elements `start ..` of `view` (row-major), unless
/// `allow` is set.
#[inline]
pub fn check(
    view: &TensorView<'_>,
    start: usize,
    values: &[f32],
    allow: bool,
) -> Result<(), ExportError> {
    if allow {
        return Ok(());
    }
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(non_finite(view.name, &view.shape, start + i, values[i])),
    }
}

/// The error for element `index` of tensor `name` (of `shape`) holding `value`.
pub fn non_finite(name: &str, shape: &[usize], index: usize, value: f32) -> ExportError {
    ExportError::NonFinite {
        tensor: name.to_string(),
        value,
        index,
        coords: coordinates(shape, index),
    }
}

/// The row-major coordinates of flat element `index` in `shape`.
pub fn coordinates(shape: &[usize], mut index: usize) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for (o, &d) in out.iter_mut().zip(shape).rev() {
        let d = d.max(1);
        *o = index % d;
        index /= d;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_row_major() {
        assert_eq!(coordinates(&[3, 4], 0), vec![0, 0]);
        assert_eq!(coordinates(&[3, 4], 7), vec![1, 3]);
        assert_eq!(coordinates(&[2, 3, 4], 23), vec![1, 2, 3]);
        assert_eq!(coordinates(&[5], 4), vec![4]);
    }

    #[test]
    fn message_names_tensor_index_and_coordinates() {
        let e = non_finite("model.norm.weight", &[2, 8], 11, f32::NAN).to_string();
        assert!(
            e.contains("model.norm.weight") && e.contains("11") && e.contains("[1, 3]"),
            "{e}"
        );
        assert!(e.contains("--allow-nonfinite"), "{e}");
    }
}
