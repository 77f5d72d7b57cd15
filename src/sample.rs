//! The bundled sample dataset, embedded in the binary so `riskflow run` works from any
//! directory after `cargo install`.

use std::path::PathBuf;

/// The sample's files, as checked in under `datasets/sample/`.
const FILES: &[(&str, &[u8])] = &[
    ("instruments.jsonl", include_bytes!("../datasets/sample/instruments.jsonl")),
    ("accounts.jsonl", include_bytes!("../datasets/sample/accounts.jsonl")),
    ("limits.jsonl", include_bytes!("../datasets/sample/limits.jsonl")),
    ("market.jsonl", include_bytes!("../datasets/sample/market.jsonl")),
    ("positions.jsonl", include_bytes!("../datasets/sample/positions.jsonl")),
    ("dataset.toml", include_bytes!("../datasets/sample/dataset.toml")),
    ("manifest.json", include_bytes!("../datasets/sample/manifest.json")),
];

/// Writes the embedded sample to a directory under the system temp dir (once per content)
/// and returns it.
pub fn materialise() -> std::io::Result<PathBuf> {
    let tag = riskflow_dataflows::route_hash(std::str::from_utf8(FILES[6].1).unwrap_or_default());
    let dir = std::env::temp_dir().join(format!("riskflow-sample-{tag:016x}"));
    if dir.join("manifest.json").exists() {
        return Ok(dir);
    }
    let partial = dir.with_extension("partial");
    std::fs::create_dir_all(&partial)?;
    for (name, bytes) in FILES {
        std::fs::write(partial.join(name), bytes)?;
    }
    match std::fs::rename(&partial, &dir) {
        Ok(()) => Ok(dir),
        // Another process materialised it first.
        Err(_) if dir.join("manifest.json").exists() => Ok(dir),
        Err(e) => Err(e),
    }
}
