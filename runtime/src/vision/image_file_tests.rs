//! Unit tests of [`super`]: Pillow-exact alpha, every format, the refusals.
use super::*;

/// Values of Pillow 13's `alpha_composite` over opaque white (see `over_white`).
#[test]
fn alpha_over_white_matches_pillow() {
    for (v, a, pil) in [
        (100, 128, 177),
        (0, 1, 254),
        (255, 0, 255),
        (37, 200, 84),
        (9, 255, 9),
        (200, 0, 255),
    ] {
        assert_eq!(over_white(v, a), pil, "value {v} alpha {a}");
    }
    assert!((0..=255).all(|v| over_white(v, 255) == v));
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn grey_and_alpha_become_rgb() {
    let l = limits();
    let grey = DynamicImage::ImageLuma8(image::GrayImage::from_fn(3, 2, |x, y| {
        image::Luma([(x * 40 + y) as u8])
    }));
    let rgb = decode_image(&png(&grey), Path::new("g.png"), &l).unwrap();
    assert_eq!(rgb.dimensions(), (3, 2));
    assert_eq!(rgb.get_pixel(2, 1).0, [81, 81, 81]);
    let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(2, 1, |x, _| {
        image::Rgba([100, 37, 0, if x == 0 { 128 } else { 0 }])
    }));
    let rgb = decode_image(&png(&rgba), Path::new("a.png"), &l).unwrap();
    assert_eq!(
        rgb.get_pixel(0, 0).0,
        [
            over_white(100, 128),
            over_white(37, 128),
            over_white(0, 128)
        ]
    );
    assert_eq!(rgb.get_pixel(1, 0).0, [255, 255, 255]);
}

fn limits() -> ImageLimits {
    ImageLimits::default()
}

/// The committed header-only PNGs of `tests/fixtures/images` (see `make_fixtures.py bombs`).
const BOMB_PNG: &[u8] = include_bytes!("../../../tests/fixtures/images/bomb-100000x100000.png");
const ZERO_PNG: &[u8] = include_bytes!("../../../tests/fixtures/images/zero-0x5.png");

fn kind_of(bytes: &[u8]) -> (ImageErrorKind, String) {
    match decode_image(bytes, Path::new("x.img"), &limits()) {
        Err(e @ Error::Image { kind, .. }) => (kind, e.to_string()),
        other => panic!("expected an image error, got {other:?}"),
    }
}

#[test]
fn bad_images_are_refused_with_clear_errors() {
    let (kind, msg) = kind_of(BOMB_PNG);
    assert_eq!(kind, ImageErrorKind::TooLarge, "{msg}");
    assert!(
        msg.contains("x.img") && msg.contains("100000×100000") && msg.contains("16384"),
        "{msg}"
    );
    let (kind, msg) = kind_of(ZERO_PNG);
    assert_eq!(kind, ImageErrorKind::ZeroSized, "{msg}");
    let (kind, msg) = kind_of(b"");
    assert_eq!(kind, ImageErrorKind::ZeroSized, "{msg}");
    let (kind, msg) = kind_of(b"hello, this is text");
    assert_eq!(kind, ImageErrorKind::Unsupported, "{msg}");
    assert!(msg.contains("JPEG, PNG, WebP, GIF, BMP"), "{msg}");
    let (kind, msg) = kind_of(b"II*\0\x08\0\0\0\0\0");
    assert_eq!(kind, ImageErrorKind::Unsupported, "{msg}");
    assert!(msg.contains("Tiff"), "{msg}");
    let full = png(&DynamicImage::ImageRgb8(RgbImage::from_fn(
        64,
        64,
        |x, y| image::Rgb([x as u8, y as u8, 7]),
    )));
    let (kind, msg) = kind_of(&full[..full.len() / 2]);
    assert_eq!(kind, ImageErrorKind::Corrupt, "{msg}");
    let small = ImageLimits {
        max_pixels: 100,
        ..limits()
    };
    let e = decode_image(&full, Path::new("big.png"), &small)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("64×64") && e.contains("refused before decoding"),
        "{e}"
    );
    let e = load_image(Path::new("/nonexistent/cat.jpg"), &limits())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/cat.jpg"), "{e}");
}

