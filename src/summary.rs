//! The run summary: what `riskflow run` prints, and writes as JSON with `--summary-json`.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use riskflow_dataflows::book::BookStats;
use riskflow_dataflows::event::Event;
use riskflow_dataflows::limits::{BreachEvent, LimitState};
use riskflow_dataflows::model::{Date, Scope, Ts, DAY_NS};
use riskflow_dataflows::snapshot::Dim;
use serde::Serialize;

use crate::run::{Kept, RunOptions};

/// Records read by a source, by kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub instruments: u64,
    pub accounts: u64,
    pub limits: u64,
    pub ticks: u64,
    pub deltas: u64,
    /// Lines that failed to decode or validate (dead-lettered at the source).
    pub rejected: u64,
    /// Records whose event time was behind the time already reached (applied, not dropped).
    pub late: u64,
}

impl Counts {
    pub fn count(&mut self, event: &Event) {
        match event {
            Event::Instrument(_) => self.instruments += 1,
            Event::Account(_) => self.accounts += 1,
            Event::Limit(_) => self.limits += 1,
            Event::Tick(_) => self.ticks += 1,
            Event::Delta(_) => self.deltas += 1,
            Event::End { .. } => {}
        }
    }

    pub fn add(&mut self, o: &Counts) {
        self.instruments += o.instruments;
        self.accounts += o.accounts;
        self.limits += o.limits;
        self.ticks += o.ticks;
        self.deltas += o.deltas;
        self.rejected += o.rejected;
        self.late += o.late;
    }

    /// Every record read, good or bad.
    pub fn records(&self) -> u64 {
        self.instruments + self.accounts + self.limits + self.ticks + self.deltas + self.rejected
    }
}

/// A labelled total in the base currency.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub net: f64,
    pub gross: f64,
}

/// A latency distribution, in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// The histograms a run measures.
pub struct Latencies {
    /// Ingest of a tick or delta to its live exposure update.
    pub live: Histogram<u64>,
    /// Ingest of a tick or delta to the breach or action event it caused leaving the sink.
    pub breach: Histogram<u64>,
}

/// A scope's risk at the last snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct RiskFigure {
    pub scope: String,
    pub scope_id: String,
    pub var_parametric: Option<f64>,
    pub es_parametric: Option<f64>,
    pub var_historical: Option<f64>,
    pub es_historical: Option<f64>,
    pub stress_worst: f64,
    pub worst_scenario: Option<String>,
}

/// The analytics at the last snapshot.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AnalyticsSummary {
    pub bar_end: Option<Ts>,
    pub factors: usize,
    /// Firm and desks, then the accounts with the largest parametric VaR.
    pub risk: Vec<RiskFigure>,
    /// The most volatile factors: (factor, annualised EWMA vol).
    pub top_vol: Vec<(String, f64)>,
    /// Each regime signal's level and value.
    pub regimes: Vec<(String, String, f64)>,
    pub regime_events: usize,
}

/// Limits at the end of the run, and what they raised.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LimitSummary {
    pub limits: usize,
    pub ok: usize,
    pub warn: usize,
    pub breach: usize,
    pub breach_events: usize,
    pub action_events: usize,
    /// The last few limit state changes.
    pub latest: Vec<BreachEvent>,
    pub detection_latency: Latency,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub dataset: String,
    pub out: String,
    pub workers: usize,
    pub processes: usize,
    pub records: Counts,
    pub duplicates: u64,
    pub dead_letters: u64,
    pub snapshots: usize,
    pub as_of: Option<Ts>,
    pub firms: Vec<Figure>,
    pub top_accounts: Vec<Figure>,
    pub by_asset_class: Vec<Figure>,
    pub by_currency: Vec<Figure>,
    pub unpriced_positions: u64,
    pub elapsed_s: f64,
    pub records_per_s: f64,
    pub latency: Latency,
    pub limits: LimitSummary,
    pub analytics: AnalyticsSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<crate::kafka_run::KafkaSummary>,
}

