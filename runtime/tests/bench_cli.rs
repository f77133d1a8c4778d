//! `gemma bench` on a tiny cpu-graph export: the JSON report has every figure, positive and consistent, and bad
//! arguments fail cleanly (exit 1, `error: ...`, no panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn export_cpu(tmp: &Path) -> PathBuf {
    let out = tmp.join("onnx");
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny/gqa-f16-hf5"),
        out.clone(),
    ))
    .unwrap();
    out
}

fn gemma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma"))
        .args(args)
        .output()
        .expect("run gemma")
}

#[test]
fn bench_reports_every_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = export_cpu(tmp.path());
    let dir = dir.to_str().unwrap();
    let o = gemma(&[
        "bench",
        "-m",
        dir,
        "--threads",
        "1",
        "--prompt-tokens",
        "8,24",
        "--gen-tokens",
        "6",
        "--repeat",
        "2",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["graph"], "cpu");
    assert_eq!(report["precision"], "fp32");
    assert_eq!(report["threads"], 1);
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, prompt) in rows.iter().zip([8, 24]) {
        assert_eq!(row["prompt_tokens"], prompt);
        assert_eq!(row["gen_tokens"], 6);
        for field in [
            "prefill_tokens_per_s",
            "decode_tokens_per_s",
            "time_to_first_token_ms",
        ] {
            assert!(row[field].as_f64().unwrap() > 0.0, "{field}: {row}");
        }
        assert_eq!(row["runs"].as_array().unwrap().len(), 2);
        // 6 layers: 3 sliding (window 4 + slack 1 = 5 rows) and 3 global (sized for prompt + 6), K and V,
        // 2 kv heads × 32 dims × 4 bytes per row.
        let row_bytes = 2 * 32 * 4 * 2;
        let expected = 3 * 5 * row_bytes + 3 * (prompt + 6) * row_bytes;
        assert_eq!(row["kv_cache_bytes"], expected, "{row}");
    }

    let o = gemma(&[
        "bench",
        "-m",
        dir,
        "--prompt-tokens",
        "8",
        "--gen-tokens",
        "4",
        "--repeat",
        "1",
    ]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        table.contains("prefill tok/s") && table.contains("peak RSS"),
        "{table}"
    );
}

#[test]
fn bench_refuses_bad_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = export_cpu(tmp.path());
    let dir = dir.to_str().unwrap();
    for (args, needle) in [
        (vec!["--gen-tokens", "1"], "--gen-tokens"),
        (vec!["--repeat", "0"], "--repeat"),
        (vec!["--prompt-tokens", "200"], "positions"),
    ] {
        let mut all = vec!["bench", "-m", dir];
        all.extend(args.iter());
        let o = gemma(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}
