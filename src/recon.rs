//! `riskflow recon`: the batch reconciliation (DESIGN.md §8).
//!
//! For every complete snapshot (`_snapshots/<as_of>/_SUCCESS`) it recomputes the tables from
//! the raw input files with plain sequential code — no dataflow code; only the formula
//! functions (`formulas`, `exposure`) and the analytics settings are shared — and compares
//! them row by row: matched, missing (in the batch, not the snapshot), extra (in the snapshot,
//! not the batch), and the largest absolute and relative difference with the row where it
//! occurs.
//!
//! - `positions`, `exposures`, `factor_exposures`: [`Inputs::book`] at `as_of`;
//! - `volatility`, `correlation`, `risk`, `stress`, `regimes`: [`analytics`], one pass over
//!   the bar ends (docs/analytics.md), read off at each snapshot;
//! - `breaches`, `actions` (with `--limits`): [`limits`], a replay of the limit state machine
//!   (DESIGN.md §4).
//!
//! A number passes when |snapshot − batch| ≤ tolerance · max(|snapshot|, |batch|, 1);
//! timestamps and strings must be equal.

mod analytics;
mod limits;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use riskflow_connectors::decode::decode;
use riskflow_connectors::parquet::{read_table, Cell};
use riskflow_dataflows::event::Event;
use riskflow_dataflows::exposure::{position_exposure, Ccy, OptionMarket, Sums, NANOS};
use riskflow_dataflows::formulas::rate_from_pair;
use riskflow_dataflows::model::{Account, AssetClass, Delta, Fixed, Instrument, Kind, Limit, Tick, Ts};
use serde::Serialize;

use crate::config::Config;

/// One compared cell: a number (null as `None`) or a string (null or empty as `None`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Number(Option<f64>),
    Text(Option<String>),
}

impl Value {
    fn num(x: Option<f64>) -> Value {
        Value::Number(x)
    }

    fn time(t: Option<Ts>) -> Value {
        // As the Parquet reader hands timestamps over: the nearest f64.
        Value::Number(t.map(|t| t as f64))
    }

    fn text(s: Option<&str>) -> Value {
        Value::Text(s.filter(|s| !s.is_empty()).map(str::to_owned))
    }

    fn number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => *n,
            Value::Text(_) => None,
        }
    }

    fn show(&self) -> String {
        match self {
            Value::Number(Some(x)) => format!("{x:?}"),
            Value::Text(Some(s)) => s.clone(),
            Value::Number(None) | Value::Text(None) => "null".to_owned(),
        }
    }
}

/// A table as keys → values, the shape both sides are compared in.
pub(crate) type Rows = BTreeMap<Vec<String>, Vec<Value>>;

