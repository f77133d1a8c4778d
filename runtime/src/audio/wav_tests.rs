//! WAV reading: the formats taken as they are, the conversions, and every refusal naming the file.

use std::path::{Path, PathBuf};

use super::{check_length, read_wav, ClipLimits};
use crate::audio::AudioError;

const LIMITS: ClipLimits = ClipLimits {
    rate: 16_000,
    min_samples: 513,
    max_samples: 48_000,
};

fn write(dir: &Path, name: &str, spec: hound::WavSpec, frames: usize) -> PathBuf {
    let path = dir.join(name);
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..frames * spec.channels as usize {
        let v = ((i as f32) * 0.01).sin() * 0.5;
        match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Float, _) => w.write_sample(v).unwrap(),
            (_, 16) => w.write_sample((v * 32767.0) as i16).unwrap(),
            _ => w.write_sample((v * 8_000_000.0) as i32).unwrap(),
        }
    }
    w.finalize().unwrap();
    path
}

fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> hound::WavSpec {
    let sample_format = if float {
        hound::SampleFormat::Float
    } else {
        hound::SampleFormat::Int
    };
    hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format,
    }
}

#[test]
fn mono_16k_pcm_and_float_are_read_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "a.wav", spec(1, 16_000, 16, false), 1000);
    let clip = read_wav(&p, &LIMITS).unwrap();
    assert_eq!((clip.samples.len(), clip.converted), (1000, false));
    assert_eq!(
        clip.samples[1],
        ((0.01f32).sin() * 0.5 * 32767.0) as i16 as f32 / 32768.0
    );
    let p = write(dir.path(), "f.wav", spec(1, 16_000, 32, true), 1000);
    let clip = read_wav(&p, &LIMITS).unwrap();
    assert_eq!(clip.samples[3], (0.03f32).sin() * 0.5);
}

#[test]
fn stereo_and_other_rates_are_converted() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "s.wav", spec(2, 16_000, 16, false), 1000);
    let clip = read_wav(&p, &LIMITS).unwrap();
    assert_eq!(
        (clip.samples.len(), clip.source_channels, clip.converted),
        (1000, 2, true)
    );
    let p = write(dir.path(), "r.wav", spec(1, 44_100, 16, false), 44_100);
    let clip = read_wav(&p, &LIMITS).unwrap();
    assert!(
        (clip.samples.len() as i64 - 16_000).abs() <= 1,
        "{}",
        clip.samples.len()
    );
    assert!(clip.converted && clip.samples.iter().all(|v| v.abs() < 0.6));
}

#[test]
fn refusals_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not audio at all").unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (text, "not a WAV audio file"),
        (
            write(dir.path(), "empty.wav", spec(1, 16_000, 16, false), 0),
            "the clip is empty",
        ),
        (
            write(dir.path(), "short.wav", spec(1, 16_000, 16, false), 100),
            "shorter than one 513-sample frame",
        ),
        (
            write(dir.path(), "long.wav", spec(1, 16_000, 16, false), 48_001),
            "the model takes at most 3.00 s",
        ),
        (
            write(dir.path(), "deep.wav", spec(1, 16_000, 24, false), 1000),
            "24-bit Int WAV is not supported",
        ),
        (dir.path().join("missing.wav"), "missing.wav"),
    ];
    for (path, want) in cases {
        let msg = read_wav(&path, &LIMITS).unwrap_err().to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(want),
            "{want:?} in {msg}"
        );
    }
    assert!(matches!(
        check_length(Path::new("x"), vec![], &LIMITS),
        Err(AudioError::Empty { .. })
    ));
}
