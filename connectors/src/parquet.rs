//! The Parquet snapshot sink (DESIGN.md §5).
//!
//! Each snapshot writes one file per table at
//! `<out>/<table>/date=YYYY-MM-DD/<as_of>.parquet` (Hive partitioning: DuckDB and pyarrow read
//! `<out>/<table>` as a dataset). A file is written under a temporary name, fsynced and renamed,
//! so a reader never sees half a file; the snapshot is complete when
//! `<out>/_snapshots/<as_of>/_SUCCESS` exists (it lists the files and their row counts).
//! Schemas are in `docs/schemas.md`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use riskflow_dataflows::model::{Date, Ts};
use riskflow_dataflows::snapshot::Snapshot;

use crate::ConnectorError;

/// A table of one snapshot: named, typed columns.
pub struct Table {
    pub name: &'static str,
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
    rows: usize,
}

impl Table {
    /// A table of `rows` rows whose first column is `as_of`.
    pub fn new(name: &'static str, as_of: Ts, rows: usize) -> Table {
        let as_of = TimestampNanosecondArray::from(vec![as_of as i64; rows]).with_timezone("UTC");
        Table {
            name,
            fields: vec![Field::new("as_of", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false)],
            columns: vec![Arc::new(as_of)],
            rows,
        }
    }

    pub fn str<'a>(self, name: &str, values: impl Iterator<Item = &'a str>) -> Table {
        self.push(Field::new(name, DataType::Utf8, false), Arc::new(StringArray::from_iter_values(values)))
    }

    pub fn f64(self, name: &str, values: impl Iterator<Item = Option<f64>>) -> Table {
        self.push(Field::new(name, DataType::Float64, true), Arc::new(values.collect::<Float64Array>()))
    }

    /// An event-time column (timestamp[ns, UTC]).
    pub fn timestamp(self, name: &str, values: impl Iterator<Item = Ts>) -> Table {
        let array = TimestampNanosecondArray::from_iter_values(values.map(|t| t as i64)).with_timezone("UTC");
        self.push(
            Field::new(name, DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
            Arc::new(array),
        )
    }

    /// A nullable event-time column.
    pub fn timestamp_opt(self, name: &str, values: impl Iterator<Item = Option<Ts>>) -> Table {
        let array = values.map(|t| t.map(|t| t as i64)).collect::<TimestampNanosecondArray>().with_timezone("UTC");
        self.push(
            Field::new(name, DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), true),
            Arc::new(array),
        )
    }

    /// A nullable string column.
    pub fn str_opt<'a>(self, name: &str, values: impl Iterator<Item = Option<&'a str>>) -> Table {
        self.push(Field::new(name, DataType::Utf8, true), Arc::new(values.collect::<StringArray>()))
    }

    pub fn i64(self, name: &str, values: impl Iterator<Item = i64>) -> Table {
        self.push(Field::new(name, DataType::Int64, false), Arc::new(Int64Array::from_iter_values(values)))
    }

    /// An exact decimal column with 8 fractional digits (DECIMAL(38,8)).
    pub fn decimal(self, name: &str, values: impl Iterator<Item = Option<i128>>) -> Table {
        let array = values.collect::<Decimal128Array>().with_precision_and_scale(38, 8).expect("valid precision");
        self.push(Field::new(name, DataType::Decimal128(38, 8), true), Arc::new(array))
    }

    fn push(mut self, field: Field, column: ArrayRef) -> Table {
        assert_eq!(column.len(), self.rows, "column {} has the wrong length", field.name());
        self.fields.push(field);
        self.columns.push(column);
        self
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn batch(self) -> Result<RecordBatch, ConnectorError> {
        Ok(RecordBatch::try_new(Arc::new(Schema::new(self.fields)), self.columns)?)
    }
}