/// How a column is compared.
#[derive(Copy, Clone, Debug)]
enum Col {
    /// A number, within the relative tolerance.
    Num(&'static str),
    /// A timestamp: equal or failed.
    Time(&'static str),
    /// A string: equal or failed.
    Text(&'static str),
}

impl Col {
    fn name(self) -> &'static str {
        match self {
            Col::Num(n) | Col::Time(n) | Col::Text(n) => n,
        }
    }
}

/// A table recon checks: name, key columns, compared columns.
struct Spec {
    name: &'static str,
    keys: &'static [&'static str],
    values: &'static [Col],
}

use Col::{Num, Text, Time};

const TABLES: &[Spec] = &[
    Spec {
        name: "positions",
        keys: &["account", "instrument"],
        values: &[
            Num("qty"),
            Num("price"),
            Num("exposure_local"),
            Num("exposure"),
            Num("gamma"),
            Num("vega"),
            Num("quote_exposure"),
        ],
    },
    Spec {
        name: "exposures",
        keys: &["scope", "scope_id", "dimension", "bucket"],
        values: &[
            Num("net"),
            Num("gross"),
            Num("long"),
            Num("short"),
            Num("gamma"),
            Num("vega"),
            Num("positions"),
            Num("concentration"),
        ],
    },
    Spec { name: "factor_exposures", keys: &["scope", "scope_id", "factor"], values: &[Num("exposure")] },
    Spec {
        name: "volatility",
        keys: &["factor"],
        values: &[
            Time("bar_end"),
            Num("close"),
            Num("last_return"),
            Num("returns"),
            Num("ewma_var"),
            Num("ewma_vol_annual"),
            Num("window_returns"),
            Num("window_var"),
            Num("window_vol_annual"),
        ],
    },
    Spec {
        name: "correlation",
        keys: &["factor_a", "factor_b"],
        values: &[Time("bar_end"), Num("covariance"), Num("correlation")],
    },
    Spec {
        name: "risk",
        keys: &["scope", "scope_id"],
        values: &[
            Time("bar_end"),
            Num("var_parametric"),
            Num("es_parametric"),
            Num("var_historical"),
            Num("es_historical"),
            Num("history_bars"),
            Num("stress_worst"),
            Text("worst_scenario"),
        ],
    },
    Spec { name: "stress", keys: &["scope", "scope_id", "scenario"], values: &[Num("pnl")] },
    Spec { name: "regimes", keys: &["signal"], values: &[Time("bar_end"), Text("regime"), Num("value")] },
    Spec {
        name: "breaches",
        keys: &["limit_id", "ts", "state"],
        values: &[
            Text("scope"),
            Text("scope_id"),
            Text("metric"),
            Num("value"),
            Num("limit"),
            Num("utilisation"),
            Text("prev_state"),
        ],
    },
    Spec {
        name: "actions",
        keys: &["scope", "scope_id", "ts", "state"],
        values: &[Text("prev_state"), Text("limit_id")],
    },
];

/// (key, column, snapshot value, batch value).
pub type Worst = (Vec<String>, String, Option<f64>, Option<f64>);

/// A timestamp or string that differs: (key, column, snapshot value, batch value).
pub type Mismatch = (Vec<String>, String, String, String);

/// The comparison of one table of one snapshot.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableReport {
    pub table: String,
    pub as_of: Ts,
    /// The snapshot has no file for this table (every batch row is then missing).
    pub absent: bool,
    pub matched: usize,
    pub missing: Vec<Vec<String>>,
    pub extra: Vec<Vec<String>>,
    pub max_abs_diff: f64,
    pub max_rel_diff: f64,
    /// Key and column of the largest relative difference, with the snapshot's and the
    /// batch's value.
    pub worst: Option<Worst>,
    /// The first timestamps and strings that differ.
    pub mismatches: Vec<Mismatch>,
    pub failed_values: usize,
}

impl TableReport {
    fn ok(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.failed_values == 0
    }
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
    /// The run's configuration: base currency, rate, epoch, limits, analytics.
    pub config: Config,
    /// Also compare the `breaches` and `actions` tables.
    pub limits: bool,
}

