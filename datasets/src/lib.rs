//! riskflow's seeded dataset generator (DESIGN.md §7).
//!
//! [`generate`] writes a dataset directory in the replay format of DESIGN.md §2 —
//! `instruments.jsonl`, `accounts.jsonl`, `limits.jsonl`, `market.jsonl` (ticks) and
//! `positions.jsonl` (deltas), JSON Lines, the last two sorted by `ts` — plus `dataset.toml`
//! (what the dataset is) and `manifest.json` (seed, generator version, size and SHA-256 of
//! every other file). Three presets:
//!
//! - [`Preset::Sample`]: ten minutes of a trading day, 44 instruments, 20 accounts, about
//!   600 KB, with a few deliberately bad lines for the dead-letter path. Checked in under
//!   `datasets/sample/`.
//! - [`Preset::Day`]: a 6.5-hour trading day scaled by options (default 10 000 accounts,
//!   5 000 instruments, 1 M deltas, up to 100 M), streamed to disk in bounded memory.
//! - [`Preset::Daily`]: ~300 trading days of daily closes of 20 instruments, for daily
//!   RiskMetrics. Checked in under `datasets/daily/`.
//!
//! Output depends only on the preset, the seed and the options: the generator uses its own
//! PRNG (module `rng`) so a dependency update cannot change a dataset. Bump [`GENERATOR_VERSION`]
//! whenever the output changes.
//!
//! The content: a factor model with regime switches prices equities in USD, EUR, GBP and JPY,
//! four indices, their futures, listed options (implied vols in the ticks) and four FX pairs
//! (module `market`); accounts in desks hold start-of-day positions and trade realistic fills
//! (modules `universe`, `flow`); limits are sized from the positions' risk so that some breach
//! (module `risk`).

pub mod csv;
mod flow;
mod market;
mod risk;
mod rng;
mod universe;
mod write;

pub use flow::UNKNOWN_INSTRUMENT;

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use riskflow_dataflows::model::{Date, Ts, DAY_NS};
use serde::{Deserialize, Serialize};

use crate::flow::Flow;
use crate::market::{Grid, Market};
use crate::risk::{build_limits, Tracker};
use crate::rng::{Rng, Stream};
use crate::universe::{build_accounts, build_universe};
use crate::write::Out;

/// Version of the generator's output; bump whenever any preset's bytes change.
pub const GENERATOR_VERSION: &str = "1.0.0";

/// Largest number of deltas a `day` dataset may have.
pub const MAX_DELTAS: u64 = 100_000_000;

const SEC: u64 = 1_000_000_000;

/// A dataset shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Small: ten minutes, checked in, with deliberately bad lines.
    Sample,
    /// A full trading day, scaled by options.
    Day,
    /// Daily closes over ~300 trading days.
    Daily,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Sample, Preset::Day, Preset::Daily];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Sample => "sample",
            Preset::Day => "day",
            Preset::Daily => "daily",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = GenError;

    fn from_str(s: &str) -> Result<Preset, GenError> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| GenError::Options(format!("unknown preset {s:?} (sample, day or daily)")))
    }
}

/// What to generate. Every knob but the preset and seed is optional, with preset defaults
/// (see the crate README).
#[derive(Clone, Debug, PartialEq)]
pub struct GenOptions {
    pub preset: Preset,
    pub seed: u64,
    /// Number of accounts.
    pub accounts: Option<usize>,
    /// Number of instruments, all classes together (4 FX pairs and 4 indices included).
    pub instruments: Option<usize>,
    /// Number of valid lines of positions.jsonl: start-of-day positions, fills and
    /// redelivered duplicates (at most [`MAX_DELTAS`]).
    pub deltas: Option<u64>,
    /// Random ticks per delta (intraday presets), on top of one tick per instrument at t0.
    pub ticks_per_delta: Option<f64>,
    /// Instruments in each account's book (start-of-day positions per account); capped so
    /// start-of-day positions are at most half the deltas.
    pub positions_per_account: Option<usize>,
    /// Number of listed options among the instruments.
    pub options: Option<usize>,
    /// Number of index futures (0 to 4).
    pub futures: Option<usize>,
    /// Event time of the first tick (intraday: the session start; daily: the first day).
    pub start_ts: Option<Ts>,
    /// Length of the session in seconds (intraday presets).
    pub duration_secs: Option<u64>,
    /// Number of trading days (daily preset).
    pub trading_days: Option<usize>,
    /// Fraction of deltas that are redeliveries of an earlier one.
    pub duplicate_rate: Option<f64>,
    /// Whether to add the deliberately bad lines (default: only in the sample).
    pub bad_lines: Option<bool>,
}