/// The tables of DESIGN.md §5 that exposures and limits produce, from one snapshot.
pub fn snapshot_tables(s: &Snapshot) -> Vec<Table> {
    let p = &s.positions;
    let positions = Table::new("positions", s.as_of, p.len())
        .str("account", p.iter().map(|r| &*r.account))
        .str("desk", p.iter().map(|r| &*r.desk))
        .str("firm", p.iter().map(|r| &*r.firm))
        .str("instrument", p.iter().map(|r| &*r.instrument))
        .str("asset_class", p.iter().map(|r| r.asset_class.as_str()))
        .str("underlying", p.iter().map(|r| &*r.underlying))
        .str("currency", p.iter().map(|r| r.currency.as_str()))
        .decimal("qty", p.iter().map(|r| Some(r.qty.0 as i128)))
        .decimal("price", p.iter().map(|r| r.price.map(|x| x.0 as i128)))
        .str("exposure_currency", p.iter().map(|r| r.exposure_currency.as_str()))
        .f64("exposure_local", p.iter().map(|r| r.exposure_local.map(|n| n as f64 / 1e9)))
        .f64("exposure", p.iter().map(|r| r.exposure))
        .f64("gamma", p.iter().map(|r| r.gamma))
        .f64("vega", p.iter().map(|r| r.vega))
        .f64("quote_exposure", p.iter().map(|r| r.quote_exposure));
    let e = &s.exposures;
    let exposures = Table::new("exposures", s.as_of, e.len())
        .str("scope", e.iter().map(|r| r.scope.as_str()))
        .str("scope_id", e.iter().map(|r| &*r.scope_id))
        .str("dimension", e.iter().map(|r| r.dim.as_str()))
        .str("bucket", e.iter().map(|r| &*r.bucket))
        .f64("net", e.iter().map(|r| Some(r.sums.net)))
        .f64("gross", e.iter().map(|r| Some(r.sums.gross)))
        .f64("long", e.iter().map(|r| Some(r.sums.long)))
        .f64("short", e.iter().map(|r| Some(r.sums.short)))
        .f64("gamma", e.iter().map(|r| Some(r.sums.gamma)))
        .f64("vega", e.iter().map(|r| Some(r.sums.vega)))
        .i64("positions", e.iter().map(|r| r.sums.positions))
        .f64("concentration", e.iter().map(|r| r.concentration));
    let f = &s.factors;
    let factors = Table::new("factor_exposures", s.as_of, f.len())
        .str("scope", f.iter().map(|r| r.scope.as_str()))
        .str("scope_id", f.iter().map(|r| &*r.scope_id))
        .str("factor", f.iter().map(|r| &*r.factor))
        .f64("exposure", f.iter().map(|r| Some(r.exposure)));
    let b = &s.breaches;
    let breaches = Table::new("breaches", s.as_of, b.len())
        .timestamp("ts", b.iter().map(|r| r.ts))
        .str("limit_id", b.iter().map(|r| r.limit_id.as_str()))
        .str("scope", b.iter().map(|r| r.scope.as_str()))
        .str("scope_id", b.iter().map(|r| r.scope_id.as_str()))
        .str("metric", b.iter().map(|r| r.metric.as_str()))
        .f64("value", b.iter().map(|r| Some(r.value)))
        .f64("limit", b.iter().map(|r| Some(r.limit)))
        .f64("utilisation", b.iter().map(|r| Some(r.utilisation)))
        .str("state", b.iter().map(|r| r.state.as_str()))
        .str("prev_state", b.iter().map(|r| r.prev_state.as_str()));
    let a = &s.actions;
    let actions = Table::new("actions", s.as_of, a.len())
        .timestamp("ts", a.iter().map(|r| r.ts))
        .str("scope", a.iter().map(|r| r.scope.as_str()))
        .str("scope_id", a.iter().map(|r| r.scope_id.as_str()))
        .str("state", a.iter().map(|r| r.state.as_str()))
        .str("prev_state", a.iter().map(|r| r.prev_state.as_str()))
        .str("limit_id", a.iter().map(|r| r.limit_id.as_str()));
    let mut tables = vec![positions, exposures, factors, breaches, actions];
    tables.extend(analytics_tables(s));
    tables
}

