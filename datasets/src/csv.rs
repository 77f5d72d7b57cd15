//! Bring your own daily closes: a CSV of `date,instrument,close` becomes a replay dataset with
//! one-day bars (docs/analytics.md), ready for `riskflow run --replay`.
//!
//! Every instrument becomes an equity in one currency; each close is a tick at 21:00 UTC of its
//! date. Accounts, positions and limits are left empty (add your own JSON Lines files to get
//! exposures and VaR); the volatility, correlation and regime figures need only the closes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use riskflow_dataflows::model::{Date, Instrument};

use crate::GenError;

const DAY_NS: u64 = 86_400_000_000_000;
const CLOSE_NS: u64 = 21 * 3_600_000_000_000;

/// What an import wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub instruments: usize,
    pub closes: usize,
}

/// Converts `csv` (header optional; columns date `YYYY-MM-DD`, instrument, close) into a
/// dataset under `out`. A malformed line is an error naming its line number.
pub fn import_closes(csv: &Path, out: &Path, currency: &str) -> Result<Imported, GenError> {
    let text = std::fs::read_to_string(csv).map_err(|e| GenError::io(csv, e))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (n == 0 && line.to_ascii_lowercase().starts_with("date")) {
            continue;
        }
        let bad = |why: &str| GenError::Options(format!("{}:{}: {why}: {line:?}", csv.display(), n + 1));
        let mut cols = line.split(',').map(str::trim);
        let (Some(date), Some(id), Some(close), None) = (cols.next(), cols.next(), cols.next(), cols.next()) else {
            return Err(bad("expected date,instrument,close"));
        };
        let date = Date::parse(date).ok_or_else(|| bad("bad date"))?;
        let close: f64 = close.parse().map_err(|_| bad("bad close"))?;
        if !(close.is_finite() && close > 0.0) || id.is_empty() || date.0 < 0 {
            return Err(bad("close must be positive and the instrument named"));
        }
        rows.push((date.0 as u64 * DAY_NS + CLOSE_NS, id.to_owned(), close));
    }
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    std::fs::create_dir_all(out).map_err(|e| GenError::io(out, e))?;
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let mut instruments = String::new();
    for id in &ids {
        let json = serde_json::to_string(&Instrument::equity(*id, currency)).expect("serialises");
        let _ = writeln!(instruments, "{json}");
    }
    let mut market = String::new();
    for (ts, id, close) in &rows {
        let _ = writeln!(market, "{}", serde_json::json!({"ts": ts, "instrument": id, "price": close}));
    }
    let (first, last) = (rows.first().map_or(0, |r| r.0), rows.last().map_or(0, |r| r.0));
    let toml = format!(
        "# riskflow dataset imported from {}\nname = \"imported\"\nbase_currency = \"{currency}\"\n\
         start_ts = {first}\nend_ts = {last}\nbar_ns = {DAY_NS}\n",
        csv.file_name().and_then(|n| n.to_str()).unwrap_or("a CSV file")
    );
    for (name, body) in [
        ("instruments.jsonl", instruments.as_str()),
        ("market.jsonl", &market),
        ("accounts.jsonl", ""),
        ("positions.jsonl", ""),
        ("limits.jsonl", ""),
        ("dataset.toml", &toml),
    ] {
        let path = out.join(name);
        std::fs::write(&path, body).map_err(|e| GenError::io(&path, e))?;
    }
    Ok(Imported { instruments: ids.len(), closes: rows.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_become_ticks_at_the_close() {
        let dir = std::env::temp_dir().join(format!("riskflow-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("closes.csv");
        std::fs::write(&csv, "date,instrument,close\n2025-01-03,SPY,100.5\n2025-01-02,SPY,99\n2025-01-02,QQQ,50\n")
            .unwrap();
        let out = dir.join("ds");
        assert_eq!(import_closes(&csv, &out, "USD").unwrap(), Imported { instruments: 2, closes: 3 });
        let market = std::fs::read_to_string(out.join("market.jsonl")).unwrap();
        // 2025-01-02 is day 20090 since 1970-01-01; 21:00 UTC.
        let ts = 20_090 * DAY_NS + CLOSE_NS;
        let first = format!("{{\"instrument\":\"QQQ\",\"price\":50.0,\"ts\":{ts}}}");
        assert_eq!(market.lines().next().unwrap(), first);
        assert_eq!(market.lines().count(), 3);
        std::fs::write(&csv, "2025-01-02,SPY,-1\n").unwrap();
        let err = import_closes(&csv, &out, "USD").unwrap_err().to_string();
        assert!(err.contains("closes.csv:1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