/// Runs the reconciliation of every complete snapshot under `opts.snapshots`.
pub fn recon(opts: &ReconOptions) -> anyhow::Result<Report> {
    let base = Ccy::parse(&opts.config.risk.base_currency).context("base currency")?;
    let r = opts.config.risk.rate;
    let inputs = Inputs::load(&opts.input)?;
    let analytics_config = opts.config.analytics.resolve(inputs.bar_ns);
    let markers = std::fs::read_dir(opts.snapshots.join("_snapshots"))
        .with_context(|| format!("no snapshots under {}", opts.snapshots.display()))?;
    let mut times: Vec<Ts> = markers
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("_SUCCESS").exists())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    times.sort_unstable();
    let events = match opts.limits {
        true => Some(limits::replay(&inputs, &opts.config, &analytics_config, &times)?),
        false => None,
    };
    let mut market = analytics::Analytics::new(&inputs, &analytics_config, base);
    let mut tables = Vec::new();
    let mut previous = None;
    for &as_of in &times {
        let book = inputs.book(as_of, base, r);
        market.advance_to(as_of);
        let mut batch = market.tables(&book, as_of, r);
        if let Some(events) = &events {
            batch.extend(events.tables(previous, as_of));
        }
        previous = Some(as_of);
        batch.extend(book.tables);
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(
            opts.snapshots.join("_snapshots").join(as_of.to_string()).join("_SUCCESS"),
        )?)?;
        for spec in TABLES.iter().filter(|s| batch.contains_key(s.name)) {
            let file = manifest["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f[0].as_str())
                .find(|f| f.starts_with(&format!("{}/", spec.name)));
            let snapshot = match file {
                Some(file) => Some(read_rows(&opts.snapshots.join(file), spec)?),
                None => None,
            };
            let absent = snapshot.is_none();
            let mut report = compare(spec, as_of, &snapshot.unwrap_or_default(), &batch[spec.name], opts.tolerance);
            report.absent = absent;
            tables.push(report);
        }
    }
    let ok = tables.iter().all(TableReport::ok);
    Ok(Report { tolerance: opts.tolerance, snapshots: times.len(), tables, ok })
}

/// The key text of a timestamp, as [`key_text`] writes the Parquet reader's value.
pub(crate) fn ts_key(t: Ts) -> String {
    format!("{:.0}", t as f64)
}

/// Inserts a row; a key seen before gets `#2`, `#3`… appended to its last part, so that
/// repeated events with the same key are all compared.
pub(crate) fn insert_unique(rows: &mut Rows, mut key: Vec<String>, values: Vec<Value>) {
    let last = key.len() - 1;
    let plain = key[last].clone();
    let mut n = 1;
    while rows.contains_key(&key) {
        n += 1;
        key[last] = format!("{plain}#{n}");
    }
    rows.insert(key, values);
}

/// The text of a key cell: a string, or a number written out in full (timestamps).
fn key_text(cell: &Cell) -> String {
    match cell {
        Cell::Text(s) => s.clone(),
        Cell::Number(Some(x)) => format!("{x:.0}"),
        Cell::Number(None) => String::new(),
    }
}

fn read_rows(path: &Path, spec: &Spec) -> anyhow::Result<Rows> {
    let table = read_table(path)?;
    if table.rows.is_empty() {
        // An empty file has no record batch to name its columns.
        return Ok(Rows::new());
    }
    let index = |name: &str| {
        table.columns.iter().position(|c| c == name).with_context(|| format!("{} has no column {name}", path.display()))
    };
    let key_idx: Vec<usize> = spec.keys.iter().map(|k| index(k)).collect::<anyhow::Result<_>>()?;
    let val_idx: Vec<(usize, Col)> =
        spec.values.iter().map(|v| Ok((index(v.name())?, *v))).collect::<anyhow::Result<_>>()?;
    let mut rows = Rows::new();
    for row in &table.rows {
        let key = key_idx.iter().map(|i| key_text(&row[*i])).collect();
        let vals = val_idx
            .iter()
            .map(|(i, col)| match col {
                Col::Text(_) => Value::text(Some(row[*i].text())),
                Col::Num(_) | Col::Time(_) => Value::num(Cell::number(&row[*i])),
            })
            .collect();
        insert_unique(&mut rows, key, vals);
    }
    Ok(rows)
}