impl Summary {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opts: &RunOptions,
        records: Counts,
        book: BookStats,
        limit_states: Vec<(String, LimitState, f64)>,
        latencies: Latencies,
        snapshots: Kept,
        dead_letters: u64,
        elapsed: Duration,
    ) -> Summary {
        let count = snapshots.count;
        let breaches = snapshots.breaches;
        let action_events = snapshots.actions;
        let in_state = |state| limit_states.iter().filter(|(_, s, _)| *s == state).count();
        let limits = LimitSummary {
            limits: limit_states.len(),
            ok: in_state(LimitState::Ok),
            warn: in_state(LimitState::Warn),
            breach: in_state(LimitState::Breach),
            breach_events: breaches.len(),
            action_events,
            latest: breaches[breaches.len().saturating_sub(5)..].to_vec(),
            detection_latency: Latency::of(&latencies.breach),
        };
        let last = snapshots.last.map(|s| (*s).clone()).unwrap_or_default();
        let figures = |scope: Scope, dim: Dim| {
            let mut rows: Vec<Figure> = last
                .exposures
                .iter()
                .filter(|r| r.scope == scope && r.dim == dim)
                .map(|r| Figure {
                    name: if dim == Dim::Total { r.scope_id.to_string() } else { r.bucket.to_string() },
                    net: r.sums.net,
                    gross: r.sums.gross,
                })
                .collect();
            rows.sort_by(|a, b| b.gross.total_cmp(&a.gross).then_with(|| a.name.cmp(&b.name)));
            rows
        };
        let mut top_accounts = figures(Scope::Account, Dim::Total);
        top_accounts.truncate(5);
        let analytics = AnalyticsSummary::of(&last.analytics, snapshots.regimes.len());
        Summary {
            dataset: opts.source_name(),
            out: opts.out.display().to_string(),
            workers: opts.config.engine.workers,
            processes: opts.processes,
            duplicates: book.duplicates,
            dead_letters,
            snapshots: count,
            as_of: (last.as_of > 0).then_some(last.as_of),
            firms: figures(Scope::Firm, Dim::Total),
            top_accounts,
            by_asset_class: figures(Scope::Firm, Dim::AssetClass),
            by_currency: figures(Scope::Firm, Dim::Currency),
            unpriced_positions: last.unpriced,
            elapsed_s: elapsed.as_secs_f64(),
            records_per_s: records.records() as f64 / elapsed.as_secs_f64().max(1e-9),
            records,
            latency: Latency::of(&latencies.live),
            limits,
            analytics,
            kafka: None,
        }
    }
}

