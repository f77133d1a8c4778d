//! Image files → RGB pixels, the way transformers feeds Gemma 3's processor (semantics §6.2 step 1): JPEG, PNG, WebP,
//! GIF (first frame) and BMP through the `image` crate; EXIF orientation applied (as `transformers.image_utils.
//! load_image` does with `exif_transpose`); alpha composited over **white** with Pillow's integer formula (bit-exact
//! with `PIL.Image.alpha_composite`, which the processor's `convert_to_rgb` uses); grey replicated to RGB.
//!
//! Decompression bombs: a few hundred bytes of PNG can claim 100000×100000 pixels. The header is read first and an
//! image over [`ImageLimits`] is refused before any pixel buffer exists; the decoder then runs with the same limits
//! (`image::Limits`) as a second guard.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

pub use crate::error::ImageErrorKind;
use crate::error::{Error, Result};

/// How big an image may be. The defaults allow any photo (16384 px a side, 64 megapixels) and refuse bombs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_width: u32,
    pub max_height: u32,
    /// Most pixels (width × height).
    pub max_pixels: u64,
    /// Largest file read into memory.
    pub max_file_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_width: 16384,
            max_height: 16384,
            max_pixels: 64 << 20,
            max_file_bytes: 256 << 20,
        }
    }
}

impl ImageLimits {
    /// The `image` crate's limits: sides, and the allocation of the largest buffer the decoder may make (8 bytes a
    /// pixel covers 16-bit RGBA).
    fn decoder_limits(&self) -> image::Limits {
        let mut l = image::Limits::default();
        l.max_image_width = Some(self.max_width);
        l.max_image_height = Some(self.max_height);
        l.max_alloc = Some(self.max_pixels.saturating_mul(8));
        l
    }

    fn describe(&self) -> String {
        format!(
            "{}×{} pixels a side and {} megapixels",
            self.max_width,
            self.max_height,
            self.max_pixels as f64 / (1 << 20) as f64
        )
    }
}

fn err(path: &Path, kind: ImageErrorKind, message: impl Into<String>) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        kind,
        message: message.into(),
    }
}

/// Reads and decodes an image file into RGB (see the module docs).
pub fn load_image(path: &Path, limits: &ImageLimits) -> Result<RgbImage> {
    let meta = std::fs::metadata(path).map_err(|e| {
        err(
            path,
            ImageErrorKind::Unreadable,
            format!("cannot read the image: {e}"),
        )
    })?;
    if meta.is_dir() {
        return Err(err(
            path,
            ImageErrorKind::Unreadable,
            "is a folder, not an image file",
        ));
    }
    if meta.len() > limits.max_file_bytes {
        return Err(err(
            path,
            ImageErrorKind::TooLarge,
            format!(
                "the file has {} bytes, over the limit of {} bytes",
                meta.len(),
                limits.max_file_bytes
            ),
        ));
    }
    // The size is also enforced while reading: devices and pipes (`/dev/zero`) report 0 bytes.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read;
            f.take(limits.max_file_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
        })
        .map_err(|e| {
            err(
                path,
                ImageErrorKind::Unreadable,
                format!("cannot read the image: {e}"),
            )
        })?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(err(
            path,
            ImageErrorKind::TooLarge,
            format!(
                "more than {} bytes could be read (a device or pipe?), over the limit",
                limits.max_file_bytes
            ),
        ));
    }
    decode_image(&bytes, path, limits)
}