#[test]
fn every_supported_format_decodes() {
    let src = RgbImage::from_fn(16, 8, |x, y| {
        image::Rgb([(x * 16) as u8, (y * 32) as u8, 200])
    });
    for format in [
        ImageFormat::Png,
        ImageFormat::Bmp,
        ImageFormat::WebP,
        ImageFormat::Gif,
        ImageFormat::Jpeg,
    ] {
        let mut out = Cursor::new(Vec::new());
        let img = DynamicImage::ImageRgb8(src.clone());
        let img = if format == ImageFormat::Gif {
            DynamicImage::ImageRgba8(img.to_rgba8())
        } else {
            img
        };
        img.write_to(&mut out, format).unwrap();
        let rgb = decode_image(out.get_ref(), Path::new("f"), &limits()).unwrap();
        assert_eq!(rgb.dimensions(), (16, 8), "{format:?}");
        let worst = rgb
            .pixels()
            .zip(src.pixels())
            .flat_map(|(a, b)| (0..3).map(move |c| a[c].abs_diff(b[c])))
            .max();
        // lossless formats exactly; JPEG and GIF (256-colour palette) approximately
        let tolerance = match format {
            ImageFormat::Jpeg | ImageFormat::Gif => 40,
            _ => 0,
        };
        assert!(worst.unwrap() <= tolerance, "{format:?}: {worst:?}");
    }
}

#[test]
fn gif_gives_its_first_frame() {
    use image::codecs::gif::GifEncoder;
    let frame = |v: u8| {
        image::Frame::new(image::RgbaImage::from_pixel(
            4,
            4,
            image::Rgba([v, v, v, 255]),
        ))
    };
    let mut out = Vec::new();
    GifEncoder::new(&mut out)
        .encode_frames([frame(10), frame(250)])
        .unwrap();
    let rgb = decode_image(&out, Path::new("a.gif"), &limits()).unwrap();
    assert!(rgb.pixels().all(|p| p[0] < 30), "{:?}", rgb.get_pixel(0, 0));
}

/// A small JPEG made by the `image` crate (JFIF APP0, one baseline scan, EOI at the end).
fn jpeg() -> Vec<u8> {
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) % 251) as u8])
    }));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

#[test]
fn truncated_jpegs_are_refused_like_pil_does() {
    let full = jpeg();
    assert_eq!(&full[full.len() - 2..], &[0xFF, 0xD9]);
    assert!(jpeg_complete(&full).is_ok());
    decode_image(&full, Path::new("ok.jpg"), &limits()).unwrap();
    // Trailing bytes after EOI are accepted (PIL ignores them too).
    let mut padded = full.clone();
    padded.extend_from_slice(&[0; 16]);
    decode_image(&padded, Path::new("padded.jpg"), &limits()).unwrap();
    for (what, bytes) in [
        ("cut in half", &full[..full.len() / 2]),
        ("no end marker", &full[..full.len() - 2]),
        ("cut in the headers", &full[..40]),
    ] {
        let (kind, msg) = kind_of(bytes);
        assert_eq!(kind, ImageErrorKind::Corrupt, "{what}: {msg}");
        assert!(msg.contains("JPEG file is truncated"), "{what}: {msg}");
    }
}

#[test]
fn sixteen_bit_grey_png_matches_pil() {
    let png = include_bytes!("../../../tests/fixtures/images/grey16-8x4.png");
    let expected: serde_json::Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/images/grey16-8x4.expected.json"
    ))
    .unwrap();
    let want: Vec<u8> = expected["rgb"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    let rgb = decode_image(png, Path::new("grey16.png"), &limits()).unwrap();
    assert_eq!(rgb.dimensions(), (8, 4));
    assert_eq!(rgb.into_raw(), want);
}

#[test]
fn sixteen_bit_colour_keeps_the_high_byte_like_pil() {
    // PIL opens 16-bit RGB(A) PNGs with their high bytes (rawmode RGB;16B); checked with Pillow 13:
    // 0x80FF -> 128 and 0x00FF -> 0, where rounding v / 257 would give 129 and 1.
    let px = |v: u16| image::Rgb([v, v, 0xFFFF]);
    let img = image::ImageBuffer::from_fn(2, 1, |x, _| px(if x == 0 { 0x80FF } else { 0x00FF }));
    let rgb = to_rgb(DynamicImage::ImageRgb16(img));
    assert_eq!(rgb.get_pixel(0, 0).0, [128, 128, 255]);
    assert_eq!(rgb.get_pixel(1, 0).0, [0, 0, 255]);
}
