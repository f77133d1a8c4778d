//! The README's first command from a bare clone (issue: "what users start from"): `scripts/test-bare-clone` clones
//! the repository into a temporary folder with nothing beside it and an empty HOME, and runs `scripts/demo` to the
//! end. It downloads ONNX Runtime and the default model (about 250 MB) and builds everything from scratch, so it is
//! not part of the CI run; run it with `cargo test -p gemma-tests --test bare_clone -- --ignored`.

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "downloads ~250 MB and builds from scratch (minutes); run explicitly with --ignored"]
fn scripts_demo_runs_from_a_bare_clone_with_an_empty_home() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/test-bare-clone"))
        .current_dir(&root)
        .output()
        .expect("running scripts/test-bare-clone");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/test-bare-clone failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The demo ends by generating from the export: the prompt is echoed, then text follows it.
    assert!(
        stdout.contains("$ gemma generate -m target/demo/gemma-3-270m-q4_k_m-onnx"),
        "{stdout}"
    );
    assert!(stdout.contains("bare-clone demo: passed in"), "{stdout}");
    let generated = stdout.rsplit("-n 48\n").next().unwrap_or("");
    assert!(
        generated.trim().len() > "The capital of France is".len(),
        "no generated text:\n{stdout}"
    );
}
