//! `riskflow recon`: the batch reconciliation (DESIGN.md §8).
//!
//! For every complete snapshot (`_snapshots/<as_of>/_SUCCESS`) it recomputes the tables from
//! the raw input files with plain sequential code — no dataflow code; only the formula
//! functions (`formulas`, `exposure`) are shared — and compares them row by row: matched,
//! missing (in the batch, not the snapshot), extra (in the snapshot, not the batch), and the
//! largest absolute and relative difference with the row where it occurs.
//!
//! A value passes when |snapshot − batch| ≤ tolerance · max(|snapshot|, |batch|, 1).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use riskflow_connectors::decode::decode;
use riskflow_connectors::parquet::{read_table, Cell};
use riskflow_dataflows::event::Event;
use riskflow_dataflows::exposure::{position_exposure, Ccy, OptionMarket, Sums, NANOS};
use riskflow_dataflows::formulas::rate_from_pair;
use riskflow_dataflows::model::{Account, AssetClass, Delta, Fixed, Instrument, Kind, Tick, Ts};
use serde::Serialize;

/// A table as keys → numbers, the shape both sides are compared in.
type Rows = BTreeMap<Vec<String>, Vec<Option<f64>>>;

/// The tables recon checks: name, key columns, value columns.
const TABLES: &[(&str, &[&str], &[&str])] = &[
    (
        "positions",
        &["account", "instrument"],
        &["qty", "price", "exposure_local", "exposure", "gamma", "vega", "quote_exposure"],
    ),
    (
        "exposures",
        &["scope", "scope_id", "dimension", "bucket"],
        &["net", "gross", "long", "short", "gamma", "vega", "positions", "concentration"],
    ),
    ("factor_exposures", &["scope", "scope_id", "factor"], &["exposure"]),
];

/// (key, column, snapshot value, batch value).
pub type Worst = (Vec<String>, String, Option<f64>, Option<f64>);

/// The comparison of one table of one snapshot.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableReport {
    pub table: String,
    pub as_of: Ts,
    pub matched: usize,
    pub missing: Vec<Vec<String>>,
    pub extra: Vec<Vec<String>>,
    pub max_abs_diff: f64,
    pub max_rel_diff: f64,
    /// Key and column of the largest relative difference, with the snapshot's and the
    /// batch's value.
    pub worst: Option<Worst>,
    pub failed_values: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tolerance: f64,
    pub snapshots: usize,
    pub tables: Vec<TableReport>,
    pub ok: bool,
}

/// Options of a reconciliation.
pub struct ReconOptions {
    pub input: PathBuf,
    pub snapshots: PathBuf,
    pub tolerance: f64,
    pub base_ccy: Ccy,
    pub rate: f64,
}

/// Runs the reconciliation of every complete snapshot under `opts.snapshots`.
pub fn recon(opts: &ReconOptions) -> anyhow::Result<Report> {
    let inputs = Inputs::load(&opts.input)?;
    let markers = std::fs::read_dir(opts.snapshots.join("_snapshots"))
        .with_context(|| format!("no snapshots under {}", opts.snapshots.display()))?;
    let mut times: Vec<Ts> = markers
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("_SUCCESS").exists())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    times.sort_unstable();
    let mut tables = Vec::new();
    for &as_of in &times {
        let batch = inputs.batch(as_of, opts.base_ccy, opts.rate);
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(
            opts.snapshots.join("_snapshots").join(as_of.to_string()).join("_SUCCESS"),
        )?)?;
        for (name, keys, values) in TABLES {
            let file = manifest["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f[0].as_str())
                .find(|f| f.starts_with(&format!("{name}/")))
                .with_context(|| format!("snapshot {as_of} has no {name} table"))?;
            let snapshot = read_rows(&opts.snapshots.join(file), keys, values)?;
            tables.push(compare(name, as_of, &snapshot, &batch[*name], values, opts.tolerance));
        }
    }
    let ok = tables.iter().all(|t| t.missing.is_empty() && t.extra.is_empty() && t.failed_values == 0);
    Ok(Report { tolerance: opts.tolerance, snapshots: times.len(), tables, ok })
}

