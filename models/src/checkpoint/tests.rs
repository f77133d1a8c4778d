//! Checkpoint tests on tiny safetensors files written into temporary folders.

use std::fs;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::Dtype;

use super::*;
use crate::config::ModelConfig;
use crate::names;
use crate::testing::{f32_bytes, write_safetensors, Tensor as Spec};

fn spec(name: &str, dtype: Dtype, shape: &[usize], bytes: Vec<u8>) -> Spec {
    (name.to_string(), dtype, shape.to_vec(), bytes)
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect()
}

fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

/// Writes a hand-made file: the 8-byte length, `header` verbatim, then `data`.
fn write_raw(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    fs::write(path, bytes).unwrap();
}

fn open_err(dir: &Path) -> (CheckpointError, String) {
    let e = Checkpoint::open(dir).expect_err("checkpoint should be refused");
    let msg = e.to_string();
    (e, msg)
}

/// Values exactly representable in bf16 and f16 (so each format's read must give them back bit for bit), plus
/// some that are not (checked against `half`'s rounding).
const VALUES: [f32; 8] = [
    0.0,
    1.0,
    -2.5,
    3.140625,
    0.099975586,
    6.0e-5,
    -65504.0,
    1234.5678,
];

#[test]
fn single_file_reads_every_dtype_exactly() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &dir.path().join(SINGLE_FILE),
        &[
            spec("w.bf16", Dtype::BF16, &[2, 4], bf16_bytes(&VALUES)),
            spec("w.f16", Dtype::F16, &[8], f16_bytes(&VALUES)),
            spec("w.f32", Dtype::F32, &[4, 2], f32_bytes(&VALUES)),
            spec("scalar", Dtype::F32, &[], f32_bytes(&[7.0])),
        ],
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.dir(), dir.path());
    assert_eq!(ckpt.names(), vec!["scalar", "w.bf16", "w.f16", "w.f32"]);
    assert!(ckpt.contains("w.f16") && !ckpt.contains("w"));
    assert_eq!(ckpt.total_bytes(), 16 + 16 + 32 + 4);

    let expect = |f: fn(f32) -> f32| VALUES.iter().map(|&v| f(v)).collect::<Vec<f32>>();
    let bf = ckpt.tensor("w.bf16").unwrap();
    assert_eq!(
        (bf.dtype, bf.shape.clone(), bf.numel(), bf.name),
        (DType::BF16, vec![2, 4], 8, "w.bf16")
    );
    assert_eq!(bf.file, dir.path().join(SINGLE_FILE));
    assert_eq!(bf.to_f32_vec(), expect(|v| bf16::from_f32(v).to_f32()));
    let h = ckpt.tensor_with_shape("w.f16", &[8]).unwrap();
    assert_eq!(h.to_f32_vec(), expect(|v| f16::from_f32(v).to_f32()));
    let f = ckpt.tensor("w.f32").unwrap();
    assert_eq!(f.to_f32_vec(), VALUES.to_vec());
    assert_eq!(ckpt.tensor("scalar").unwrap().to_f32_vec(), vec![7.0]);

    // Windows of a tensor.
    let mut window = [0.0f32; 3];
    f.read_f32(4, &mut window);
    assert_eq!(window, VALUES[4..7]);
    bf.read_f32(5, &mut window);
    assert_eq!(
        window.to_vec(),
        expect(|v| bf16::from_f32(v).to_f32())[5..8]
    );
    h.read_f32(8, &mut []);
    // Exact values survive every format.
    assert_eq!(&bf.to_f32_vec()[..4], &VALUES[..4]);
    assert_eq!(&h.to_f32_vec()[..4], &VALUES[..4]);
}

#[test]
#[should_panic(expected = "outside its 8 elements")]
fn read_past_the_end_panics() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &dir.path().join(SINGLE_FILE),
        &[spec("w", Dtype::F32, &[8], f32_bytes(&VALUES))],
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    ckpt.tensor("w").unwrap().read_f32(6, &mut [0.0; 3]);
}

#[test]
fn unaligned_data_is_read_correctly() {
    let dir = tempfile::tempdir().unwrap();
    // An odd header length puts the data section at an odd file offset.
    let header = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[12,16]}}"#;
    let header = if header.len().is_multiple_of(2) {
        format!("{header} ")
    } else {
        header.to_string()
    };
    let mut data = f32_bytes(&[1.5, -2.0, 1e-7]);
    data.extend(bf16_bytes(&[3.0, -0.5]));
    write_raw(&dir.path().join(SINGLE_FILE), &header, &data);

    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let a = ckpt.tensor("a").unwrap();
    assert_eq!(
        a.data.as_ptr() as usize % 2,
        1,
        "test setup: data should be unaligned"
    );
    assert_eq!(a.to_f32_vec(), vec![1.5, -2.0, 1e-7]);
    assert_eq!(ckpt.tensor("b").unwrap().to_f32_vec(), vec![3.0, -0.5]);
}