/// `volatility`, `correlation`, `risk`, `stress` and `regimes` (docs/analytics.md).
fn analytics_tables(s: &Snapshot) -> Vec<Table> {
    let t = &s.analytics;
    let bar_end = |n: usize| std::iter::repeat_n(t.bar_end, n);
    let v = &t.volatility;
    let volatility = Table::new("volatility", s.as_of, v.len())
        .timestamp_opt("bar_end", bar_end(v.len()))
        .str("factor", v.iter().map(|r| r.factor.as_str()))
        .f64("close", v.iter().map(|r| Some(r.close)))
        .f64("last_return", v.iter().map(|r| r.last_return))
        .i64("returns", v.iter().map(|r| r.returns as i64))
        .f64("ewma_var", v.iter().map(|r| r.ewma_var))
        .f64("ewma_vol_annual", v.iter().map(|r| r.ewma_vol_annual))
        .i64("window_returns", v.iter().map(|r| r.window_returns as i64))
        .f64("window_var", v.iter().map(|r| r.window_var))
        .f64("window_vol_annual", v.iter().map(|r| r.window_vol_annual));
    let c = &t.correlation;
    let correlation = Table::new("correlation", s.as_of, c.len())
        .timestamp_opt("bar_end", bar_end(c.len()))
        .str("factor_a", c.iter().map(|r| r.factor_a.as_str()))
        .str("factor_b", c.iter().map(|r| r.factor_b.as_str()))
        .f64("covariance", c.iter().map(|r| Some(r.covariance)))
        .f64("correlation", c.iter().map(|r| r.correlation));
    let r = &t.risk;
    let risk = Table::new("risk", s.as_of, r.len())
        .timestamp_opt("bar_end", bar_end(r.len()))
        .str("scope", r.iter().map(|r| r.scope.as_str()))
        .str("scope_id", r.iter().map(|r| r.scope_id.as_str()))
        .f64("var_parametric", r.iter().map(|r| r.var_parametric))
        .f64("es_parametric", r.iter().map(|r| r.es_parametric))
        .f64("var_historical", r.iter().map(|r| r.var_historical))
        .f64("es_historical", r.iter().map(|r| r.es_historical))
        .i64("history_bars", r.iter().map(|r| r.history_bars as i64))
        .f64("stress_worst", r.iter().map(|r| Some(r.stress_worst)))
        .str_opt("worst_scenario", r.iter().map(|r| r.worst_scenario.as_deref()));
    let rows: Vec<(&riskflow_dataflows::analytics::RiskRow, &str, f64)> = r
        .iter()
        .flat_map(|row| t.scenarios.iter().zip(&row.stress).map(move |(name, pnl)| (row, name.as_str(), *pnl)))
        .collect();
    let stress = Table::new("stress", s.as_of, rows.len())
        .str("scope", rows.iter().map(|r| r.0.scope.as_str()))
        .str("scope_id", rows.iter().map(|r| r.0.scope_id.as_str()))
        .str("scenario", rows.iter().map(|r| r.1))
        .f64("pnl", rows.iter().map(|r| Some(r.2)));
    let g = &t.regimes;
    let regimes = Table::new("regimes", s.as_of, g.len())
        .timestamp_opt("bar_end", bar_end(g.len()))
        .str("signal", g.iter().map(|r| r.signal.as_str()))
        .str("regime", g.iter().map(|r| r.regime.as_str()))
        .f64("value", g.iter().map(|r| Some(r.value)));
    vec![volatility, correlation, risk, stress, regimes]
}

/// Writes snapshots under one output directory.
pub struct SnapshotWriter {
    out: PathBuf,
}

/// What one snapshot wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    pub as_of: Ts,
    pub files: Vec<(String, usize)>,
}

impl SnapshotWriter {
    pub fn new(out: &Path) -> SnapshotWriter {
        SnapshotWriter { out: out.to_owned() }
    }

    /// Writes every table of one snapshot atomically, then its `_SUCCESS` marker.
    pub fn write(&self, as_of: Ts, tables: Vec<Table>) -> Result<Written, ConnectorError> {
        let date = Date::of_ts(as_of);
        let mut files = Vec::new();
        for table in tables {
            let dir = self.out.join(table.name).join(format!("date={date}"));
            std::fs::create_dir_all(&dir).map_err(ConnectorError::io(&dir))?;
            let path = dir.join(format!("{as_of}.parquet"));
            let rows = table.rows();
            write_parquet(&path, table.batch()?)?;
            files.push((path.strip_prefix(&self.out).unwrap_or(&path).display().to_string(), rows));
        }
        let written = Written { as_of, files };
        let marker_dir = self.out.join("_snapshots").join(as_of.to_string());
        std::fs::create_dir_all(&marker_dir).map_err(ConnectorError::io(&marker_dir))?;
        let manifest = serde_json::to_vec_pretty(&written).expect("manifest serialises");
        write_atomic(&marker_dir.join("_SUCCESS"), |f| {
            f.write_all(&manifest).map_err(ConnectorError::io(&marker_dir))
        })?;
        Ok(written)
    }
}