fn read_rows(path: &Path, keys: &[&str], values: &[&str]) -> anyhow::Result<Rows> {
    let table = read_table(path)?;
    let index = |name: &str| {
        table.columns.iter().position(|c| c == name).with_context(|| format!("{} has no column {name}", path.display()))
    };
    let key_idx: Vec<usize> = keys.iter().map(|k| index(k)).collect::<anyhow::Result<_>>()?;
    let val_idx: Vec<usize> = values.iter().map(|v| index(v)).collect::<anyhow::Result<_>>()?;
    Ok(table
        .rows
        .iter()
        .map(|row| {
            let key = key_idx.iter().map(|i| row[*i].text().to_owned()).collect();
            let vals = val_idx.iter().map(|i| Cell::number(&row[*i])).collect();
            (key, vals)
        })
        .collect())
}

fn compare(name: &str, as_of: Ts, snapshot: &Rows, batch: &Rows, columns: &[&str], tol: f64) -> TableReport {
    let mut report = TableReport { table: name.to_owned(), as_of, ..TableReport::default() };
    for (key, expected) in batch {
        let Some(got) = snapshot.get(key) else {
            report.missing.push(key.clone());
            continue;
        };
        report.matched += 1;
        for ((column, g), e) in columns.iter().zip(got).zip(expected) {
            let (abs, rel) = match (g, e) {
                (Some(g), Some(e)) => {
                    let abs = (g - e).abs();
                    (abs, abs / g.abs().max(e.abs()).max(1.0))
                }
                (None, None) => (0.0, 0.0),
                _ => (f64::INFINITY, f64::INFINITY),
            };
            report.max_abs_diff = report.max_abs_diff.max(abs);
            if rel > tol {
                report.failed_values += 1;
            }
            if rel > report.max_rel_diff || (rel > 0.0 && report.worst.is_none()) {
                report.max_rel_diff = rel;
                report.worst = Some((key.clone(), (*column).to_owned(), *g, *e));
            }
        }
    }
    report.extra = snapshot.keys().filter(|k| !batch.contains_key(*k)).cloned().collect();
    report
}

/// The raw inputs, decoded with the engine's decoder and otherwise untouched.
struct Inputs {
    instruments: Vec<Instrument>,
    accounts: HashMap<String, Account>,
    ticks: Vec<Tick>,
    deltas: Vec<Delta>,
}

impl Inputs {
    fn load(dir: &Path) -> anyhow::Result<Inputs> {
        let mut inputs =
            Inputs { instruments: Vec::new(), accounts: HashMap::new(), ticks: Vec::new(), deltas: Vec::new() };
        for kind in [Kind::Instrument, Kind::Account, Kind::Tick, Kind::Delta] {
            let path = dir.join(kind.file_name());
            let Ok(text) = std::fs::read(&path) else { continue };
            for line in text.split(|b| *b == b'\n').filter(|l| !l.trim_ascii().is_empty()) {
                match decode(kind, line.trim_ascii()) {
                    Ok(Event::Instrument(i)) => inputs.instruments.push(i),
                    Ok(Event::Account(a)) => {
                        inputs.accounts.insert(a.id.clone(), a);
                    }
                    Ok(Event::Tick(t)) => inputs.ticks.push(t),
                    Ok(Event::Delta(d)) => inputs.deltas.push(d),
                    _ => {}
                }
            }
        }
        // Event-time order; a stable sort keeps file order among equal times.
        inputs.ticks.sort_by_key(|t| t.ts);
        inputs.deltas.sort_by_key(|d| d.ts);
        Ok(inputs)
    }