/// Writes a two-shard checkpoint with an index; returns the shard paths.
fn write_sharded(dir: &Path) -> (PathBuf, PathBuf) {
    let (one, two) = (
        dir.join("model-00001-of-00002.safetensors"),
        dir.join("model-00002-of-00002.safetensors"),
    );
    write_safetensors(
        &one,
        &[
            spec("a", Dtype::BF16, &[2, 2], bf16_bytes(&[1.0, 2.0, 3.0, 4.0])),
            spec("b", Dtype::F32, &[1], f32_bytes(&[5.0])),
        ],
    );
    write_safetensors(
        &two,
        &[spec("c", Dtype::F16, &[3], f16_bytes(&[-1.0, 0.5, 0.25]))],
    );
    let index = serde_json::json!({
        "metadata": {"total_size": 18},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                       "c": "model-00002-of-00002.safetensors"}
    });
    fs::write(dir.join(INDEX_FILE), index.to_string()).unwrap();
    (one, two)
}

#[test]
fn sharded_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = write_sharded(dir.path());
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.names(), vec!["a", "b", "c"]);
    assert_eq!(ckpt.files().len(), 2);
    assert_eq!(ckpt.total_bytes(), 8 + 4 + 6);
    let a = ckpt.tensor("a").unwrap();
    assert_eq!(
        (a.file, a.to_f32_vec()),
        (one.as_path(), vec![1.0, 2.0, 3.0, 4.0])
    );
    let c = ckpt.tensor("c").unwrap();
    assert_eq!(
        (c.file, c.to_f32_vec()),
        (two.as_path(), vec![-1.0, 0.5, 0.25])
    );

    // A missing tensor names every file looked in.
    let e = ckpt.tensor("d").unwrap_err();
    assert!(matches!(e, CheckpointError::TensorMissing { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("\"d\"")
            && msg.contains(&*one.to_string_lossy())
            && msg.contains(&*two.to_string_lossy()),
        "{msg}"
    );
}

#[test]
fn index_entry_not_in_its_shard() {
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path());
    let index = serde_json::json!({"weight_map": {"a": "model-00002-of-00002.safetensors"}});
    fs::write(dir.path().join(INDEX_FILE), index.to_string()).unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, CheckpointError::NotInShard { .. }), "{msg}");
    assert!(
        msg.contains(INDEX_FILE) && msg.contains("\"a\"") && msg.contains("model-00002-of-00002"),
        "{msg}"
    );
}

#[test]
fn broken_index_files() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join(INDEX_FILE);
    fs::write(&index, "{ nope").unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(
        matches!(e, CheckpointError::Index { .. }) && msg.contains(&*index.to_string_lossy()),
        "{msg}"
    );

    fs::write(&index, r#"{"metadata": {}}"#).unwrap();
    let (_, msg) = open_err(dir.path());
    assert!(msg.contains("weight_map"), "{msg}");

    fs::write(
        &index,
        r#"{"weight_map": {"a": "model-00009.safetensors"}}"#,
    )
    .unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(
        matches!(e, CheckpointError::Index { .. }) && msg.contains("model-00009.safetensors"),
        "{msg}"
    );
}

#[test]
fn index_entries_must_stay_inside_the_folder() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("ckpt");
    fs::create_dir(&dir).unwrap();
    write_safetensors(
        &outer.path().join("outside.safetensors"),
        &[spec("a", Dtype::F32, &[1], f32_bytes(&[1.0]))],
    );

    let mut entries = vec![
        "../outside.safetensors".to_string(),
        outer
            .path()
            .join("outside.safetensors")
            .display()
            .to_string(),
    ];
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(
            outer.path().join("outside.safetensors"),
            dir.join("link.safetensors"),
        )
        .unwrap();
        entries.push("link.safetensors".to_string());
    }
    for entry in entries {
        let index = serde_json::json!({"weight_map": {"a": entry}});
        fs::write(dir.join(INDEX_FILE), index.to_string()).unwrap();
        let (e, msg) = open_err(&dir);
        assert!(
            matches!(e, CheckpointError::IndexEntryEscapes { .. }),
            "{entry}: {msg}"
        );
        assert!(
            msg.contains(INDEX_FILE) && msg.contains(&entry) && msg.contains("\"a\""),
            "{msg}"
        );
    }
}

