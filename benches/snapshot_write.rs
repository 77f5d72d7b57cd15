//! Question: what does encoding a snapshot's two large tables (`positions` and `exposures`)
//! as Parquet cost, written as riskflow writes them, against the Parquet writer's defaults
//! (a dictionary for every column, Snappy as well)? That work is the snapshot writer's
//! thread's, which shares the machine's cores with the workers and the analytics.
//!
//! Reads the two tables of the last snapshot a run wrote under `OUT` (from its `_SUCCESS`
//! manifest), then encodes them in memory, the two ways in turn, `ROUNDS` times each, and
//! checks that both read back to the same rows.
//!
//! `cargo bench --bench snapshot_write -- ROUNDS OUT`, e.g. after the day replay of
//! `scripts/bench.sh`.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use riskflow_connectors::parquet::writer_properties;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let (Some(rounds), Some(out)) = (args.first().and_then(|r| r.parse::<usize>().ok()), args.get(1)) else {
        eprintln!("usage: cargo bench --bench snapshot_write -- ROUNDS OUT");
        std::process::exit(2);
    };
    let out = Path::new(out);
    let last = std::fs::read_dir(out.join("_snapshots"))
        .expect("OUT holds a run's snapshots")
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u64>().ok())
        .max()
        .expect("at least one snapshot");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("_snapshots").join(last.to_string()).join("_SUCCESS")).expect("a manifest"),
    )
    .expect("the manifest is JSON");
    let tables: Vec<(String, RecordBatch)> = manifest["files"]
        .as_array()
        .expect("a list of files")
        .iter()
        .filter_map(|f| f[0].as_str())
        .filter(|f| f.starts_with("positions/") || f.starts_with("exposures/"))
        .map(|f| (f.to_owned(), read(&out.join(f))))
        .collect();

    let ways: [(&str, Properties); 2] =
        [("dictionary on every column", parquet_defaults), ("riskflow", writer_properties)];
    let mut times = [Vec::new(), Vec::new()];
    let mut bytes = [0; 2];
    for _ in 0..rounds {
        for (way, (_, props)) in ways.iter().enumerate() {
            let started = Instant::now();
            bytes[way] = tables.iter().map(|(_, b)| encode(b, props(&b.schema())).len()).sum();
            times[way].push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    for (_, b) in &tables {
        let [a, r] = ways.map(|(_, props)| decode(encode(b, props(&b.schema()))));
        assert_eq!(a, r, "both ways read back to the same rows");
    }

    let rows: Vec<String> = tables.iter().map(|(f, b)| format!("{f} ({} rows)", b.num_rows())).collect();
    println!("snapshot as of {last}: {}", rows.join(", "));
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let medians = times.each_mut().map(median);
    for (way, (name, _)) in ways.iter().enumerate() {
        println!("{name:<28} {:>8.1} ms (median of {rounds})  {:>10} bytes", medians[way], bytes[way]);
    }
    println!("riskflow / dictionary on every column: {:.2}× the time", medians[1] / medians[0]);
}

/// How a table is written, from its schema.
type Properties = fn(&Schema) -> WriterProperties;

/// The Parquet writer's defaults, with riskflow's compression.
fn parquet_defaults(_: &Schema) -> WriterProperties {
    WriterProperties::builder().set_compression(Compression::SNAPPY).build()
}

fn read(path: &Path) -> RecordBatch {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("a Parquet file");
    let rows = builder.metadata().file_metadata().num_rows() as usize;
    let mut batches = builder.with_batch_size(rows.max(1)).build().expect("a reader");
    batches.next().expect("a table with rows").expect("a batch")
}

fn encode(batch: &RecordBatch, props: WriterProperties) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).expect("a writer");
    writer.write(batch).expect("written");
    writer.close().expect("closed");
    out
}

fn decode(bytes: Vec<u8>) -> Vec<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).expect("Parquet").build();
    reader.expect("a reader").map(|b| b.expect("a batch")).collect()
}