    /// Every table at `as_of`, computed straight from the inputs.
    fn batch(&self, as_of: Ts, base: Ccy, r: f64) -> HashMap<&'static str, Rows> {
        let instruments: HashMap<&str, &Instrument> = self.instruments.iter().map(|i| (i.id.as_str(), i)).collect();
        // Positions: each delta id once, for known accounts and instruments.
        let mut seen = HashSet::new();
        let mut qty: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for d in self.deltas.iter().take_while(|d| d.ts <= as_of) {
            if !seen.insert(d.id.as_str()) {
                continue;
            }
            if instruments.contains_key(d.instrument.as_str()) && self.accounts.contains_key(&d.account) {
                *qty.entry((d.account.as_str(), d.instrument.as_str())).or_default() += d.qty.0;
            }
        }
        // Last price at or before as_of (a later tick wins a tie), and the last implied vol.
        let mut last: HashMap<&str, (Ts, Fixed, Option<f64>)> = HashMap::new();
        for t in self.ticks.iter().take_while(|t| t.ts <= as_of) {
            if !instruments.contains_key(t.instrument.as_str()) {
                continue;
            }
            let entry = last.entry(t.instrument.as_str()).or_insert((t.ts, t.price, None));
            if t.ts >= entry.0 {
                *entry = (t.ts, t.price, t.iv.or(entry.2));
            }
        }
        // Rates from pairs against the base currency (a later definition wins).
        let mut rate_pair: HashMap<Ccy, &Instrument> = HashMap::new();
        for i in self.instruments.iter().filter(|i| i.asset_class == AssetClass::Fx) {
            let (b, q) = (i.base.as_deref().and_then(Ccy::parse), i.quote.as_deref().and_then(Ccy::parse));
            match (b, q) {
                (Some(b), Some(q)) if q == base => rate_pair.insert(b, i),
                (Some(b), Some(q)) if b == base => rate_pair.insert(q, i),
                _ => None,
            };
        }
        let rate = |c: Ccy| -> Option<f64> {
            if c == base {
                return Some(1.0);
            }
            let pair = rate_pair.get(&c)?;
            let price = last.get(pair.id.as_str())?.1.to_f64();
            rate_from_pair(pair.base.as_deref()?, pair.quote.as_deref()?, price, c.as_str(), base.as_str())
        };
        let to_base = |n: i128, c: Ccy| rate(c).map(|r| n as f64 / NANOS * r);