#[cfg(unix)]
#[test]
fn hub_cache_snapshot_symlinks_are_allowed() {
    // …/models--org--name/{blobs/<hash>, snapshots/<rev>/<file> -> ../../blobs/<hash>}
    let repo = tempfile::tempdir().unwrap();
    let (blobs, snapshot) = (
        repo.path().join("blobs"),
        repo.path().join("snapshots").join("abc123"),
    );
    fs::create_dir_all(&blobs).unwrap();
    fs::create_dir_all(&snapshot).unwrap();
    write_safetensors(
        &blobs.join("f00d"),
        &[spec("a", Dtype::F32, &[2], f32_bytes(&[1.0, 2.0]))],
    );
    std::os::unix::fs::symlink(
        "../../blobs/f00d",
        snapshot.join("model-00001-of-00001.safetensors"),
    )
    .unwrap();
    let index = serde_json::json!({"weight_map": {"a": "model-00001-of-00001.safetensors"}});
    fs::write(snapshot.join(INDEX_FILE), index.to_string()).unwrap();
    let ckpt = Checkpoint::open(&snapshot).unwrap();
    assert_eq!(ckpt.tensor("a").unwrap().to_f32_vec(), vec![1.0, 2.0]);
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SINGLE_FILE);
    write_safetensors(&path, &[spec("w", Dtype::F32, &[8], f32_bytes(&VALUES))]);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(
        matches!(
            e,
            CheckpointError::Truncated {
                expected: 32,
                actual: 27,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&*path.to_string_lossy())
            && msg.contains("truncated: header says 32 bytes of data, file has 27"),
        "{msg}"
    );
}

#[test]
fn malformed_headers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SINGLE_FILE);
    let check = |what: &str, expect: &dyn Fn(&CheckpointError) -> bool, needle: &str| {
        let (e, msg) = open_err(dir.path());
        assert!(expect(&e), "{what}: unexpected error {msg}");
        assert!(
            msg.contains(&*path.to_string_lossy()) && msg.contains(needle),
            "{what}: {msg}"
        );
    };
    let is_header = |e: &CheckpointError| matches!(e, CheckpointError::Header { .. });
    let is_bad_tensor = |e: &CheckpointError| matches!(e, CheckpointError::BadTensor { .. });
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);

    fs::write(&path, [1u8, 2, 3]).unwrap();
    check("tiny file", &is_header, "too short");

    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    fs::write(&path, bytes).unwrap();
    check(
        "header length past the end",
        &is_header,
        "header length is 1000 bytes",
    );

    fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
    check("absurd header length", &is_header, "limit");

    write_raw(&path, "{not json", &data);
    check("bad JSON", &is_header, "not a JSON object");

    write_raw(
        &path,
        r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}}"#,
        &data,
    );
    check(
        "span does not match the shape",
        &is_bad_tensor,
        "span 12 bytes, but shape [4] of dtype F32 needs 16",
    );

    write_raw(
        &path,
        r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#,
        &data,
    );
    check("end before begin", &is_bad_tensor, "end before they begin");

    write_raw(
        &path,
        r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"x":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &data,
    );
    check("overlap", &is_bad_tensor, "overlap tensor \"w\"");

    write_raw(
        &path,
        r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}"#,
        &data,
    );
    check(
        "offsets past the data",
        &|e| matches!(e, CheckpointError::Truncated { .. }),
        "header says 32 bytes of data, file has 16",
    );

    write_raw(
        &path,
        r#"{"w":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,16]}}"#,
        &data,
    );
    check("unknown dtype", &is_bad_tensor, "unknown dtype \"Q4_K\"");

    write_raw(
        &path,
        r#"{"w":{"dtype":"F32","shape":"4","data_offsets":[0,16]}}"#,
        &data,
    );
    check("shape not a list", &is_bad_tensor, "invalid header entry");
}

#[test]
fn unsupported_dtype_is_refused_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SINGLE_FILE);
    let ids: Vec<u8> = [0i64, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_safetensors(
        &path,
        &[
            spec("ids", Dtype::I64, &[3], ids),
            spec("w", Dtype::F32, &[1], f32_bytes(&[1.0])),
        ],
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.tensor("w").unwrap().to_f32_vec(), vec![1.0]);
    let e = ckpt.tensor("ids").unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, CheckpointError::UnsupportedDtype { .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&*path.to_string_lossy()) && msg.contains("\"ids\"") && msg.contains("I64"),
        "{msg}"
    );
}

#[test]
fn wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &dir.path().join(SINGLE_FILE),
        &[spec("w", Dtype::F32, &[2, 4], f32_bytes(&VALUES))],
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let e = ckpt.tensor_with_shape("w", &[4, 2]).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CheckpointError::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains("shape [2, 4], expected [4, 2]") && msg.contains(SINGLE_FILE),
        "{msg}"
    );
}