impl GenOptions {
    /// The preset's defaults.
    pub fn new(preset: Preset, seed: u64) -> GenOptions {
        GenOptions {
            preset,
            seed,
            accounts: None,
            instruments: None,
            deltas: None,
            ticks_per_delta: None,
            positions_per_account: None,
            options: None,
            futures: None,
            start_ts: None,
            duration_secs: None,
            trading_days: None,
            duplicate_rate: None,
            bad_lines: None,
        }
    }
}

/// Why a dataset could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("invalid dataset options: {0}")]
    Options(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl GenError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> GenError {
        GenError::Io { path: path.to_path_buf(), source }
    }
}

/// Record counts of a dataset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub instruments: u64,
    pub accounts: u64,
    pub limits: u64,
    /// Valid ticks in market.jsonl (one per instrument at t0 included).
    pub ticks: u64,
    /// Valid deltas in positions.jsonl, duplicates included.
    pub deltas: u64,
    /// Start-of-day positions (deltas at t0, duplicates excluded).
    pub sod_deltas: u64,
    /// Fills (duplicates excluded).
    pub fill_deltas: u64,
    /// Redelivered duplicates (same id and content as an earlier line).
    pub duplicate_deltas: u64,
    /// Deliberately bad lines of market.jsonl and positions.jsonl.
    pub bad_ticks: u64,
    pub bad_deltas: u64,
    /// Changes between the calm and the stressed regime.
    pub regime_switches: u64,
    /// Limits sized to breach during the run (see dataset.toml).
    pub breach_by_design: u64,
}

/// A deliberately bad line: file, 1-based line number and the reason it must be rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadLine {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// What a dataset directory contains, written as `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub preset: String,
    pub seed: u64,
    pub generator_version: String,
    /// (file name, size in bytes, SHA-256 lowercase hex) of every file but the manifest.
    #[serde(with = "file_list")]
    pub files: Vec<(String, u64, String)>,
    pub counts: Counts,
    pub bad_lines: Vec<BadLine>,
}

mod file_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Entry {
        name: String,
        bytes: u64,
        sha256: String,
    }

    pub fn serialize<S: Serializer>(files: &[(String, u64, String)], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<Entry> = files
            .iter()
            .map(|(name, bytes, sha256)| Entry { name: name.clone(), bytes: *bytes, sha256: sha256.clone() })
            .collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, u64, String)>, D::Error> {
        let v = Vec::<Entry>::deserialize(d)?;
        Ok(v.into_iter().map(|e| (e.name, e.bytes, e.sha256)).collect())
    }
}

impl Manifest {
    /// Name of the manifest file in a dataset directory.
    pub const FILE: &'static str = "manifest.json";

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, GenError> {
        let path = dir.join(Self::FILE);
        let text = fs::read_to_string(&path).map_err(|e| GenError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|source| GenError::Json { path, source })
    }

    /// Checks every listed file of `dir` against its size and SHA-256; returns the names of
    /// the files that differ or are missing.
    pub fn verify(&self, dir: &Path) -> Result<Vec<String>, GenError> {
        let mut bad = Vec::new();
        for (name, bytes, sha) in &self.files {
            let path = dir.join(name);
            if !path.exists() {
                bad.push(name.clone());
                continue;
            }
            let (b, s) = sha256_file(&path)?;
            if b != *bytes || s != *sha {
                bad.push(name.clone());
            }
        }
        Ok(bad)
    }
}

/// Size and SHA-256 (lowercase hex) of a file.
pub fn sha256_file(path: &Path) -> Result<(u64, String), GenError> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path).map_err(|e| GenError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(|e| GenError::io(path, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, write::hex(&h.finalize())))
}

/// The time line of a dataset.
pub(crate) enum Axis {
    /// One session of `duration_ns` from the start.
    Intraday { duration_ns: u64 },
    /// Trading days: the close (21:00 UTC) of each, fills during the session before it.
    Daily { closes: Vec<Ts>, session_ns: u64 },
}