        let mut positions = Rows::new();
        let mut nanos: BTreeMap<(&str, String, &str, String, Ccy), Sums> = BTreeMap::new();
        for (&(account, id), &q) in &qty {
            if q == 0 {
                continue;
            }
            let inst = instruments[id];
            let acct = &self.accounts[account];
            let price = last.get(id).map(|l| l.1);
            let option = match (inst.asset_class, inst.underlying.as_deref()) {
                (AssetClass::Option, Some(u)) => {
                    last.get(u).zip(last.get(id).and_then(|l| l.2)).map(|(s, vol)| OptionMarket { spot: s.1, vol })
                }
                _ => None,
            };
            let e = price.and_then(|p| position_exposure(inst, Fixed(q), p, option, as_of, r).ok());
            let value = e.and_then(|e| to_base(e.delta.nanos, e.delta.ccy));
            positions.insert(
                vec![account.to_owned(), id.to_owned()],
                vec![
                    Some(Fixed(q).to_f64()),
                    price.map(Fixed::to_f64),
                    e.map(|e| e.delta.nanos as f64 / 1e9),
                    value,
                    e.and_then(|e| to_base(e.gamma, e.delta.ccy)),
                    e.and_then(|e| to_base(e.vega, e.delta.ccy)),
                    e.and_then(|e| e.quote).and_then(|l| to_base(l.nanos, l.ccy)),
                ],
            );
            let Some(e) = e.filter(|_| value.is_some()) else { continue };
            let d = e.delta.ccy;
            let delta = Sums::of_exposure(&e);
            let factor =
                if inst.asset_class == AssetClass::Fx { format!("FX:{d}") } else { inst.underlying_id().to_owned() };
            for (scope, scope_id) in [("account", account), ("desk", acct.desk.as_str()), ("firm", acct.firm())] {
                let mut add = |dim: &'static str, bucket: String, ccy: Ccy, s: &Sums| {
                    nanos.entry((scope, scope_id.to_owned(), dim, bucket, ccy)).or_default().add(s);
                };
                add("total", String::new(), d, &delta);
                add("asset_class", inst.asset_class.as_str().to_owned(), d, &delta);
                add("underlying", inst.underlying_id().to_owned(), d, &delta);
                add("currency", d.to_string(), d, &delta);
                if inst.asset_class != AssetClass::Fx || d != base {
                    add("factor", factor.clone(), d, &delta);
                }
                if let Some(q) = e.quote {
                    let leg = Sums::of_leg(q.nanos, 0, 0);
                    add("currency", q.ccy.to_string(), q.ccy, &leg);
                    if q.ccy != base {
                        add("factor", format!("FX:{}", q.ccy), q.ccy, &leg);
                    }
                }
            }
        }
        // Convert each currency's exact sum once, in currency order, then sum per bucket.
        let mut buckets: BTreeMap<(&str, String, &str, String), [f64; 6]> = BTreeMap::new();
        let mut counts: BTreeMap<(&str, String, &str, String), i64> = BTreeMap::new();
        for ((scope, id, dim, bucket, ccy), s) in nanos {
            let Some(r) = rate(ccy) else { continue };
            let c = |n: i128| n as f64 / NANOS * r;
            let key = (scope, id, dim, bucket);
            let b = buckets.entry(key.clone()).or_default();
            for (slot, n) in b.iter_mut().zip([s.net, s.gross, s.long, s.short, s.gamma, s.vega]) {
                *slot += c(n);
            }
            *counts.entry(key).or_default() += s.positions;
        }
        let mut exposures = Rows::new();
        let mut factors = Rows::new();
        for ((scope, id, dim, bucket), b) in &buckets {
            if *dim == "factor" {
                factors.insert(vec![scope.to_string(), id.clone(), bucket.clone()], vec![Some(b[0])]);
                continue;
            }
            let concentration = (*dim == "total" && b[1] > 0.0).then(|| {
                let max = buckets
                    .iter()
                    .filter(|((s, i, d, _), _)| s == scope && i == id && *d == "underlying")
                    .map(|(_, u)| u[0].abs())
                    .fold(0.0, f64::max);
                max / b[1]
            });
            let positions = counts[&(*scope, id.clone(), *dim, bucket.clone())] as f64;
            let mut values: Vec<Option<f64>> = b.iter().map(|x| Some(*x)).collect();
            values.extend([Some(positions), concentration]);
            exposures.insert(vec![scope.to_string(), id.clone(), dim.to_string(), bucket.clone()], values);
        }
        HashMap::from([("positions", positions), ("exposures", exposures), ("factor_exposures", factors)])
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "riskflow recon: {} snapshots, tolerance {:e} relative", self.snapshots, self.tolerance)?;
        let mut per_table: BTreeMap<&str, (usize, usize, usize, f64, f64, usize)> = BTreeMap::new();
        for t in &self.tables {
            let e = per_table.entry(&t.table).or_default();
            e.0 += t.matched;
            e.1 += t.missing.len();
            e.2 += t.extra.len();
            e.3 = e.3.max(t.max_abs_diff);
            e.4 = e.4.max(t.max_rel_diff);
            e.5 += t.failed_values;
        }
        writeln!(
            f,
            "  {:<18} {:>8} {:>8} {:>8} {:>12} {:>12}",
            "table", "matched", "missing", "extra", "max abs", "max rel"
        )?;
        for (name, (m, mi, ex, abs, rel, _)) in &per_table {
            writeln!(f, "  {name:<18} {m:>8} {mi:>8} {ex:>8} {abs:>12.3e} {rel:>12.3e}")?;
        }
        for t in self.tables.iter().filter(|t| !t.missing.is_empty() || !t.extra.is_empty() || t.failed_values > 0) {
            for k in t.missing.iter().take(3) {
                writeln!(f, "  missing {} at {}: {}", t.table, t.as_of, k.join("/"))?;
            }
            for k in t.extra.iter().take(3) {
                writeln!(f, "  extra {} at {}: {}", t.table, t.as_of, k.join("/"))?;
            }
            if let (Some((key, column, got, want)), true) = (&t.worst, t.failed_values > 0) {
                writeln!(
                    f,
                    "  worst {} at {}: {} {column}: snapshot {got:?}, batch {want:?}",
                    t.table,
                    t.as_of,
                    key.join("/")
                )?;
            }
        }
        write!(f, "{}", if self.ok { "agreement within tolerance" } else { "DISAGREEMENT" })
    }
}