fn write_parquet(path: &Path, batch: RecordBatch) -> Result<(), ConnectorError> {
    let err = |source| ConnectorError::Parquet { path: path.display().to_string(), source };
    write_atomic(path, |file| {
        let props = writer_properties(&batch.schema());
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(err)?;
        writer.write(&batch).map_err(err)?;
        writer.close().map_err(err)?;
        Ok(())
    })
}

/// How a table is written: Snappy, and a dictionary for every column but the floats. A float
/// column holds amounts computed from prices and quantities, nearly every one distinct: its
/// dictionary would fill and be dropped, after hashing each value (`benches/snapshot_write.rs`).
pub fn writer_properties(schema: &Schema) -> WriterProperties {
    schema
        .fields()
        .iter()
        .filter(|f| *f.data_type() == DataType::Float64)
        .fold(WriterProperties::builder().set_compression(Compression::SNAPPY), |props, f| {
            props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false)
        })
        .build()
}

/// Writes `path` under a temporary name, fsyncs it, renames it into place and fsyncs the
/// directory, so the file appears whole or not at all.
fn write_atomic(path: &Path, body: impl FnOnce(&mut File) -> Result<(), ConnectorError>) -> Result<(), ConnectorError> {
    let dir = path.parent().expect("a file has a directory");
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let mut file = File::create(&tmp).map_err(ConnectorError::io(&tmp))?;
    body(&mut file)?;
    file.sync_all().map_err(ConnectorError::io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(ConnectorError::io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(ConnectorError::io(dir))?;
    Ok(())
}

/// A table read back from Parquet: column names and, per row, each column as text (keys)
/// or number (values), as reconciliation compares them.
#[derive(Debug, Default)]
pub struct ReadTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// One cell of a [`ReadTable`].
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Text(String),
    Number(Option<f64>),
}

impl Cell {
    pub fn text(&self) -> &str {
        match self {
            Cell::Text(s) => s,
            Cell::Number(_) => "",
        }
    }

    pub fn number(&self) -> Option<f64> {
        match self {
            Cell::Number(n) => *n,
            Cell::Text(_) => None,
        }
    }
}

/// Reads a Parquet file written by [`SnapshotWriter`]: strings as text; doubles, integers,
/// timestamps and decimals as numbers.
pub fn read_table(path: &Path) -> Result<ReadTable, ConnectorError> {
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let err = |source| ConnectorError::Parquet { path: path.display().to_string(), source };
    let file = File::open(path).map_err(ConnectorError::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(err)?.build().map_err(err)?;
    let mut table = ReadTable::default();
    for batch in reader {
        let batch = batch?;
        if table.columns.is_empty() {
            table.columns = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        }
        let mut rows = vec![Vec::with_capacity(batch.num_columns()); batch.num_rows()];
        for column in batch.columns() {
            let any = column.as_any();
            for (i, row) in rows.iter_mut().enumerate() {
                let null = column.is_null(i);
                let cell = if let Some(a) = any.downcast_ref::<StringArray>() {
                    Cell::Text(a.value(i).to_owned())
                } else if let Some(a) = any.downcast_ref::<Float64Array>() {
                    Cell::Number((!null).then(|| a.value(i)))
                } else if let Some(a) = any.downcast_ref::<Int64Array>() {
                    Cell::Number((!null).then(|| a.value(i) as f64))
                } else if let Some(a) = any.downcast_ref::<TimestampNanosecondArray>() {
                    Cell::Number((!null).then(|| a.value(i) as f64))
                } else if let Some(a) = any.downcast_ref::<Decimal128Array>() {
                    Cell::Number((!null).then(|| a.value(i) as f64 / 1e8))
                } else {
                    Cell::Number(None)
                };
                row.push(cell);
            }
        }
        table.rows.extend(rows);
    }
    Ok(table)
}