fn compare(spec: &Spec, as_of: Ts, snapshot: &Rows, batch: &Rows, tol: f64) -> TableReport {
    const MISMATCHES_KEPT: usize = 10;
    let mut report = TableReport { table: spec.name.to_owned(), as_of, ..TableReport::default() };
    for (key, expected) in batch {
        let Some(got) = snapshot.get(key) else {
            report.missing.push(key.clone());
            continue;
        };
        report.matched += 1;
        for ((column, g), e) in spec.values.iter().zip(got).zip(expected) {
            if let Col::Time(_) | Col::Text(_) = column {
                if g != e {
                    report.failed_values += 1;
                    if report.mismatches.len() < MISMATCHES_KEPT {
                        report.mismatches.push((key.clone(), column.name().to_owned(), g.show(), e.show()));
                    }
                }
                continue;
            }
            let (g, e) = (g.number(), e.number());
            let (abs, rel) = match (g, e) {
                (Some(g), Some(e)) if g == e => (0.0, 0.0),
                (Some(g), Some(e)) => {
                    let abs = (g - e).abs();
                    (abs, abs / g.abs().max(e.abs()).max(1.0))
                }
                (None, None) => (0.0, 0.0),
                _ => (f64::INFINITY, f64::INFINITY),
            };
            report.max_abs_diff = report.max_abs_diff.max(abs);
            // NaN compares false with everything: count it as failed.
            if rel > tol || rel.is_nan() {
                report.failed_values += 1;
            }
            if rel > report.max_rel_diff || (rel > 0.0 && report.worst.is_none()) || rel.is_nan() {
                report.max_rel_diff = report.max_rel_diff.max(rel);
                report.worst = Some((key.clone(), column.name().to_owned(), g, e));
            }
        }
    }
    report.extra = snapshot.keys().filter(|k| !batch.contains_key(*k)).cloned().collect();
    report
}

/// The raw inputs, decoded with the engine's decoder and otherwise untouched.
pub(crate) struct Inputs {
    /// In file order.
    pub instruments: Vec<Instrument>,
    pub accounts: HashMap<String, Account>,
    /// Limits of `limits.jsonl`, in file order.
    pub limits: Vec<Limit>,
    /// Ticks of known instruments, in event-time order (file order among equal times).
    pub ticks: Vec<Tick>,
    /// Deltas, in event-time order (file order among equal times).
    pub deltas: Vec<Delta>,
    /// `bar_ns` of `dataset.toml`, if it has one.
    pub bar_ns: Option<u64>,
}

/// A priced position at a time, with what the analytics need of it.
pub(crate) struct Held<'a> {
    pub account: &'a Account,
    pub inst: &'a Instrument,
    pub qty: Fixed,
    /// Delta leg: its currency and its value in the base currency.
    pub delta: (Ccy, f64),
    /// Fx quote leg: its currency and its value in the base currency.
    pub quote: Option<(Ccy, f64)>,
    /// rate(currency of the delta leg).
    pub rate: f64,
    /// Options: the underlying's price and the option's implied vol.
    pub market: Option<(f64, f64)>,
}

impl Held<'_> {
    /// The scopes the position belongs to: (scope, scope_id).
    pub fn scopes(&self) -> [(&'static str, &str); 3] {
        [("account", self.account.id.as_str()), ("desk", self.account.desk.as_str()), ("firm", self.account.firm())]
    }
}

/// Factor exposures per scope: (scope, scope_id) → factor → e_f, exactly the
/// `factor_exposures` rows.
pub(crate) type ScopeFactors = BTreeMap<(&'static str, String), BTreeMap<String, f64>>;

/// The book at one time: the position tables, the priced positions and the factor exposures.
pub(crate) struct Book<'a> {
    pub tables: HashMap<&'static str, Rows>,
    pub held: Vec<Held<'a>>,
    pub factors: ScopeFactors,
}