/// Decodes image bytes into RGB; `name` only names the image in errors.
pub fn decode_image(bytes: &[u8], name: &Path, limits: &ImageLimits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(err(name, ImageErrorKind::ZeroSized, "the file is empty"));
    }
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .expect("reading from memory cannot fail")
    };
    let format = match reader().format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif | ImageFormat::Bmp)) => f,
        Some(other) => {
            return Err(err(
                name,
                ImageErrorKind::Unsupported,
                format!(
                    "{other:?} images are not supported (JPEG, PNG, WebP, GIF and BMP are); convert it first"
                ),
            ))
        }
        None => {
            return Err(err(
                name,
                ImageErrorKind::Unsupported,
                format!(
                    "not an image in a supported format (JPEG, PNG, WebP, GIF, BMP); the file starts with {}",
                    magic(bytes)
                ),
            ))
        }
    };
    let fmt = format_name(format);
    if format == ImageFormat::Jpeg {
        // The JPEG decoder fills a cut-off scan with grey and succeeds; PIL (which transformers uses) refuses
        // such a file ("image file is truncated"), and so do we.
        if let Err(why) = jpeg_complete(bytes) {
            return Err(err(
                name,
                ImageErrorKind::Corrupt,
                format!("the JPEG file is truncated: {why}; PIL refuses it too"),
            ));
        }
    }
    // The header alone: no pixel memory yet.
    let (w, h) = match reader().into_dimensions() {
        Ok(d) => d,
        // Decoders reject a zero side as a generic format error: say what it is when the header shows it.
        Err(_) if raw_dimensions(bytes, format).is_some_and(|(w, h)| w == 0 || h == 0) => (0, 0),
        Err(e) => return Err(header_error(name, fmt, e)),
    };
    if w == 0 || h == 0 {
        let (w, h) = raw_dimensions(bytes, format).unwrap_or((w, h));
        return Err(err(
            name,
            ImageErrorKind::ZeroSized,
            format!("the {fmt} image is {w}×{h} pixels (zero-sized)"),
        ));
    }
    if w > limits.max_width || h > limits.max_height || (w as u64) * (h as u64) > limits.max_pixels
    {
        return Err(too_large(name, fmt, w, h, limits));
    }
    let mut r = reader();
    r.limits(limits.decoder_limits());
    let mut decoder = r
        .into_decoder()
        .map_err(|e| decode_error(name, fmt, w, h, limits, e))?;
    // A broken EXIF block is no reason to refuse a photo: keep it as stored.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| decode_error(name, fmt, w, h, limits, e))?;
    img.apply_orientation(orientation);
    Ok(to_rgb(img))
}

/// Walks the JPEG marker segments (and the entropy-coded data after each SOS) and checks that the image's EOI
/// marker is reached before the data ends. An EOI inside an EXIF thumbnail does not count: APPn segments are
/// skipped whole by their length.
pub fn jpeg_complete(bytes: &[u8]) -> std::result::Result<(), &'static str> {
    if bytes.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err("no start-of-image marker");
    }
    let mut i = 2;
    loop {
        // A marker: 0xFF (any number of fill bytes), then its code.
        if bytes.get(i) != Some(&0xFF) {
            return Err(if i >= bytes.len() {
                "the data ends before the end-of-image marker"
            } else {
                "a marker is missing where one should be"
            });
        }
        while bytes.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return Err("the data ends before the end-of-image marker");
        };
        i += 1;
        match code {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => continue, // TEM, RSTn: no length
            _ => {}
        }
        let Some(len) = bytes.get(i..i + 2) else {
            return Err("the data ends inside a marker segment");
        };
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        if len < 2 || i + len > bytes.len() {
            return Err("the data ends inside a marker segment");
        }
        i += len;
        if code == 0xDA {
            // Entropy-coded data: runs until 0xFF followed by a byte other than 0x00 (stuffing) or RSTn.
            loop {
                match bytes.get(i..i + 2) {
                    None => return Err("the data ends inside the compressed image data"),
                    Some([0xFF, 0x00]) | Some([0xFF, 0xD0..=0xD7]) => i += 2,
                    Some([0xFF, _]) => break,
                    Some(_) => i += 1,
                }
            }
        }
    }
}