impl Axis {
    /// Event time of fill `k` of `n`, spread evenly (stratified) over the session(s).
    pub fn fill_ts(&self, t0: Ts, k: u64, n: u64, seed: u64) -> Ts {
        match self {
            Axis::Intraday { duration_ns } => t0 + stratified(k, n, *duration_ns, seed, 2),
            Axis::Daily { closes, session_ns } => {
                let total = (closes.len() as u64 - 1) * session_ns;
                let tau = stratified(k, n, total, seed, 2);
                let d = 1 + (tau / session_ns) as usize;
                closes[d] - session_ns + tau % session_ns
            }
        }
    }
}

/// Offset of event `k` of `n` spread over `span`: uniform within the k-th of n equal slots,
/// so the offsets are sorted without holding them. A pure function of its arguments.
pub(crate) fn stratified(k: u64, n: u64, span: u64, seed: u64, stream: u64) -> u64 {
    if span == 0 || n == 0 {
        return 0;
    }
    // Slot k is [⌊k·span/n⌋, ⌊(k+1)·span/n⌋), without 128-bit division when it can be avoided.
    let (q, rem) = (span / n, span % n);
    let part = |k: u64| match k.checked_mul(rem) {
        Some(x) => x / n,
        None => (k as u128 * rem as u128 / n as u128) as u64,
    };
    let start = k * q + part(k);
    let end = (k + 1) * q + part(k + 1);
    let mut z = seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F) ^ k.wrapping_mul(0xE703_7ED1_A0B4_28DB);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let width = end - start;
    start + ((z as u128 * width as u128) >> 64) as u64
}

/// Options resolved against the preset's defaults and checked.
pub(crate) struct Plan {
    pub preset: Preset,
    pub seed: u64,
    pub daily: bool,
    pub accounts: usize,
    pub instruments: usize,
    pub stocks: usize,
    pub futures: usize,
    pub options: usize,
    pub option_chain: usize,
    pub positions_per_account: usize,
    pub deltas: u64,
    pub duplicates: u64,
    pub random_ticks: u64,
    pub start_ts: Ts,
    pub end_ts: Ts,
    pub axis: Axis,
    pub grid_ns: u64,
    /// Mean durations of the calm and stressed regimes (seconds intraday, days daily).
    pub regime_secs: (f64, f64),
    pub quotes: bool,
    pub bad_lines: bool,
    pub checkpoints: u64,
    pub bar_ns: u64,
    pub breach_target: usize,
}

/// Weekday test (day 0, 1970-01-01, was a Thursday).
fn is_weekday(d: Date) -> bool {
    (d.0 + 3).rem_euclid(7) < 5
}

fn session_open(d: Date) -> Ts {
    d.start_ts() + 14 * 3600 * SEC + 1800 * SEC
}

