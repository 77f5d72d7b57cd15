//! Question: what does closing one bar cost with N factors? One bar close is what the
//! analytics do at every bar end: the factor model advances (returns, EWMA variances, the
//! N×N EWMA covariance, the window and the history), the regime signals update, and VaR, ES
//! and stress are refreshed for the scopes with var/es/stress limits: here the firm, its 10
//! desks and 20 accounts holding 25 factors each (500 positions, every factor held).
//!
//! Cost grows as O(N²) for the covariance and for the firm's eᵀΣe, O(N·history) for its
//! historical P&L, and O(positions) for the exposures.
//!
//! With `--book`, the book is the latency bench's instead (`--bars`): 10,000 accounts in 10
//! desks, each holding 20 of N equities (N = 5,000 there), VaR on the firm, every desk and
//! every fourth account, so that a bar close revalues ~200k positions: what a change just after
//! a bar end waits for in that bench.
//!
//! `cargo bench --bench bar_close -- [factors] [bars] [--book]` (defaults 500 300).

// The bench uses only the workload's seeded generator and argument parsing.
#[allow(dead_code)]
mod workload;

use std::time::Instant;

use hdrhistogram::Histogram;
use riskflow_dataflows::analytics::factors::FactorModel;
use riskflow_dataflows::analytics::regimes::Regimes;
use riskflow_dataflows::analytics::risk::Positions;
use riskflow_dataflows::analytics::AnalyticsConfig;
use riskflow_dataflows::exposure::Ccy;
use riskflow_dataflows::model::{Account, Fixed, Instrument, Scope};
use workload::{arg, Rng};

fn main() {
    workload::allocator::configure();
    let (n, bars) = (arg(0, 500), arg(1, 300));
    let config = AnalyticsConfig::default();
    let mut rng = Rng(5);
    let names: Vec<String> = (0..n).map(|i| format!("F{i:04}")).collect();
    let large = std::env::args().any(|a| a == "--book");
    let mut book = Positions::default();
    book.set_rate(Ccy::USD, 1.0);
    let mut prices: Vec<f64> = (0..n).map(|_| 50.0 + rng.below(200) as f64).collect();
    for name in &names {
        book.define_instrument(Instrument::equity(name.clone(), "USD"));
    }
    let (accounts, per_account) = if large { (10_000, 20) } else { (20, 25) };
    for a in 0..accounts {
        let id = format!("A{a:02}");
        book.define_account(Account { id: id.clone(), desk: format!("D{}", a % 10), firm: None });
        for k in 0..per_account {
            let f = if large { rng.below(n as u64) as usize } else { (a * 25 + k * 7) % n };
            let qty = rng.below(2000) as i64 - 1000;
            book.add_qty(&id, &names[f], Fixed::from_int(qty.max(1)));
        }
    }
    // Every scope, or as the latency bench's VaR limits: the firm, the desks, every fourth account.
    let watched =
        |s: Scope, id: &str| !large || s != Scope::Account || id[1..].parse::<usize>().is_ok_and(|a| a % 4 == 0);
    let mut model = FactorModel::new(config.lambda, config.window, config.history);
    let mut regimes = Regimes::new(config.regimes.clone(), config.lambda, config.bars_per_year);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let mut events = Vec::new();
    for bar in 0..bars {
        for (i, p) in prices.iter_mut().enumerate() {
            *p *= 1.0 + (rng.below(2001) as f64 - 1000.0) * 1e-6;
            book.set_price(&names[i], Fixed::from_f64((*p * 100.0).round() / 100.0).unwrap(), None);
        }
        let closes = book.closes(Ccy::USD);
        let t = (bar as u64 + 1) * 1_000_000_000;
        let started = Instant::now();
        // In the engine's order: Σ's step is taken in the revaluation's pass over Σ.
        let returns = model.close_bar_but_sigma(t, closes);
        let rows = book.risk(t, Ccy::USD, 0.0, &config, &mut model, &watched);
        if bar == 0 {
            (0..4).for_each(|i| regimes.add_benchmark(i));
        }
        regimes.on_bar(t, &returns, &model, &mut events);
        std::hint::black_box(rows);
        hist.record(started.elapsed().as_nanos() as u64).expect("in range");
    }
    let ms = |v: u64| v as f64 / 1e6;
    let book = if large { format!(", {accounts} accounts × {per_account} positions") } else { String::new() };
    println!(
        "bar close, {n} factors{book}, {bars} bars: mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        hist.mean() / 1e6,
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.max())
    );
}
