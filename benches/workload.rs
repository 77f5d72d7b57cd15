//! The seeded workload every benchmark replays: accounts × instruments, a fixed number of
//! positions per account, one price tick per ten deltas (DESIGN.md §9's measurement setup).

use riskflow_dataflows::event::{Envelope, Event, Origin};
use riskflow_dataflows::model::{Account, Delta, Fixed, Instrument, Limit, Scope, Tick, Ts};

/// The allocator the `riskflow` binary runs with, for the engine and the baselines alike:
/// each bench's `main` calls [`allocator::configure`] first.
#[path = "../src/allocator.rs"]
pub mod allocator;

pub struct Workload {
    pub reference: Vec<Event>,
    /// Ticks and deltas in event-time order, one nanosecond apart.
    pub updates: Vec<Event>,
}

/// SplitMix64: small, seeded, stable.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `accounts` accounts in 10 desks, `instruments` USD equities, each account trading
/// `per_account` of them, `updates` records of which one in eleven is a tick. Every account
/// has a gross limit, every desk one too.
pub fn workload(accounts: usize, instruments: usize, per_account: usize, updates: usize, seed: u64) -> Workload {
    let mut rng = Rng(seed);
    let mut reference = Vec::new();
    for i in 0..instruments {
        reference.push(Event::Instrument(Instrument::equity(format!("I{i}"), "USD")));
    }
    for a in 0..accounts {
        reference.push(Event::Account(Account { id: format!("A{a}"), desk: format!("D{}", a % 10), firm: None }));
        reference.push(Event::Limit(limit(format!("LA{a}"), Scope::Account, format!("A{a}"), "gross", 5e6)));
    }
    for d in 0..10 {
        reference.push(Event::Limit(limit(format!("LD{d}"), Scope::Desk, format!("D{d}"), "gross", 5e9)));
    }
    let books: Vec<Vec<usize>> =
        (0..accounts).map(|_| (0..per_account).map(|_| rng.below(instruments as u64) as usize).collect()).collect();
    let mut prices: Vec<i64> = (0..instruments).map(|_| (10 + rng.below(490) as i64) * Fixed::SCALE).collect();
    let mut out = Vec::with_capacity(updates + instruments);
    let mut ts: Ts = 1_000_000_000;
    for (i, p) in prices.iter().enumerate() {
        out.push(Event::Tick(tick(ts, i, *p)));
    }
    for n in 0..updates {
        ts += 1;
        if n % 11 == 10 {
            let i = rng.below(instruments as u64) as usize;
            let move_bp = rng.below(21) as i64 - 10;
            prices[i] = (prices[i] + prices[i] * move_bp / 10_000).max(Fixed::SCALE);
            out.push(Event::Tick(tick(ts, i, prices[i])));
        } else {
            let a = rng.below(accounts as u64) as usize;
            let i = books[a][rng.below(per_account as u64) as usize];
            let qty = (rng.below(2000) as i64 - 1000) * Fixed::SCALE;
            out.push(Event::Delta(Delta {
                id: format!("F{n}"),
                ts,
                account: format!("A{a}"),
                instrument: format!("I{i}"),
                qty: Fixed(qty),
            }));
        }
    }
    Workload { reference, updates: out }
}

fn tick(ts: Ts, i: usize, price: i64) -> Tick {
    Tick { ts, instrument: format!("I{i}"), price: Fixed(price), bid: None, ask: None, iv: None }
}

/// Value-at-risk limits on the firm, each of the 10 desks and every fourth account: with a
/// firm-wide one, every bar end revalues every position.
#[allow(dead_code)] // the latency bench's `--bars` uses it; the throughput bench does not
pub fn var_limits(accounts: usize) -> Vec<Event> {
    let mut out = vec![Event::Limit(limit("VF".into(), Scope::Firm, Account::DEFAULT_FIRM.into(), "var", 1e12))];
    out.extend((0..10).map(|d| Event::Limit(limit(format!("VD{d}"), Scope::Desk, format!("D{d}"), "var", 1e11))));
    out.extend(
        (0..accounts)
            .step_by(4)
            .map(|a| Event::Limit(limit(format!("VA{a}"), Scope::Account, format!("A{a}"), "var", 1e6))),
    );
    out
}

/// A tick or delta at another event time.
#[allow(dead_code)] // as `var_limits`
pub fn retimed(event: &Event, ts: Ts) -> Event {
    match event {
        Event::Tick(t) => Event::Tick(Tick { ts, ..t.clone() }),
        Event::Delta(d) => Event::Delta(Delta { ts, ..d.clone() }),
        other => other.clone(),
    }
}

fn limit(id: String, scope: Scope, scope_id: String, metric: &str, value: f64) -> Limit {
    Limit {
        id,
        scope,
        scope_id,
        metric: metric.into(),
        limit: value,
        warn_at: None,
        hard: None,
        action: None,
        enabled: None,
    }
}

pub fn envelope(event: Event, ingest_ns: u64) -> Envelope {
    Envelope { event, origin: Origin::Engine, ingest_ns }
}

/// Argument `i` of the bench's command line as a number, or `default`.
pub fn arg(i: usize, default: usize) -> usize {
    std::env::args().skip(1).filter(|a| !a.starts_with('-')).nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// The engine as every benchmark runs it: no snapshots, one-second bars, default limits and
/// analytics.
pub fn engine_config() -> riskflow_dataflows::engine::EngineConfig {
    riskflow_dataflows::engine::EngineConfig {
        book: riskflow_dataflows::book::BookConfig {
            snapshot_interval: u64::MAX / 4,
            bar_interval: 1_000_000_000,
            base_ccy: riskflow_dataflows::exposure::Ccy::USD,
            rate: 0.0,
        },
        limits: riskflow_dataflows::limits::LimitsConfig::default(),
        analytics: riskflow_dataflows::analytics::AnalyticsConfig::default(),
    }
}