impl Plan {
    fn resolve(o: &GenOptions) -> Result<Plan, GenError> {
        let bad = |m: String| Err(GenError::Options(m));
        let p = o.preset;
        let daily = p == Preset::Daily;
        let accounts = o.accounts.unwrap_or(match p {
            Preset::Sample => 20,
            Preset::Day => 10_000,
            Preset::Daily => 10,
        });
        let instruments = o.instruments.unwrap_or(match p {
            Preset::Sample => 44,
            Preset::Day => 5_000,
            Preset::Daily => 20,
        });
        let deltas = o.deltas.unwrap_or(match p {
            Preset::Sample => 2_000,
            Preset::Day => 1_000_000,
            Preset::Daily => 200,
        });
        let tpd = o.ticks_per_delta.unwrap_or(match p {
            Preset::Sample => 2.0,
            _ => 0.1,
        });
        let ppa = o.positions_per_account.unwrap_or(match p {
            Preset::Sample => 6,
            Preset::Day => 20,
            Preset::Daily => 5,
        });
        if !(1..=1_000_000).contains(&accounts) {
            return bad(format!("accounts must be 1..=1000000, not {accounts}"));
        }
        if !(12..=200_000).contains(&instruments) {
            return bad(format!("instruments must be 12..=200000, not {instruments}"));
        }
        if deltas > MAX_DELTAS {
            return bad(format!("deltas must be at most {MAX_DELTAS}, not {deltas}"));
        }
        if !(tpd.is_finite() && (0.0..=1000.0).contains(&tpd)) {
            return bad(format!("ticks_per_delta must be in 0..=1000, not {tpd}"));
        }
        if ppa == 0 {
            return bad("positions_per_account must be positive".into());
        }
        let futures = o.futures.unwrap_or(if p == Preset::Day { 4 } else { 3 });
        if futures > 4 {
            return bad(format!("futures must be 0..=4, not {futures}"));
        }
        let options = o.options.unwrap_or(match p {
            Preset::Sample => 12,
            Preset::Day => (instruments as f64 * 0.2).round() as usize,
            Preset::Daily => 0,
        });
        let fixed = 4 + 4 + futures + options;
        if fixed >= instruments {
            return bad(format!(
                "{instruments} instruments leave no room for equities after 4 FX pairs, 4 indices, {futures} futures and {options} options"
            ));
        }
        let stocks = instruments - fixed;
        if options > 60 * (stocks + 4) {
            return bad(format!("{options} options are too many for {} underlyings", stocks + 4));
        }
        let rate = o.duplicate_rate.unwrap_or(0.005);
        if !(0.0..=0.5).contains(&rate) {
            return bad(format!("duplicate_rate must be in 0..=0.5, not {rate}"));
        }
        let duplicates = (deltas as f64 * rate).round() as u64;
        let originals = deltas - duplicates;
        if (accounts as u64) > originals {
            return bad(format!(
                "{deltas} deltas are too few for {accounts} accounts (each needs a start-of-day position)"
            ));
        }
        let ppa = ppa.min(((originals / 2) / accounts as u64).max(1) as usize);

        let (start_ts, end_ts, axis, grid_ns, regime_secs, bar_ns) = if daily {
            let days = o.trading_days.unwrap_or(300);
            if !(2..=20_000).contains(&days) {
                return bad(format!("trading_days must be 2..=20000, not {days}"));
            }
            let mut dates = Vec::with_capacity(days);
            match o.start_ts {
                Some(ts) => {
                    let mut d = Date::of_ts(ts);
                    while dates.len() < days {
                        if is_weekday(d) {
                            dates.push(d);
                        }
                        d = Date(d.0 + 1);
                    }
                }
                None => {
                    let mut d = Date::parse("2026-02-27").expect("a date");
                    while dates.len() < days {
                        if is_weekday(d) {
                            dates.push(d);
                        }
                        d = Date(d.0 - 1);
                    }
                    dates.reverse();
                }
            }
            let closes: Vec<Ts> = dates.iter().map(|d| d.start_ts() + 21 * 3600 * SEC).collect();
            let session_ns = 23_400 * SEC;
            let (s, e) = (closes[0], *closes.last().expect("days"));
            (s, e, Axis::Daily { closes, session_ns }, 0, (80.0, 10.0), DAY_NS)
        } else {
            let start = o.start_ts.unwrap_or_else(|| session_open(Date::parse("2026-03-02").expect("a date")));
            let secs = o.duration_secs.unwrap_or(if p == Preset::Sample { 600 } else { 23_400 });
            if !(10..=7 * 86_400).contains(&secs) {
                return bad(format!("duration_secs must be 10..=604800, not {secs}"));
            }
            let duration_ns = secs * SEC;
            let (grid_ns, regimes) =
                if p == Preset::Sample { (SEC / 10, (240.0, 120.0)) } else { (SEC, (5_400.0, 1_200.0)) };
            // Keep at least a few regime changes on a short run, and the grid under ~200k points.
            let scale = (secs as f64 / 23_400.0).min(1.0);
            let regimes =
                if p == Preset::Day { (regimes.0 * scale.max(0.05), regimes.1 * scale.max(0.05)) } else { regimes };
            let grid_ns = grid_ns.max(duration_ns / 200_000);
            (start, start + duration_ns, Axis::Intraday { duration_ns }, grid_ns, regimes, SEC)
        };
        let random_ticks = if daily { 0 } else { (deltas as f64 * tpd).round() as u64 };
        Ok(Plan {
            preset: p,
            seed: o.seed,
            daily,
            accounts,
            instruments,
            stocks,
            futures,
            options,
            option_chain: if options <= 12 { 3 } else { 8 },
            positions_per_account: ppa,
            deltas,
            duplicates,
            random_ticks,
            start_ts,
            end_ts,
            axis,
            grid_ns,
            regime_secs,
            quotes: !daily,
            bad_lines: o.bad_lines.unwrap_or(p == Preset::Sample),
            checkpoints: if p == Preset::Day { (deltas / 100_000).clamp(10, 100) } else { 200 },
            bar_ns,
            breach_target: (accounts / 10).clamp(10, 500),
        })
    }

