//! Images on Gemma 3n exports, one path for every front end: `gemma generate --image`, `gemma chat` (`--image`,
//! `/image PATH`) and `gemma serve` (`image_url` parts). A file, or the bytes of a `data:` URI, is decoded within
//! the generator's [`ImageLimits`] (the defaults, as for Gemma 3 vision exports), then `preprocess.onnx` and
//! `vision_encoder.onnx` give its rows ([`Gemma3nImageEncoder`](crate::gemma3n_prompt::Gemma3nImageEncoder)).
//!
//! The result is an [`EncodedImage`] with one block and no crops (`features` `[1, soft_tokens, hidden]`), so that a
//! [`Conversation`](crate::Conversation) and the server's scheduler keep Gemma 3n images as they keep Gemma 3's;
//! [`image_rows`] turns blocks back into the `[soft_tokens, hidden]` matrices the prefill writes over the soft tokens.

use std::path::Path;
use std::time::Instant;

use image::RgbImage;
use ndarray::{Array2, Axis};

use super::{Attachment, AttachmentError, AttachmentKind, Gemma3nGenerator};
use crate::error::{Error, Result};
use crate::vision::image_file::{decode_image, load_image, ImageLimits};
use crate::vision::{EncodedImage, ImageReport};

impl Gemma3nGenerator {
    /// Reads, decodes and encodes the image file at `path`, refused first (naming the file and the export) when the
    /// export has no vision part.
    pub fn image_from_file(
        &mut self,
        path: &Path,
    ) -> std::result::Result<(EncodedImage, ImageReport), AttachmentError> {
        self.check(&Attachment {
            kind: AttachmentKind::Image,
            path: path.to_path_buf(),
        })?;
        let t = Instant::now();
        let image = load_image(path, &ImageLimits::default())?;
        let decode_seconds = t.elapsed().as_secs_f64();
        let encoded = self.encode_decoded(&image)?;
        let report = ImageReport {
            path: path.to_path_buf(),
            width: encoded.width,
            height: encoded.height,
            num_crops: 0,
            decode_seconds,
            preprocess_seconds: encoded.preprocess_seconds,
            encode_seconds: encoded.encode_seconds,
        };
        Ok((encoded, report))
    }

    /// Decodes and encodes image bytes (`gemma serve`'s `data:` URIs); `name` only names the image in errors.
    pub fn image_from_bytes(
        &mut self,
        bytes: &[u8],
        name: &Path,
    ) -> std::result::Result<EncodedImage, AttachmentError> {
        self.check(&Attachment {
            kind: AttachmentKind::Image,
            path: name.to_path_buf(),
        })?;
        let image = decode_image(bytes, name, &ImageLimits::default())?;
        Ok(self.encode_decoded(&image)?)
    }

    /// One decoded image through the export's image graphs.
    fn encode_decoded(&mut self, image: &RgbImage) -> Result<EncodedImage> {
        let vision = self.vision.as_mut().ok_or_else(|| {
            Error::InvalidArgument("this Gemma 3n export has no image graphs".into())
        })?;
        let t = Instant::now();
        let rows = vision.encoder.encode(image)?;
        Ok(EncodedImage {
            features: rows.insert_axis(Axis(0)),
            num_crops: 0,
            width: image.width(),
            height: image.height(),
            // preprocess.onnx and vision_encoder.onnx run back to back: their time is counted as encoding.
            preprocess_seconds: 0.0,
            encode_seconds: t.elapsed().as_secs_f64(),
        })
    }
}

/// The `[soft_tokens, hidden]` rows of each image's blocks, in order (a Gemma 3n image is one block).
pub fn image_rows(images: &[&EncodedImage]) -> Vec<Array2<f32>> {
    images
        .iter()
        .flat_map(|i| i.features.axis_iter(Axis(0)).map(|b| b.to_owned()))
        .collect()
}
