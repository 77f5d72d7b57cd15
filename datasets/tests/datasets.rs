//! The checked-in datasets are reproducible and well-formed, and the `day` preset honours
//! its options.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use riskflow_dataflows::model::{Account, AssetClass, Delta, Instrument, Kind, Limit, Tick};
use riskflow_datasets::{generate, GenError, GenOptions, Manifest, Preset, UNKNOWN_INSTRUMENT};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("riskflow-datasets-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn checked_in(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Regenerates a checked-in dataset and compares every file's size and SHA-256.
fn reproduces(dir_name: &str, preset: Preset) {
    let dir = checked_in(dir_name);
    let manifest = Manifest::read(&dir).expect("the checked-in manifest reads");
    assert_eq!(manifest.preset, preset.name());
    assert_eq!(
        manifest.generator_version,
        riskflow_datasets::GENERATOR_VERSION,
        "GENERATOR_VERSION changed: regenerate datasets/{dir_name} (see datasets/README.md)"
    );
    assert_eq!(manifest.verify(&dir).unwrap(), Vec::<String>::new(), "checked-in files differ from their manifest");
    let tmp = TempDir::new(dir_name);
    let mut calls = 0;
    let again = generate(&GenOptions::new(preset, manifest.seed), &tmp.0, &mut |_| calls += 1).unwrap();
    assert!(calls > 0, "progress is reported");
    assert_eq!(again.files, manifest.files, "regenerating datasets/{dir_name} changed its bytes");
    assert_eq!(again, manifest);
    assert_eq!(Manifest::read(&tmp.0).unwrap(), manifest);
}

#[test]
fn sample_reproduces_its_manifest() {
    reproduces("sample", Preset::Sample);
}

#[test]
fn daily_reproduces_its_manifest() {
    reproduces("daily", Preset::Daily);
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

#[test]
fn checked_in_datasets_are_small() {
    let sample = dir_size(&checked_in("sample"));
    assert!(sample < 1 << 20, "sample is {sample} bytes");
    let daily = dir_size(&checked_in("daily"));
    assert!(daily < 650_000, "daily is {daily} bytes");
}

fn lines(dir: &Path, kind: Kind) -> Vec<String> {
    let text = fs::read_to_string(dir.join(kind.file_name())).unwrap();
    assert!(text.ends_with('\n'));
    text.lines().map(str::to_string).collect()
}

/// Everything a replay would see, checked record by record.
struct Checked {
    ticks: Vec<Tick>,
    deltas: Vec<Delta>,
    /// (file, 1-based line, why it is bad) as found.
    bad: Vec<(String, u64, String)>,
}

fn check_dataset(dir: &Path, manifest: &Manifest) -> Checked {
    let start_ts: u64 = fs::read_to_string(dir.join("dataset.toml"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("start_ts = ").map(|v| v.parse().unwrap()))
        .expect("dataset.toml has start_ts");
    let instruments: Vec<Instrument> =
        lines(dir, Kind::Instrument).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by_id: HashMap<&str, &Instrument> = instruments.iter().map(|i| (i.id.as_str(), i)).collect();
    assert_eq!(by_id.len(), instruments.len(), "instrument ids are unique");
    for i in &instruments {
        i.validate().unwrap();
        if let Some(u) = &i.underlying {
            assert!(by_id.contains_key(u.as_str()), "{} has unknown underlying {u}", i.id);
        }
    }
    let accounts: Vec<Account> = lines(dir, Kind::Account).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let acct_ids: HashSet<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
    for a in &accounts {
        a.validate().unwrap();
        assert_eq!(a.firm(), "FIRM");
    }
    let desks: HashSet<&str> = accounts.iter().map(|a| a.desk.as_str()).collect();
    let limits: Vec<Limit> = lines(dir, Kind::Limit).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    for l in &limits {
        assert!(l.limit > 0.0 && l.limit.is_finite(), "{l:?}");
        match l.scope {
            riskflow_dataflows::model::Scope::Account => {
                assert!(acct_ids.contains(l.scope_id.as_str()))
            }
            riskflow_dataflows::model::Scope::Desk => assert!(desks.contains(l.scope_id.as_str())),
            riskflow_dataflows::model::Scope::Firm => assert_eq!(l.scope_id, "FIRM"),
        }
        let ok = ["gross", "net", "var", "es", "stress", "concentration"].contains(&l.metric.as_str())
            || l.metric.strip_prefix("position_qty:").is_some_and(|i| by_id.contains_key(i));
        assert!(ok, "bad metric {}", l.metric);
    }

    let bad_at: HashSet<(String, u64)> = manifest.bad_lines.iter().map(|b| (b.file.clone(), b.line)).collect();
    let mut found_bad = Vec::new();
    let mut ticks = Vec::new();
    for (n, l) in lines(dir, Kind::Tick).iter().enumerate() {
        let n = n as u64 + 1;
        let parsed = serde_json::from_str::<Tick>(l);
        let reason = match &parsed {
            Err(e) => Some(format!("parse: {e}")),
            Ok(t) if !by_id.contains_key(t.instrument.as_str()) => Some("unknown instrument".into()),
            Ok(t) => t.validate().err(),
        };
        match reason {
            Some(r) => {
                assert!(bad_at.contains(&("market.jsonl".into(), n)), "market.jsonl:{n} {r}: {l}");
                found_bad.push(("market.jsonl".to_string(), n, r));
            }
            None => {
                assert!(!bad_at.contains(&("market.jsonl".into(), n)), "market.jsonl:{n} should be bad");
                let t = parsed.unwrap();
                assert_eq!(t.iv.is_some(), by_id[t.instrument.as_str()].asset_class == AssetClass::Option);
                if let (Some(b), Some(a)) = (t.bid, t.ask) {
                    assert!(b <= t.price && t.price <= a, "{l}");
                }
                ticks.push(t);
            }
        }
    }
    let mut deltas = Vec::new();
    for (n, l) in lines(dir, Kind::Delta).iter().enumerate() {
        let n = n as u64 + 1;
        let parsed = serde_json::from_str::<Delta>(l);
        let reason = match &parsed {
            Err(e) => Some(format!("parse: {e}")),
            Ok(d) if !by_id.contains_key(d.instrument.as_str()) => Some("unknown instrument".into()),
            Ok(d) if !acct_ids.contains(d.account.as_str()) => Some("unknown account".into()),
            Ok(d) => d.validate().err(),
        };
        match reason {
            Some(r) => {
                assert!(bad_at.contains(&("positions.jsonl".into(), n)), "positions.jsonl:{n} {r}: {l}");
                found_bad.push(("positions.jsonl".to_string(), n, r));
            }
            None => {
                assert!(!bad_at.contains(&("positions.jsonl".into(), n)), "positions.jsonl:{n} should be bad");
                let d = parsed.unwrap();
                assert_ne!(d.qty.0, 0, "{l}");
                assert!(by_id[d.instrument.as_str()].sector.as_deref() != Some("index"), "indices are not traded");
                deltas.push(d);
            }
        }
    }
    found_bad.sort_by_key(|b| (b.0.clone(), b.1));

    // Sorted by ts, prices known from t0.
    assert!(ticks.windows(2).all(|w| w[0].ts <= w[1].ts), "market.jsonl is sorted by ts");
    assert!(deltas.windows(2).all(|w| w[0].ts <= w[1].ts), "positions.jsonl is sorted by ts");
    let mut first_tick: HashMap<&str, u64> = HashMap::new();
    for t in &ticks {
        first_tick.entry(t.instrument.as_str()).or_insert(t.ts);
    }
    for i in &instruments {
        assert_eq!(first_tick.get(i.id.as_str()), Some(&start_ts), "{} has a tick at t0", i.id);
    }
    for d in &deltas {
        assert!(d.ts >= start_ts);
    }

    // Duplicates: same id means the same delta, later in the file.
    let mut seen: HashMap<&str, &Delta> = HashMap::new();
    let mut dups = 0;
    for d in &deltas {
        match seen.get(d.id.as_str()) {
            Some(first) => {
                assert_eq!(*first, d, "a redelivery repeats the delta exactly");
                dups += 1;
            }
            None => {
                seen.insert(d.id.as_str(), d);
            }
        }
    }
    let c = &manifest.counts;
    assert_eq!(dups, c.duplicate_deltas);
    assert_eq!(deltas.len() as u64, c.deltas);
    assert_eq!(ticks.len() as u64, c.ticks);
    assert_eq!(instruments.len() as u64, c.instruments);
    assert_eq!(accounts.len() as u64, c.accounts);
    assert_eq!(limits.len() as u64, c.limits);
    assert_eq!(c.sod_deltas + c.fill_deltas + c.duplicate_deltas, c.deltas);
    let at_t0 = deltas.iter().filter(|d| d.ts == start_ts).count() as u64;
    assert!(at_t0 >= c.sod_deltas, "start-of-day positions come at t0");
    Checked { ticks, deltas, bad: found_bad }
}

#[test]
fn sample_is_well_formed_with_documented_bad_lines() {
    let dir = checked_in("sample");
    let m = Manifest::read(&dir).unwrap();
    let checked = check_dataset(&dir, &m);
    let c = &m.counts;
    // Exactly the bad lines datasets/README.md documents.
    assert_eq!((c.bad_ticks, c.bad_deltas), (2, 4));
    assert_eq!(checked.bad.len(), 6);
    let reasons: Vec<&str> = m.bad_lines.iter().map(|b| b.reason.as_str()).collect();
    for r in ["malformed JSON", "unknown account", "missing qty", "unknown instrument", "negative price", "zero price"]
    {
        assert_eq!(reasons.iter().filter(|x| **x == r).count(), 1, "{r}");
    }
    let text = fs::read_to_string(dir.join("positions.jsonl")).unwrap();
    let all: Vec<&str> = text.lines().collect();
    for b in &m.bad_lines {
        let found = checked.bad.iter().find(|f| f.0 == b.file && f.1 == b.line).expect("a listed bad line is bad");
        match b.reason.as_str() {
            "malformed JSON" => assert!(found.2.starts_with("parse: "), "{found:?}"),
            "missing qty" => assert!(found.2.contains("missing field `qty`"), "{found:?}"),
            "unknown account" => {
                assert_eq!(found.2, "unknown account");
                assert!(all[b.line as usize - 1].contains("\"ACC-9999\""));
            }
            "unknown instrument" => {
                assert_eq!(found.2, "unknown instrument");
                assert!(all[b.line as usize - 1].contains(UNKNOWN_INSTRUMENT));
            }
            "negative price" => {
                assert!(found.2.contains("is not positive") && found.2.contains("price -"))
            }
            "zero price" => assert_eq!(found.2, "price 0 is not positive"),
            other => panic!("undocumented bad line {other}"),
        }
    }
    assert!(c.duplicate_deltas >= 5, "the sample has redelivered duplicates");
    assert!(c.regime_switches >= 1, "the sample visits the stressed regime");
    assert!(c.breach_by_design >= 5);
    // Shape of the sample (DESIGN.md §7, datasets/README.md).
    assert_eq!((c.instruments, c.accounts, c.deltas), (44, 20, 2000));
    assert!(checked.ticks.iter().any(|t| t.iv.is_some()));
    assert!(checked.deltas.iter().any(|d| d.qty.0 % 100_000_000 != 0), "fractional quantities occur");
}

#[test]
fn daily_is_well_formed() {
    let dir = checked_in("daily");
    let m = Manifest::read(&dir).unwrap();
    let checked = check_dataset(&dir, &m);
    assert!(checked.bad.is_empty());
    let c = &m.counts;
    assert_eq!(c.instruments, 20);
    assert_eq!(c.ticks, 20 * 300, "one close per instrument per day");
    // Closes at 21:00 UTC.
    assert!(checked.ticks.iter().all(|t| t.ts % 86_400_000_000_000 == 21 * 3_600_000_000_000));
}

#[test]
fn day_preset_honours_its_options() {
    let mut o = GenOptions::new(Preset::Day, 3);
    o.deltas = Some(1000);
    o.accounts = Some(50);
    o.instruments = Some(40);
    let a = TempDir::new("day-a");
    let m = generate(&o, &a.0, &mut |_| {}).unwrap();
    let c = &m.counts;
    assert_eq!((c.deltas, c.accounts, c.instruments), (1000, 50, 40));
    assert_eq!(c.ticks, 40 + 100, "a t0 tick per instrument plus 1 tick per 10 deltas");
    assert_eq!((c.bad_ticks, c.bad_deltas), (0, 0));
    assert_eq!(c.duplicate_deltas, 5);
    assert_eq!(lines(&a.0, Kind::Delta).len(), 1000);
    assert_eq!(lines(&a.0, Kind::Tick).len(), 140);
    let checked = check_dataset(&a.0, &m);
    assert_eq!(checked.deltas.len(), 1000);
    let toml = fs::read_to_string(a.0.join("dataset.toml")).unwrap();
    assert!(toml.contains("end = \"2026-03-02T21:00:00Z\""), "a 6.5-hour day");
    assert!(toml.contains("bar_ns = 1000000000"));

    // Deterministic, and the seed matters.
    let b = TempDir::new("day-b");
    assert_eq!(generate(&o, &b.0, &mut |_| {}).unwrap(), m);
    o.seed = 4;
    let c2 = TempDir::new("day-c");
    assert_ne!(generate(&o, &c2.0, &mut |_| {}).unwrap().files, m.files);
}

#[test]
fn bad_options_are_refused() {
    let dir = TempDir::new("bad-options");
    let mut o = GenOptions::new(Preset::Day, 1);
    o.deltas = Some(riskflow_datasets::MAX_DELTAS + 1);
    assert!(matches!(generate(&o, &dir.0, &mut |_| {}), Err(GenError::Options(_))));
    let mut o = GenOptions::new(Preset::Day, 1);
    o.deltas = Some(10);
    o.accounts = Some(100);
    assert!(matches!(generate(&o, &dir.0, &mut |_| {}), Err(GenError::Options(_))));
    let mut o = GenOptions::new(Preset::Sample, 1);
    o.instruments = Some(20);
    assert!(matches!(generate(&o, &dir.0, &mut |_| {}), Err(GenError::Options(_))));
    assert_eq!("daily".parse::<Preset>().unwrap(), Preset::Daily);
    assert!("weekly".parse::<Preset>().is_err());
}