    /// Digits of the account numbers (`ACC-0001`).
    pub fn account_width(&self) -> usize {
        4.max(self.accounts.to_string().len())
    }

    /// An account id that is not in accounts.jsonl (`ACC-9999` in the sample).
    pub fn unknown_account(&self) -> String {
        let w = self.account_width();
        let nines = if (self.accounts as f64) < 10f64.powi(w as i32) - 1.0 { w } else { w + 1 };
        format!("ACC-{}", "9".repeat(nines))
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fffffffff]Z` of an event time.
pub fn rfc3339(ts: Ts) -> String {
    let d = Date::of_ts(ts);
    let ns = ts % DAY_NS;
    let (h, m, s, f) = (ns / 3600 / SEC, ns / 60 / SEC % 60, ns / SEC % 60, ns % SEC);
    if f == 0 {
        format!("{d}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{d}T{h:02}:{m:02}:{s:02}.{f:09}Z")
    }
}

fn write_jsonl<T: Serialize>(dir: &Path, name: &str, records: &[T]) -> Result<write::Written, GenError> {
    let mut out = Out::create(dir, name)?;
    for r in records {
        let json = serde_json::to_string(r).map_err(|source| GenError::Json { path: dir.join(name), source })?;
        out.buf.extend_from_slice(without_nulls(&json).as_bytes());
        out.buf.push(b'\n');
        out.end_line()?;
    }
    out.finish()
}

/// A flat JSON object without its `"field":null` members: optional fields that are absent are
/// left out of the files, as DESIGN.md §2 shows them.
fn without_nulls(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(i) = rest.find(":null") {
        let after = &rest[i + 5..];
        let start = rest[..i].rfind(",\"").filter(|_| after.starts_with([',', '}']));
        match start {
            Some(start) if rest[start + 2..i].ends_with('"') && !rest[start + 2..i - 1].contains('"') => {
                out.push_str(&rest[..start]);
            }
            _ => out.push_str(&rest[..i + 5]),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Writes the dataset files into `out` (created if missing) and returns the manifest (also
/// written as `out/manifest.json`). `progress` is called now and then with the number of
/// records written so far, and once at the end.
pub fn generate(opts: &GenOptions, out: &Path, progress: &mut dyn FnMut(u64)) -> Result<Manifest, GenError> {
    let plan = Plan::resolve(opts)?;
    fs::create_dir_all(out).map_err(|e| GenError::io(out, e))?;
    let seed = plan.seed;
    let u = build_universe(&plan, &mut Rng::new(seed, Stream::Universe));
    let (desks, accounts) = build_accounts(&plan, &u, &mut Rng::new(seed, Stream::Accounts));

    let mut files = Vec::new();
    let records: Vec<_> = u.insts.iter().map(|i| &i.record).collect();
    files.push(write_jsonl(out, "instruments.jsonl", &records)?);
    let records: Vec<_> = accounts.iter().map(|a| &a.record).collect();
    files.push(write_jsonl(out, "accounts.jsonl", &records)?);
    let mut written = (u.insts.len() + accounts.len()) as u64;

    let grid = Grid::simulate(&plan, &mut Rng::new(seed, Stream::Factors));
    let episodes = grid.episodes();
    let mut market = Market::new(&plan, &u, grid, Rng::new(seed, Stream::Ticks));
    let mut flow = Flow::new(&plan, &u, accounts, Rng::new(seed, Stream::Fills));
    let mut tracker = Tracker::new(&u, &desks, &flow.accounts);
    let mut mkt = Out::create(out, "market.jsonl")?;
    let mut pos = Out::create(out, "positions.jsonl")?;
    let mut bad_lines = Vec::new();
    let mut next_report = written + (1 << 16);
    let mut last_ts = plan.start_ts;
    loop {
        let tick = market.peek_ts(&plan, &u);
        let delta = flow.peek_ts(&plan, &u);
        let tick_first = match (tick, delta) {
            (None, None) => break,
            (Some(a), Some(b)) => a <= b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if tick_first {
            last_ts = tick.unwrap_or(last_ts);
            market.emit(&plan, &u, &mut mkt, &mut bad_lines)?;
        } else {
            let ts = delta.unwrap_or(last_ts);
            last_ts = ts;
            if flow.checkpoint_due(&plan, &u) {
                tracker.checkpoint(&u, &flow.accounts, &market, ts);
            }
            flow.emit(&plan, &u, &mut pos, &mut bad_lines)?;
        }
        written += 1;
        if written >= next_report {
            progress(written);
            next_report += 1 << 16;
        }
    }
    market.finish(&u, last_ts, &mut mkt, &mut bad_lines)?;
    tracker.checkpoint(&u, &flow.accounts, &market, last_ts);
    let (market_lines, positions_lines) = (mkt.lines, pos.lines);
    files.push(mkt.finish()?);
    files.push(pos.finish()?);

    let set =
        build_limits(&u, &desks, &flow.accounts, &tracker, plan.breach_target, &mut Rng::new(seed, Stream::Limits));
    files.push(write_jsonl(out, "limits.jsonl", &set.limits)?);
    written += set.limits.len() as u64;

    let bad_ticks = bad_lines.iter().filter(|b| b.file == "market.jsonl").count() as u64;
    let bad_deltas = bad_lines.len() as u64 - bad_ticks;
    let counts = Counts {
        instruments: u.insts.len() as u64,
        accounts: flow.accounts.len() as u64,
        limits: set.limits.len() as u64,
        ticks: market.ticks,
        deltas: flow.written,
        sod_deltas: flow.sod,
        fill_deltas: flow.fills,
        duplicate_deltas: flow.duplicates,
        bad_ticks,
        bad_deltas,
        regime_switches: episodes.len() as u64 - 1,
        breach_by_design: set.breach.len() as u64,
    };
    debug_assert_eq!(market_lines, counts.ticks + bad_ticks);
    debug_assert_eq!(positions_lines, counts.deltas + bad_deltas);
    debug_assert_eq!(counts.deltas, plan.deltas);

    let toml = dataset_toml(&plan, &counts, &episodes, &set, &bad_lines, market.grid.step_ns);
    let mut t = Out::create(out, "dataset.toml")?;
    t.buf.extend_from_slice(toml.as_bytes());
    files.push(t.finish()?);

    let manifest = Manifest {
        preset: plan.preset.name().into(),
        seed,
        generator_version: GENERATOR_VERSION.into(),
        files: files.into_iter().map(|w| (w.name, w.bytes, w.sha256)).collect(),
        counts,
        bad_lines,
    };
    let path = out.join(Manifest::FILE);
    let mut text =
        serde_json::to_string_pretty(&manifest).map_err(|source| GenError::Json { path: path.clone(), source })?;
    text.push('\n');
    fs::write(&path, text).map_err(|e| GenError::io(&path, e))?;
    progress(written);
    Ok(manifest)
}

fn toml_str(s: &str) -> String {
    // Our strings are plain ASCII; JSON string escaping is valid TOML basic-string escaping.
    serde_json::to_string(s).expect("a string serialises")
}

fn description(plan: &Plan) -> String {
    let base = "Synthetic multi-asset book: equities in USD, EUR, GBP and JPY with sectors, four \
        indices (SPX, SX5E, NKY, UKX), index futures, listed European options with implied vols in \
        their ticks, and FX pairs (EURUSD, GBPUSD, USDJPY, EURJPY). Prices follow a factor model \
        (market, region, sector, idiosyncratic) with a two-state Markov regime (stressed: 3x vol, \
        higher correlation). Accounts in desks hold start-of-day positions and trade fills of \
        realistic sizes; about 0.5% of deltas are redelivered duplicates; some limits are sized to \
        breach.";
    match plan.preset {
        Preset::Sample => format!(
            "Ten minutes of a trading day, small enough to check in. {base} Contains deliberately \
             bad lines (see bad_lines) that must go to the dead-letter sink."
        ),
        Preset::Day => format!("A full 6.5-hour trading day at scale, never committed. {base}"),
        Preset::Daily => {
            format!("Daily closes (21:00 UTC, weekdays) for daily RiskMetrics, no options, no bid/ask. {base}")
        }
    }
}

fn dataset_toml(
    plan: &Plan,
    c: &Counts,
    episodes: &[(usize, u8)],
    set: &risk::LimitSet,
    bad: &[BadLine],
    step_ns: u64,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let list = |v: &[String]| v.iter().map(|x| toml_str(x)).collect::<Vec<_>>().join(", ");
    let _ =
        writeln!(s, "# riskflow dataset, written by riskflow-datasets {GENERATOR_VERSION}: regenerate, do not edit.");
    let _ = writeln!(s, "name = {}", toml_str(&format!("{}-{}", plan.preset, plan.seed)));
    let _ = writeln!(s, "preset = {}", toml_str(plan.preset.name()));
    let _ = writeln!(s, "seed = {}", plan.seed);
    let _ = writeln!(s, "generator_version = {}", toml_str(GENERATOR_VERSION));
    let _ = writeln!(s, "description = {}", toml_str(&description(plan)));
    let _ = writeln!(s, "base_currency = \"USD\"");
    let _ = writeln!(s, "start_ts = {}", plan.start_ts);
    let _ = writeln!(s, "end_ts = {}", plan.end_ts);
    let _ = writeln!(s, "start = {}", toml_str(&rfc3339(plan.start_ts)));
    let _ = writeln!(s, "end = {}", toml_str(&rfc3339(plan.end_ts)));
    let _ = writeln!(s, "bar_ns = {}", plan.bar_ns);
    let _ = writeln!(s, "# Limits sized to breach (VaR/ES/stress ones approximately) and to reach WARN only.");
    let _ = writeln!(s, "breach_by_design = [{}]", list(&set.breach));
    let _ = writeln!(s, "warn_by_design = [{}]", list(&set.warn));
    let _ = writeln!(s);
    let _ = writeln!(s, "[files]");
    for (k, v) in [
        ("instruments", "instruments.jsonl"),
        ("accounts", "accounts.jsonl"),
        ("limits", "limits.jsonl"),
        ("market", "market.jsonl"),
        ("positions", "positions.jsonl"),
    ] {
        let _ = writeln!(s, "{k} = {}", toml_str(v));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "[counts]");
    for (k, v) in [
        ("instruments", c.instruments),
        ("accounts", c.accounts),
        ("limits", c.limits),
        ("ticks", c.ticks),
        ("deltas", c.deltas),
        ("sod_deltas", c.sod_deltas),
        ("fill_deltas", c.fill_deltas),
        ("duplicate_deltas", c.duplicate_deltas),
        ("bad_ticks", c.bad_ticks),
        ("bad_deltas", c.bad_deltas),
        ("regime_switches", c.regime_switches),
        ("breach_by_design", c.breach_by_design),
    ] {
        let _ = writeln!(s, "{k} = {v}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "# The true regime of the price model (stressed: 3x vol, higher correlation).");
    for &(g, r) in episodes {
        let ts = match &plan.axis {
            Axis::Intraday { .. } => plan.start_ts + g as u64 * step_ns,
            Axis::Daily { closes, .. } => closes[g],
        };
        let _ = writeln!(s, "[[regimes]]");
        let _ = writeln!(s, "start_ts = {ts}");
        let _ = writeln!(s, "state = {}", toml_str(if r == 0 { "calm" } else { "stressed" }));
    }
    for b in bad {
        let _ = writeln!(s);
        let _ = writeln!(s, "[[bad_lines]]");
        let _ = writeln!(s, "file = {}", toml_str(&b.file));
        let _ = writeln!(s, "line = {}", b.line);
        let _ = writeln!(s, "reason = {}", toml_str(&b.reason));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn nulls_are_left_out() {
        let json = r#"{"id":"X","underlying":null,"strike":1.0,"note":"a,\"b\":null","expiry":null}"#;
        assert_eq!(super::without_nulls(json), r#"{"id":"X","strike":1.0,"note":"a,\"b\":null"}"#);
    }
}
