//! Generates a dataset: `cargo run -p riskflow-datasets --example gen -- PRESET SEED OUT_DIR`.
//!
//! The `riskflow gen` command of the main binary is the supported way; this example exists
//! so the crate can regenerate its checked-in datasets on its own.

use std::path::Path;
use std::str::FromStr;

use riskflow_datasets::{generate, GenOptions, Preset};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [preset, seed, out] = args.as_slice() else {
        eprintln!("usage: gen PRESET SEED OUT_DIR");
        std::process::exit(2);
    };
    let preset = Preset::from_str(preset).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let seed: u64 = seed.parse().unwrap_or_else(|e| {
        eprintln!("bad seed {seed:?}: {e}");
        std::process::exit(2)
    });
    match generate(&GenOptions::new(preset, seed), Path::new(out), &mut |_| {}) {
        Ok(m) => println!("{}", serde_json::to_string_pretty(&m).expect("a manifest serialises")),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}