/// RGB as the processor's `convert_to_rgb` makes it: alpha over white, grey replicated, 16-bit reduced to 8 the
/// way PIL reduces it. PIL opens 16-bit grey PNGs as mode `I;16` and `convert("RGBA")` clips them (values above 255
/// become 255, the others keep their value), while 16-bit RGB(A) and grey+alpha PNGs are opened with their high
/// bytes (`v >> 8`); the `image` crate would round `v / 257` instead. Both checked against Pillow 13.
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    let img = match img {
        DynamicImage::ImageLuma16(g) => {
            let (w, h) = g.dimensions();
            let grey: Vec<u8> = g.into_raw().into_iter().map(|v| v.min(255) as u8).collect();
            DynamicImage::ImageLuma8(
                image::GrayImage::from_raw(w, h, grey).expect("one byte per pixel"),
            )
        }
        DynamicImage::ImageLumaA16(g) => {
            let (w, h) = g.dimensions();
            let raw: Vec<u8> = g.into_raw().into_iter().map(|v| (v >> 8) as u8).collect();
            DynamicImage::ImageLumaA8(
                image::GrayAlphaImage::from_raw(w, h, raw).expect("two bytes per pixel"),
            )
        }
        DynamicImage::ImageRgb16(g) => {
            let (w, h) = g.dimensions();
            let raw: Vec<u8> = g.into_raw().into_iter().map(|v| (v >> 8) as u8).collect();
            DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, raw).expect("three bytes per pixel"))
        }
        DynamicImage::ImageRgba16(g) => {
            let (w, h) = g.dimensions();
            let raw: Vec<u8> = g.into_raw().into_iter().map(|v| (v >> 8) as u8).collect();
            DynamicImage::ImageRgba8(
                image::RgbaImage::from_raw(w, h, raw).expect("four bytes per pixel"),
            )
        }
        other => other,
    };
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p[3];
        for c in 0..3 {
            o[c] = over_white(p[c], a);
        }
    }
    out
}

/// One channel of `PIL.Image.alpha_composite(white, rgba)` (Pillow's `ImagingAlphaComposite`, 7 extra bits of
/// precision, rounded divisions by 255); checked against Pillow 13 for all 65536 (value, alpha) pairs.
pub fn over_white(value: u8, alpha: u8) -> u8 {
    const PRECISION_BITS: u32 = 7;
    if alpha == 0 {
        return 255;
    }
    let (s, a) = (value as u32, alpha as u32);
    let blend = 255 * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let t = s * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    let t = ((t >> 8) + t) >> 8;
    (t >> PRECISION_BITS) as u8
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        _ => "image",
    }
}

fn too_large(name: &Path, fmt: &str, w: u32, h: u32, limits: &ImageLimits) -> Error {
    err(
        name,
        ImageErrorKind::TooLarge,
        format!(
            "the {fmt} header says {w}×{h} pixels, over the decoding limit of {}; refused before decoding \
             (a decompression bomb, or an image to shrink first)",
            limits.describe()
        ),
    )
}

/// Width and height straight from the header bytes of PNG (IHDR), GIF (logical screen) and BMP (DIB header).
fn raw_dimensions(bytes: &[u8], format: ImageFormat) -> Option<(u32, u32)> {
    let be = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let le16 = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as u32);
    let le32 = |at: usize| {
        Some(i32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?).unsigned_abs())
    };
    match format {
        ImageFormat::Png => Some((be(16)?, be(20)?)),
        ImageFormat::Gif => Some((le16(6)?, le16(8)?)),
        ImageFormat::Bmp => Some((le32(18)?, le32(22)?)),
        _ => None,
    }
}

fn header_error(name: &Path, fmt: &str, e: image::ImageError) -> Error {
    let text = e.to_string();
    let kind = match e {
        image::ImageError::Unsupported(_) => ImageErrorKind::Unsupported,
        _ => ImageErrorKind::Corrupt,
    };
    err(
        name,
        kind,
        format!("cannot read the {fmt} header: {text} (truncated or corrupt file?)"),
    )
}

fn decode_error(
    name: &Path,
    fmt: &str,
    w: u32,
    h: u32,
    limits: &ImageLimits,
    e: image::ImageError,
) -> Error {
    match e {
        image::ImageError::Limits(_) => too_large(name, fmt, w, h, limits),
        image::ImageError::Unsupported(u) => err(
            name,
            ImageErrorKind::Unsupported,
            format!("this {fmt} variant is not supported: {u}"),
        ),
        other => err(
            name,
            ImageErrorKind::Corrupt,
            format!(
                "cannot decode the {fmt} image ({w}×{h}): {other} (truncated or corrupt file?)"
            ),
        ),
    }
}

/// The first bytes of a file, printable, for "not an image" errors.
fn magic(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(8)];
    let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    format!("bytes {}", hex.join(" "))
}

#[cfg(test)]
#[path = "image_file_tests.rs"]
mod tests;
