//! Times the `day` preset: `cargo run --release -p riskflow-datasets --example gen_day --
//! [DELTAS] [OUT_DIR]` (defaults: 2 000 000 deltas into a fresh temporary directory, removed
//! afterwards unless OUT_DIR is given).

use std::path::PathBuf;
use std::time::Instant;

use riskflow_datasets::{generate, GenOptions, Preset};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let deltas: u64 = args.first().map_or(2_000_000, |s| s.parse().expect("DELTAS is a number"));
    let (out, keep) = match args.get(1) {
        Some(dir) => (PathBuf::from(dir), true),
        None => (std::env::temp_dir().join(format!("riskflow-gen-day-{}", std::process::id())), false),
    };
    let mut opts = GenOptions::new(Preset::Day, 1);
    opts.deltas = Some(deltas);
    let start = Instant::now();
    let manifest = generate(&opts, &out, &mut |n| eprint!("\r{n} records")).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let secs = start.elapsed().as_secs_f64();
    eprintln!();
    let c = &manifest.counts;
    let lines = c.ticks + c.deltas + c.instruments + c.accounts + c.limits;
    let bytes: u64 = manifest.files.iter().map(|f| f.1).sum();
    println!(
        "day preset: {} deltas, {} ticks, {} limits, {lines} lines, {:.1} MB in {secs:.2} s: {:.2} M lines/s, {:.0} MB/s",
        c.deltas,
        c.ticks,
        c.limits,
        bytes as f64 / 1e6,
        lines as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6
    );
    if !keep {
        let _ = std::fs::remove_dir_all(&out);
    }
}