impl Inputs {
    fn load(dir: &Path) -> anyhow::Result<Inputs> {
        let mut inputs = Inputs {
            instruments: Vec::new(),
            accounts: HashMap::new(),
            limits: Vec::new(),
            ticks: Vec::new(),
            deltas: Vec::new(),
            bar_ns: None,
        };
        for kind in [Kind::Instrument, Kind::Account, Kind::Limit, Kind::Tick, Kind::Delta] {
            let path = dir.join(kind.file_name());
            let Ok(text) = std::fs::read(&path) else { continue };
            for line in text.split(|b| *b == b'\n').filter(|l| !l.trim_ascii().is_empty()) {
                match decode(kind, line.trim_ascii()) {
                    Ok(Event::Instrument(i)) => inputs.instruments.push(i),
                    Ok(Event::Account(a)) => {
                        inputs.accounts.insert(a.id.clone(), a);
                    }
                    Ok(Event::Limit(l)) => inputs.limits.push(l),
                    Ok(Event::Tick(t)) => inputs.ticks.push(t),
                    Ok(Event::Delta(d)) => inputs.deltas.push(d),
                    _ => {}
                }
            }
        }
        let known: HashSet<&str> = inputs.instruments.iter().map(|i| i.id.as_str()).collect();
        let ticks = std::mem::take(&mut inputs.ticks);
        inputs.ticks = ticks.into_iter().filter(|t| known.contains(t.instrument.as_str())).collect();
        // Event-time order; a stable sort keeps file order among equal times.
        inputs.ticks.sort_by_key(|t| t.ts);
        inputs.deltas.sort_by_key(|d| d.ts);
        if let Ok(text) = std::fs::read_to_string(dir.join("dataset.toml")) {
            let table: toml::Table = toml::from_str(&text).context("dataset.toml")?;
            inputs.bar_ns = table.get("bar_ns").and_then(toml::Value::as_integer).map(|b| b as u64);
        }
        Ok(inputs)
    }

    /// Instruments by id (a later definition wins).
    pub fn instrument_map(&self) -> HashMap<&str, &Instrument> {
        self.instruments.iter().map(|i| (i.id.as_str(), i)).collect()
    }

    /// For each currency other than `base`, the fx pair against `base` that gives its rate (a
    /// later definition wins).
    pub fn rate_pairs(&self, base: Ccy) -> HashMap<Ccy, &Instrument> {
        let mut pairs = HashMap::new();
        for i in self.instruments.iter().filter(|i| i.asset_class == AssetClass::Fx) {
            let (b, q) = (i.base.as_deref().and_then(Ccy::parse), i.quote.as_deref().and_then(Ccy::parse));
            match (b, q) {
                (Some(b), Some(q)) if q == base => pairs.insert(b, i),
                (Some(b), Some(q)) if b == base => pairs.insert(q, i),
                _ => None,
            };
        }
        pairs
    }