#[test]
fn pickle_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config.json"), "{}").unwrap();
    fs::write(dir.path().join("pytorch_model.bin"), b"\x80\x02pickle").unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, CheckpointError::PickleRefused { .. }), "{msg}");
    assert!(
        msg.contains("pytorch_model.bin") && msg.contains("pickle checkpoints are refused"),
        "{msg}"
    );
    assert!(msg.contains("convert to safetensors"), "{msg}");
}

#[test]
fn folder_without_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(
        matches!(e, CheckpointError::NoWeights { .. })
            && msg.contains(&*dir.path().to_string_lossy()),
        "{msg}"
    );
    // Other safetensors names are mentioned as a hint.
    write_safetensors(
        &dir.path().join("consolidated.safetensors"),
        &[spec("a", Dtype::F32, &[1], f32_bytes(&[1.0]))],
    );
    let (_, msg) = open_err(dir.path());
    assert!(msg.contains("consolidated.safetensors"), "{msg}");
    let (e, _) = open_err(&dir.path().join("does-not-exist"));
    assert!(matches!(e, CheckpointError::Io { .. }));
}

#[test]
fn release_keeps_views_readable() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<f32> = (0..100_000).map(|i| i as f32 * 0.5).collect();
    write_safetensors(
        &dir.path().join(SINGLE_FILE),
        &[
            spec("big", Dtype::F32, &[big.len()], f32_bytes(&big)),
            spec("small", Dtype::BF16, &[3], bf16_bytes(&[1.0, 2.0, 3.0])),
        ],
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let view = ckpt.tensor("big").unwrap();
    assert_eq!(view.to_f32_vec(), big);
    ckpt.release(&view);
    assert_eq!(
        view.to_f32_vec(),
        big,
        "released pages are read back from the file"
    );
    let small = ckpt.tensor("small").unwrap();
    ckpt.release(&small); // smaller than a page: nothing to drop
    assert_eq!(small.to_f32_vec(), vec![1.0, 2.0, 3.0]);
}

/// A selected tensor reads its rows and columns (bf16, with a low-rank update on the selected shape), survives a
/// rename, and stays readable after its stored rows are released chunk by chunk.
#[test]
#[allow(clippy::single_range_in_vec_init)] // lists of ranges are the data
fn selections_read_rename_and_release() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (300, 200);
    let stored: Vec<f32> = (0..rows * cols).map(|i| (i % 251) as f32).collect();
    write_safetensors(
        &dir.path().join(SINGLE_FILE),
        &[spec("w", Dtype::BF16, &[rows, cols], bf16_bytes(&stored))],
    );
    let mut ckpt = Checkpoint::open(dir.path()).unwrap();
    ckpt.select(
        "w",
        Some(vec![10..20, 100..300]),
        Some(vec![0..50, 150..200]),
    )
    .unwrap();
    assert_eq!(ckpt.rename(|n| Some(format!("x.{n}"))).unwrap(), 1);
    let lr = LowRank::new(1, 210, 100, vec![1.0; 100], vec![0.5; 210]).unwrap();
    ckpt.add_low_rank("x.w", lr).unwrap();
    let view = ckpt.tensor("x.w").unwrap();
    assert_eq!(view.shape, [210, 100]);
    let kept_rows: Vec<usize> = (10..20).chain(100..300).collect();
    let stored = &stored;
    let want: Vec<f32> = kept_rows
        .iter()
        .flat_map(|&r| {
            (0..50)
                .chain(150..200)
                .map(move |c| stored[r * cols + c] + 0.5)
        })
        .collect();
    let mut got = vec![0.0; want.len()];
    for (i, chunk) in got.chunks_mut(777).enumerate() {
        view.read_f32(i * 777, chunk);
        ckpt.release_elements(&view, i * 777, i * 777 + chunk.len());
    }
    assert_eq!(got, want);
    assert_eq!(
        view.to_f32_vec(),
        want,
        "released rows are read back from the file"
    );
    // A tensor already selected (and updated), and a missing one: refused.
    assert!(ckpt.select("x.w", None, Some(vec![0..10])).is_err());
    assert!(ckpt.select("missing", None, None).is_err());
}

