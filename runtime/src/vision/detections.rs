//! Boxes from PaliGemma's answer to a `detect …` prompt (semantics §8.4), parsed as big_vision's
//! `extract_objs` does: each object is four `<locNNNN>` tokens, `y0 x0 y1 x1` on a 1024 grid, optionally 16
//! `<segNNN>` tokens, then its label; objects are separated by `;`. A coordinate `v` becomes
//! `round(v / 1024 · side)` pixels of the original image (Python's `round`: half to even).
//!
//! ```
//! use gemma_runtime::vision::detections::parse;
//! let d = parse("<loc0000><loc0256><loc0512><loc1023> cat ; <loc0100><loc0100><loc0200> dog", 640, 480);
//! assert_eq!(d.objects.len(), 1);
//! assert_eq!((d.objects[0].label.as_str(), d.objects[0].bbox), ("cat", [160, 0, 639, 240]));
//! assert_eq!(d.notes.len(), 1); // the dog has three coordinates only
//! ```

use serde::Serialize;

/// Whether `prompt` asks for detection (PaliGemma's `detect` task prefix).
pub fn is_detect_prompt(prompt: &str) -> bool {
    let p = prompt.trim_start();
    p.strip_prefix("detect")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// One detected object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Detection {
    pub label: String,
    /// `[x0, y0, x1, y1]` in pixels of the original image.
    #[serde(rename = "box")]
    pub bbox: [u32; 4],
}

/// The objects of an answer, and one note per part that was not a well-formed object (ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Detections {
    pub objects: Vec<Detection>,
    pub notes: Vec<String>,
}

/// Parses `text` (the generated answer) for an image of `width` × `height` pixels.
pub fn parse(text: &str, width: u32, height: u32) -> Detections {
    let mut out = Detections::default();
    for (i, part) in text.split(';').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match object(part, width, height) {
            Ok(d) => out.objects.push(d),
            Err(why) => out
                .notes
                .push(format!("object {} ({part:?}) ignored: {why}", i + 1)),
        }
    }
    out
}

/// One `;`-separated part: text before the first `<loc` is skipped, as big_vision keeps it apart.
fn object(part: &str, width: u32, height: u32) -> Result<Detection, String> {
    let start = part
        .find("<loc")
        .ok_or_else(|| "no <locNNNN> tokens".to_string())?;
    let mut rest = &part[start..];
    let mut coords = [0u32; 4];
    for (k, c) in coords.iter_mut().enumerate() {
        rest = rest.trim_start();
        *c = match take_token(rest, "<loc", 4) {
            Some((v, tail)) => {
                rest = tail;
                v
            }
            None => return Err(format!("{k} <locNNNN> tokens where 4 are needed")),
        };
    }
    // Segmentation tokens, if any, belong to the mask (not decoded here).
    loop {
        rest = rest.trim_start();
        match take_token(rest, "<seg", 3) {
            Some((_, tail)) => rest = tail,
            None => break,
        }
    }
    let label = rest.trim();
    if label.is_empty() || label.contains(['<', '>']) {
        return Err(format!("expected a label after the box, found {label:?}"));
    }
    let [y0, x0, y1, x1] = coords;
    let px = |v: u32, side: u32| (f64::from(v) / 1024.0 * f64::from(side)).round_ties_even() as u32;
    Ok(Detection {
        label: label.to_string(),
        bbox: [px(x0, width), px(y0, height), px(x1, width), px(y1, height)],
    })
}

/// `<prefix` + exactly `digits` digits + `>` at the start of `s`: the number and what follows.
fn take_token<'a>(s: &'a str, prefix: &str, digits: usize) -> Option<(u32, &'a str)> {
    let body = s.strip_prefix(prefix)?;
    let number = body.get(..digits)?;
    if !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tail = body[digits..].strip_prefix('>')?;
    Some((number.parse().ok()?, tail))
}

/// The boxes as lines for the terminal: `cat: x 160–639, y 0–240 px`, then the notes; `no objects` for an answer
/// without any.
pub fn describe(d: &Detections) -> Vec<String> {
    if d.objects.is_empty() && d.notes.is_empty() {
        return vec!["no objects".to_string()];
    }
    d.objects
        .iter()
        .map(|o| {
            let [x0, y0, x1, y1] = o.bbox;
            format!("{}: x {x0}–{x1}, y {y0}–{y1} px", o.label)
        })
        .chain(d.notes.iter().map(|n| format!("note: {n}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, bbox: [u32; 4]) -> Detection {
        Detection {
            label: label.into(),
            bbox,
        }
    }

    #[test]
    fn several_objects_with_segmentation_and_spacing() {
        let seg: String = (0..16).map(|i| format!("<seg{i:03}>")).collect();
        let text = format!(
            "<loc0000><loc0000><loc1024><loc1024> big cat ; <loc0512> <loc0256> <loc0768> <loc0512>{seg} dog;"
        );
        let d = parse(&text, 100, 200);
        assert_eq!(
            d.objects,
            vec![
                det("big cat", [0, 0, 100, 200]),
                det("dog", [25, 100, 50, 150])
            ]
        );
        assert!(d.notes.is_empty(), "{:?}", d.notes);
    }

    #[test]
    fn rounding_is_half_to_even_like_python() {
        // 2/1024 · 256 = 0.5 → 0; 6/1024 · 256 = 1.5 → 2.
        let d = parse("<loc0002><loc0006><loc0002><loc0006> x", 256, 256);
        assert_eq!(d.objects, vec![det("x", [2, 0, 2, 0])]);
    }

    #[test]
    fn malformed_parts_are_ignored_with_a_note() {
        let cases = [
            ("a cat", "no <locNNNN> tokens"),
            ("<loc0001><loc0002> cat", "2 <locNNNN> tokens where 4"),
            ("<loc0001><loc0002><loc0003><loc0004>", "expected a label"),
            (
                "<loc0001><loc0002><loc0003><loc0004><seg001",
                "expected a label",
            ),
            (
                "<loc1><loc0002><loc0003><loc0004> cat",
                "0 <locNNNN> tokens",
            ),
            (
                "<loc0001><loc0002><loc0003><locabcd> cat",
                "3 <locNNNN> tokens",
            ),
        ];
        for (text, why) in cases {
            let d = parse(
                &format!("{text} ; <loc0000><loc0000><loc0512><loc0512> ok"),
                10,
                10,
            );
            assert_eq!(d.objects, vec![det("ok", [0, 0, 5, 5])], "{text}");
            assert_eq!(d.notes.len(), 1, "{text}");
            assert!(d.notes[0].contains(why), "{text}: {}", d.notes[0]);
        }
        assert_eq!(parse("", 10, 10), Detections::default());
        assert_eq!(parse(" ; ;", 10, 10), Detections::default());
    }

    #[test]
    fn detect_prompts_and_readable_lines() {
        assert!(is_detect_prompt("detect cat ; dog"));
        assert!(is_detect_prompt("  detect car"));
        assert!(!is_detect_prompt("detection of cats"));
        assert!(!is_detect_prompt("caption en"));
        assert_eq!(
            describe(&parse("\n", 10, 10)),
            vec!["no objects".to_string()]
        );
        let d = parse("<loc0000><loc0000><loc0512><loc0512> cat ; junk", 10, 10);
        assert_eq!(
            describe(&d),
            vec![
                "cat: x 0–5, y 0–5 px".to_string(),
                "note: object 2 (\"junk\") ignored: no <locNNNN> tokens".to_string()
            ]
        );
    }
}