    /// The position tables at `as_of`, computed straight from the inputs.
    pub fn book(&self, as_of: Ts, base: Ccy, r: f64) -> Book<'_> {
        let instruments = self.instrument_map();
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
            let entry = last.entry(t.instrument.as_str()).or_insert((t.ts, t.price, None));
            if t.ts >= entry.0 {
                *entry = (t.ts, t.price, t.iv.or(entry.2));
            }
        }
        let rate_pair = self.rate_pairs(base);
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
        let mut held = Vec::new();
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
            let quote = e.and_then(|e| e.quote).and_then(|l| to_base(l.nanos, l.ccy).map(|v| (l.ccy, v)));
            positions.insert(
                vec![account.to_owned(), id.to_owned()],
                vec![
                    Value::num(Some(Fixed(q).to_f64())),
                    Value::num(price.map(Fixed::to_f64)),
                    Value::num(e.map(|e| e.delta.nanos as f64 / 1e9)),
                    Value::num(value),
                    Value::num(e.and_then(|e| to_base(e.gamma, e.delta.ccy))),
                    Value::num(e.and_then(|e| to_base(e.vega, e.delta.ccy))),
                    Value::num(quote.map(|q| q.1)),
                ],
            );
            let Some(e) = e.filter(|_| value.is_some()) else { continue };
            let d = e.delta.ccy;
            held.push(Held {
                account: acct,
                inst,
                qty: Fixed(q),
                delta: (d, value.unwrap_or_default()),
                quote,
                rate: rate(d).unwrap_or_default(),
                market: option.map(|m| (m.spot.to_f64(), m.vol)),
            });
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
        let mut factor_rows = Rows::new();
        let mut factors = ScopeFactors::new();
        for ((scope, id, dim, bucket), b) in &buckets {
            let scope = match *scope {
                "account" => "account",
                "desk" => "desk",
                _ => "firm",
            };
            if *dim == "factor" {
                factor_rows.insert(vec![scope.to_owned(), id.clone(), bucket.clone()], vec![Value::num(Some(b[0]))]);
                factors.entry((scope, id.clone())).or_default().insert(bucket.clone(), b[0]);
                continue;
            }
            // The scope's underlying buckets lie together in key order: read from the first.
            let concentration = (*dim == "total" && b[1] > 0.0).then(|| {
                let max = buckets
                    .range((scope, id.clone(), "underlying", String::new())..)
                    .take_while(|((s, i, d, _), _)| *s == scope && i == id && *d == "underlying")
                    .map(|(_, u)| u[0].abs())
                    .fold(0.0, f64::max);
                max / b[1]
            });
            let positions = counts[&(scope, id.clone(), *dim, bucket.clone())] as f64;
            let mut values: Vec<Value> = b.iter().map(|x| Value::num(Some(*x))).collect();
            values.extend([Value::num(Some(positions)), Value::num(concentration)]);
            exposures.insert(vec![scope.to_owned(), id.clone(), dim.to_string(), bucket.clone()], values);
        }
        let tables =
            HashMap::from([("positions", positions), ("exposures", exposures), ("factor_exposures", factor_rows)]);
        Book { tables, held, factors }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "riskflow recon: {} snapshots, tolerance {:e} relative", self.snapshots, self.tolerance)?;
        #[derive(Default)]
        struct Total {
            matched: usize,
            missing: usize,
            extra: usize,
            abs: f64,
            rel: f64,
            failed: usize,
            absent: usize,
        }
        let mut per_table: BTreeMap<&str, Total> = BTreeMap::new();
        for t in &self.tables {
            let e = per_table.entry(&t.table).or_default();
            e.matched += t.matched;
            e.missing += t.missing.len();
            e.extra += t.extra.len();
            e.abs = e.abs.max(t.max_abs_diff);
            e.rel = e.rel.max(t.max_rel_diff);
            e.failed += t.failed_values;
            e.absent += usize::from(t.absent);
        }
        writeln!(
            f,
            "  {:<18} {:>8} {:>8} {:>8} {:>8} {:>12} {:>12}",
            "table", "matched", "missing", "extra", "failed", "max abs", "max rel"
        )?;
        for name in TABLES.iter().map(|s| s.name) {
            let Some(t) = per_table.get(name) else { continue };
            write!(
                f,
                "  {name:<18} {:>8} {:>8} {:>8} {:>8} {:>12.3e} {:>12.3e}",
                t.matched, t.missing, t.extra, t.failed, t.abs, t.rel
            )?;
            if t.absent > 0 {
                write!(f, "  (absent from {} snapshots)", t.absent)?;
            }
            writeln!(f)?;
        }
        for t in self.tables.iter().filter(|t| !t.ok() && !t.absent) {
            for k in t.missing.iter().take(3) {
                writeln!(f, "  missing {} at {}: {}", t.table, t.as_of, k.join("/"))?;
            }
            for k in t.extra.iter().take(3) {
                writeln!(f, "  extra {} at {}: {}", t.table, t.as_of, k.join("/"))?;
            }
            for (key, column, got, want) in t.mismatches.iter().take(3) {
                writeln!(
                    f,
                    "  differs {} at {}: {} {column}: snapshot {got}, batch {want}",
                    t.table,
                    t.as_of,
                    key.join("/")
                )?;
            }
            if let (Some((key, column, got, want)), true) = (&t.worst, t.max_rel_diff > self.tolerance) {
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