/// A complete tiny Gemma 3 checkpoint built from `names::text_tensors` opens and every tensor has its shape.
#[test]
fn tiny_gemma3_checkpoint_round_trip() {
    let config = serde_json::json!({
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": 16, "hidden_size": 8,
        "intermediate_size": 12, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 4, "sliding_window": 4
    });
    let cfg = ModelConfig::from_json_str(&config.to_string(), Path::new("config.json")).unwrap();
    let expected = names::text_tensors(&cfg.text, &cfg.text_prefix);
    assert_eq!(expected.len(), 1 + 2 * 13 + 1);
    assert!(expected
        .iter()
        .any(|(n, s)| n == "model.layers.1.self_attn.k_norm.weight" && s == &[4]));
    assert!(expected
        .iter()
        .any(|(n, s)| n == "model.layers.0.self_attn.o_proj.weight" && s == &[8, 8]));

    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<Spec> = expected
        .iter()
        .map(|(name, shape)| {
            spec(
                name,
                Dtype::BF16,
                shape,
                bf16_bytes(&vec![0.5; shape.iter().product()]),
            )
        })
        .collect();
    write_safetensors(&dir.path().join(SINGLE_FILE), &specs);
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    for (name, shape) in &expected {
        let view = ckpt.tensor_with_shape(name, shape).unwrap();
        assert!(view.to_f32_vec().iter().all(|&v| v == 0.5));
    }
    assert_eq!(
        names::detect_text_prefix(&ckpt, &cfg.text_prefix).as_deref(),
        Some("model.")
    );
    assert_eq!(
        names::detect_text_prefix(&ckpt, "language_model.model.").as_deref(),
        Some("model.")
    );
}

#[test]
fn checkpoint_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Checkpoint>();
    assert_send_sync::<TensorView<'static>>();
}

#[test]
fn dtype_names() {
    for d in [DType::F32, DType::F16, DType::BF16] {
        assert_eq!(DType::from_safetensors_name(d.name()), Some(d));
    }
    assert_eq!(
        (DType::F32.size(), DType::F16.size(), DType::BF16.size()),
        (4, 2, 2)
    );
    assert_eq!(DType::from_safetensors_name("I64"), None);
}

/// A header that names a tensor twice is refused (JSON parsers keep the last entry silently).
#[test]
fn duplicate_header_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    write_raw(
        &path,
        r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
        &data,
    );
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, CheckpointError::Header { .. }), "{msg}");
    assert!(msg.contains("names \"w\" twice"), "{msg}");
}

/// A shard that is a FIFO is refused at once, not waited on.
#[cfg(unix)]
#[test]
fn fifo_shard_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    assert!(std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap()
        .success());
    let (_, msg) = open_err(dir.path());
    assert!(
        msg.contains("FIFO") && msg.contains("model.safetensors"),
        "{msg}"
    );
}

/// A shard that shrinks after opening gives an error on the next tensor access, not a SIGBUS.
#[test]
fn shard_truncated_after_opening_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write_safetensors(
        &path,
        &[spec(
            "w",
            Dtype::F32,
            &[4],
            f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
        )],
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert!(ckpt.tensor("w").is_ok());
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 8)
        .unwrap();
    let msg = ckpt.tensor("w").unwrap_err().to_string();
    assert!(msg.contains("changed while it was being read"), "{msg}");
}

/// A wrapper class's checkpoint read unwrapped: names lose the prefix, reads still find the stored tensors.
#[test]
fn strip_prefix_renames_and_refuses_collisions() {
    let dir = tempfile::tempdir().unwrap();
    let t = |name: &str, v: f32| spec(name, Dtype::F32, &[1], f32_bytes(&[v]));
    write_safetensors(
        &dir.path().join(SINGLE_FILE),
        &[
            t("model.model.a.weight", 1.0),
            t("model.model.b", 2.0),
            t("other", 3.0),
        ],
    );
    let mut ckpt = Checkpoint::open(dir.path()).unwrap();
    let total = ckpt.total_bytes();
    assert_eq!(ckpt.strip_prefix("model.model.").unwrap(), 2);
    assert_eq!(ckpt.names(), ["a.weight", "b", "other"]);
    assert_eq!(ckpt.tensor("a.weight").unwrap().to_f32_vec(), [1.0]);
    assert_eq!(ckpt.tensor("b").unwrap().name, "b");
    assert!(ckpt.tensor("model.model.b").is_err());
    assert_eq!(ckpt.total_bytes(), total);

    write_safetensors(
        &dir.path().join(SINGLE_FILE),
        &[t("model.x", 1.0), t("x", 2.0)],
    );
    let mut ckpt = Checkpoint::open(dir.path()).unwrap();
    let e = ckpt.strip_prefix("model.").unwrap_err().to_string();
    assert!(e.contains("model.x") && e.contains("wrapper prefix"), "{e}");
    assert_eq!(ckpt.names(), ["model.x", "x"]);
}