impl AnalyticsSummary {
    fn of(t: &riskflow_dataflows::analytics::AnalyticsTables, regime_events: usize) -> AnalyticsSummary {
        let figure = |r: &riskflow_dataflows::analytics::RiskRow| RiskFigure {
            scope: r.scope.as_str().to_owned(),
            scope_id: r.scope_id.clone(),
            var_parametric: r.var_parametric,
            es_parametric: r.es_parametric,
            var_historical: r.var_historical,
            es_historical: r.es_historical,
            stress_worst: r.stress_worst,
            worst_scenario: r.worst_scenario.clone(),
        };
        let mut risk: Vec<RiskFigure> = t.risk.iter().filter(|r| r.scope != Scope::Account).map(figure).collect();
        risk.sort_by(|a, b| b.scope.cmp(&a.scope).then_with(|| a.scope_id.cmp(&b.scope_id)));
        let mut accounts: Vec<&riskflow_dataflows::analytics::RiskRow> =
            t.risk.iter().filter(|r| r.scope == Scope::Account).collect();
        accounts.sort_by(|a, b| b.var_parametric.unwrap_or(0.0).total_cmp(&a.var_parametric.unwrap_or(0.0)));
        risk.extend(accounts.into_iter().take(3).map(figure));
        let mut top_vol: Vec<(String, f64)> =
            t.volatility.iter().filter_map(|v| Some((v.factor.clone(), v.ewma_vol_annual?))).collect();
        top_vol.sort_by(|a, b| b.1.total_cmp(&a.1));
        top_vol.truncate(5);
        AnalyticsSummary {
            bar_end: t.bar_end,
            factors: t.volatility.len(),
            risk,
            top_vol,
            regimes: t.regimes.iter().map(|r| (r.signal.clone(), r.regime.clone(), r.value)).collect(),
            regime_events,
        }
    }
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: f64| ns / 1_000.0;
        Latency {
            count: h.len(),
            mean_us: us(h.mean()),
            p50_us: us(h.value_at_quantile(0.5) as f64),
            p99_us: us(h.value_at_quantile(0.99) as f64),
            max_us: us(h.max() as f64),
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` UTC of an event time.
pub fn format_ts(ts: Ts) -> String {
    let date = Date::of_ts(ts);
    let ns = ts % DAY_NS;
    let (h, m, s, ms) =
        (ns / 3_600_000_000_000, ns / 60_000_000_000 % 60, ns / 1_000_000_000 % 60, ns / 1_000_000 % 1000);
    format!("{date} {h:02}:{m:02}:{s:02}.{ms:03}")
}

fn money(x: f64) -> String {
    let neg = x < 0.0;
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if neg {
        format!("-{out}")
    } else {
        out
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.records;
        writeln!(f, "riskflow run: {} ({} worker(s) × {} process(es))", self.dataset, self.workers, self.processes)?;
        writeln!(
            f,
            "records read   {} (instruments {}, accounts {}, limits {}, ticks {}, deltas {})",
            r.records(),
            r.instruments,
            r.accounts,
            r.limits,
            r.ticks,
            r.deltas
        )?;
        writeln!(
            f,
            "rejected       {} dead letters ({} at decode) → {}/dead-letter.jsonl; duplicates {}; late {}",
            self.dead_letters, r.rejected, self.out, self.duplicates, r.late
        )?;
        match self.as_of {
            Some(as_of) => writeln!(
                f,
                "snapshots      {} written to {} (last as of {})",
                self.snapshots,
                self.out,
                format_ts(as_of)
            )?,
            None => writeln!(f, "snapshots      none (no positions)")?,
        }
        if self.unpriced_positions > 0 {
            writeln!(f, "unpriced       {} positions without a price, vol or fx rate", self.unpriced_positions)?;
        }
        let table = |f: &mut fmt::Formatter<'_>, title: &str, rows: &[Figure]| -> fmt::Result {
            writeln!(f, "{title}")?;
            for row in rows {
                writeln!(f, "  {:<14} gross {:>18}   net {:>18}", row.name, money(row.gross), money(row.net))?;
            }
            Ok(())
        };
        table(f, "firm (USD)", &self.firms)?;
        table(f, "top accounts by gross", &self.top_accounts)?;
        table(f, "by asset class", &self.by_asset_class)?;
        table(f, "by currency", &self.by_currency)?;
        let a = &self.analytics;
        if let Some(bar_end) = a.bar_end {
            writeln!(f, "risk           {} factors, last bar {}", a.factors, format_ts(bar_end))?;
            let opt = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), money);
            writeln!(
                f,
                "  {:<22} {:>14} {:>14} {:>14} {:>14} {:>14}",
                "", "VaR", "ES", "hist VaR", "hist ES", "stress"
            )?;
            for r in &a.risk {
                writeln!(
                    f,
                    "  {:<22} {:>14} {:>14} {:>14} {:>14} {:>14}  {}",
                    format!("{} {}", r.scope, r.scope_id),
                    opt(r.var_parametric),
                    opt(r.es_parametric),
                    opt(r.var_historical),
                    opt(r.es_historical),
                    money(r.stress_worst),
                    r.worst_scenario.as_deref().unwrap_or("")
                )?;
            }
            let vols: Vec<String> = a.top_vol.iter().map(|(n, v)| format!("{n} {:.1}%", v * 100.0)).collect();
            writeln!(f, "  most volatile (EWMA, annualised): {}", vols.join(", "))?;
            let regimes: Vec<String> = a.regimes.iter().map(|(s, r, v)| format!("{s} {r} ({v:.3})")).collect();
            writeln!(f, "  regimes: {}; {} regime changes", regimes.join(", "), a.regime_events)?;
        }
        writeln!(f, "throughput     {:.0} records/s ({:.3} s)", self.records_per_s, self.elapsed_s)?;
        let l = &self.latency;
        writeln!(
            f,
            "latency        ingest→live output over {} updates: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs, mean {:.1} µs",
            l.count, l.p50_us, l.p99_us, l.max_us, l.mean_us
        )?;
        let m = &self.limits;
        writeln!(
            f,
            "limits         {} (OK {}, WARN {}, BREACH {}); {} state changes, {} trading actions",
            m.limits, m.ok, m.warn, m.breach, m.breach_events, m.action_events
        )?;
        for b in &m.latest {
            writeln!(
                f,
                "  {} {:<10} {} {:<10} {:<14} {:>6.1}%  {} → {}",
                format_ts(b.ts),
                b.limit_id,
                b.scope.as_str(),
                b.scope_id,
                b.metric,
                b.utilisation * 100.0,
                b.prev_state.as_str(),
                b.state.as_str()
            )?;
        }
        let d = &m.detection_latency;
        write!(
            f,
            "breach latency ingest→event written over {} events: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            d.count, d.p50_us, d.p99_us, d.max_us
        )?;
        if let Some(k) = &self.kafka {
            crate::kafka_run::fmt_summary(f, k)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(money(-1234567.6), "-1,234,568");
        assert_eq!(money(999.0), "999");
        let ts = Date::parse("2026-03-02").unwrap().start_ts() + 52_200_123_000_000;
        assert_eq!(format_ts(ts), "2026-03-02 14:30:00.123");
    }
}
