//! Grayscale images from sampled latents, and PNG output.
//!
//! A sample in [-1, 1] maps to 8-bit gray as `round((clamp(x, -1, 1) + 1) / 2 · 255)`.

use std::io::Write;

/// An 8-bit grayscale image, rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl GrayImage {
    /// From `width × height` values in [-1, 1] (clamped).
    pub fn from_signed(width: usize, height: usize, values: &[f32]) -> Option<GrayImage> {
        if values.len() != width * height {
            return None;
        }
        let pixels = values.iter().map(|&x| (((x.clamp(-1.0, 1.0) + 1.0) * 0.5) * 255.0).round() as u8).collect();
        Some(GrayImage { width, height, pixels })
    }

    /// Nearest-neighbour upscaling by `k`.
    pub fn upscale(&self, k: usize) -> GrayImage {
        let k = k.max(1);
        let (w, h) = (self.width * k, self.height * k);
        let mut pixels = Vec::with_capacity(w * h);
        for y in 0..h {
            let row = &self.pixels[(y / k) * self.width..(y / k + 1) * self.width];
            pixels.extend(row.iter().flat_map(|&p| std::iter::repeat_n(p, k)));
        }
        GrayImage { width: w, height: h, pixels }
    }

    /// The images side by side in one row (all the size of the first; `None` if they differ or there are none).
    pub fn row(images: &[GrayImage]) -> Option<GrayImage> {
        let first = images.first()?;
        if images.iter().any(|i| i.width != first.width || i.height != first.height) {
            return None;
        }
        let width = first.width * images.len();
        let mut pixels = Vec::with_capacity(width * first.height);
        for y in 0..first.height {
            for i in images {
                pixels.extend_from_slice(&i.pixels[y * i.width..(y + 1) * i.width]);
            }
        }
        Some(GrayImage { width, height: first.height, pixels })
    }

    /// Writes an 8-bit grayscale PNG.
    pub fn write_png<W: Write>(&self, out: W) -> std::io::Result<()> {
        let err = |e: png::EncodingError| std::io::Error::other(e.to_string());
        let (w, h) = (u32::try_from(self.width), u32::try_from(self.height));
        let (Ok(w), Ok(h)) = (w, h) else { return Err(std::io::Error::other("image too large for PNG")) };
        let mut enc = png::Encoder::new(out, w, h);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(&self.pixels).map_err(err)?;
        writer.finish().map_err(err)
    }
}

#[cfg(test)]
#[path = "tests/image.rs"]
mod tests;
