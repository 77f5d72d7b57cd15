//! Analytics through the whole engine: volatility, correlation, VaR/ES and stress at several
//! snapshots against straightforward computations written out here, across a position that
//! is closed (its exposure retracted) and returns that leave the window; the same tables from
//! one and two workers; VaR's linearity and sub-additivity as properties; a factor held in two
//! currencies as one exposure; and risk rows that do not depend on the order the book's parts
//! arrive in.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use proptest::prelude::*;
use riskflow_dataflows::analytics::factors::FactorModel;
use riskflow_dataflows::analytics::risk::Positions;
use riskflow_dataflows::analytics::{AnalyticsConfig, AnalyticsTables};
use riskflow_dataflows::book::BookConfig;
use riskflow_dataflows::engine::{engine, EngineConfig};
use riskflow_dataflows::event::{Envelope, Event, Origin};
use riskflow_dataflows::exposure::Ccy;
use riskflow_dataflows::formulas::{inv_norm_cdf, norm_pdf};
use riskflow_dataflows::limits::LimitsConfig;
use riskflow_dataflows::model::*;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::InputHandleVec;

use common::{delta, f, tick};

const SEC: Ts = 1_000_000_000;

fn config(window: usize, history: usize) -> AnalyticsConfig {
    AnalyticsConfig { bar_ns: SEC, lambda: 0.9, window, history, horizon_bars: 4.0, ..AnalyticsConfig::default() }
}

/// The engine over `events` (sent at their event time, rounded up to 100 ms), one-second bars,
/// snapshots every `snapshot_interval`; the analytics tables of every snapshot by `as_of`.
fn run(
    reference: Vec<Event>,
    events: Vec<Event>,
    analytics: AnalyticsConfig,
    workers: usize,
    snapshot_interval: Ts,
) -> Vec<(Ts, AnalyticsTables)> {
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let mut input = InputHandleVec::<Ts, Envelope>::new();
        let out = Rc::new(RefCell::new(Vec::new()));
        let o = out.clone();
        let config = EngineConfig {
            book: BookConfig { snapshot_interval, bar_interval: SEC, base_ccy: Ccy::USD, rate: 0.0 },
            limits: LimitsConfig::default(),
            analytics: analytics.clone(),
        };
        worker.dataflow::<Ts, _, _>(|scope| {
            let e = engine(input.to_stream(scope), &config, |live| live);
            e.analytics.sink(Pipeline, "Collect", move |(input, _)| {
                input.for_each(|cap, data| {
                    let time = *cap.least().expect("a time");
                    o.borrow_mut().extend(data.drain(..).map(|t| (time, t)));
                })
            });
        });
        if worker.index() == 0 {
            let send = |input: &mut InputHandleVec<Ts, Envelope>, event| {
                input.send(Envelope { event, origin: Origin::Engine, ingest_ns: 0 })
            };
            reference.iter().cloned().for_each(|e| send(&mut input, e));
            let mut last = 0;
            for e in events.iter().cloned() {
                let time = e.ts().unwrap().div_ceil(SEC / 10) * (SEC / 10);
                if time > *input.time() {
                    input.advance_to(time);
                }
                last = last.max(time);
                send(&mut input, e);
                worker.step();
            }
            send(&mut input, Event::End { max_ts: last });
        }
        drop(input);
        while worker.step() {}
        out.take()
    })
    .unwrap();
    let mut all: Vec<(Ts, AnalyticsTables)> = guards.join().into_iter().flat_map(|r| r.unwrap()).collect();
    all.sort_by_key(|(t, _)| *t);
    all
}

fn reference() -> Vec<Event> {
    let inst = |s: &str| Event::Instrument(serde_json::from_str(s).unwrap());
    vec![
        inst(r#"{"id":"A","asset_class":"equity","currency":"USD","multiplier":1,"sector":"index"}"#),
        inst(r#"{"id":"B","asset_class":"equity","currency":"USD","multiplier":1,"sector":"index"}"#),
        Event::Account(Account { id: "X".into(), desk: "D".into(), firm: None }),
        Event::Account(Account { id: "Y".into(), desk: "D".into(), firm: None }),
    ]
}

/// Straightforward RiskMetrics figures over a list of returns.
fn ewma(lambda: f64, xs: &[f64]) -> f64 {
    let mut v = xs[0];
    for x in &xs[1..] {
        v = lambda * v + (1.0 - lambda) * x;
    }
    v
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300)
}

#[test]
fn figures_at_every_snapshot_match_straightforward_computation() {
    // Closes at bar ends 1..=5 s: A 100, 110, 110, 99, 99; B 50, 50, 45, 45, 46.
    let events = vec![
        tick(SEC / 2, "A", 100.0),
        tick(SEC / 2, "B", 50.0),
        delta("d1", SEC / 2, "X", "A", 10.0),
        delta("d2", SEC / 2, "X", "B", 20.0),
        delta("d3", SEC / 2, "Y", "A", -4.0),
        tick(3 * SEC / 2, "A", 110.0),
        tick(5 * SEC / 2, "B", 45.0),
        // X closes its A position: its exposure to A is retracted.
        delta("d4", 5 * SEC / 2, "X", "A", -10.0),
        tick(7 * SEC / 2, "A", 99.0),
        tick(5 * SEC, "B", 46.0),
    ];
    let (window, history) = (2, 3);
    let cfg = config(window, history);
    let snaps = run(reference(), events, cfg.clone(), 1, SEC);
    assert_eq!(snaps.iter().map(|s| s.0).collect::<Vec<_>>(), vec![SEC, 2 * SEC, 3 * SEC, 4 * SEC, 5 * SEC]);

    let closes_a = [100.0f64, 110.0, 110.0, 99.0, 99.0];
    let closes_b = [50.0f64, 50.0, 45.0, 45.0, 46.0];
    let rets = |c: &[f64], k: usize| -> Vec<f64> { (1..=k).map(|i| (c[i] / c[i - 1]).ln()).collect() };
    for (k, (as_of, tables)) in snaps.iter().enumerate() {
        assert_eq!(tables.bar_end, Some(*as_of));
        let (ra, rb) = (rets(&closes_a, k), rets(&closes_b, k));
        let vol = |name: &str| tables.volatility.iter().find(|v| v.factor == name).unwrap();
        assert_eq!(vol("A").close, closes_a[k]);
        assert_eq!(vol("B").returns, k as u64);
        if k == 0 {
            assert!(vol("A").ewma_var.is_none() && tables.correlation.is_empty());
            continue;
        }
        let sq = |r: &[f64]| r.iter().map(|x| x * x).collect::<Vec<_>>();
        let (va, vb) = (ewma(cfg.lambda, &sq(&ra)), ewma(cfg.lambda, &sq(&rb)));
        let cab = ewma(cfg.lambda, &ra.iter().zip(&rb).map(|(a, b)| a * b).collect::<Vec<_>>());
        assert!(close(vol("A").ewma_var.unwrap(), va), "A ewma at {as_of}");
        assert!(close(vol("B").ewma_var.unwrap(), vb), "B ewma at {as_of}");
        // Windowed: the last two returns only; older ones have left.
        let last = &rb[rb.len().saturating_sub(window)..];
        let wb = last.iter().map(|r| r * r).sum::<f64>() / last.len() as f64;
        assert_eq!(vol("B").window_returns, last.len() as u64);
        assert!(close(vol("B").window_var.unwrap(), wb), "B window at {as_of}: {:?} vs {wb}", vol("B").window_var);
        let corr = tables.correlation.iter().find(|c| c.factor_a == "A" && c.factor_b == "B").unwrap();
        assert!(close(corr.covariance, cab));
        if va > 0.0 && vb > 0.0 {
            assert!(close(corr.correlation.unwrap(), cab / (va * vb).sqrt()));
        }

        // Exposures at as_of: X holds 10 A until 2.5 s, and 20 B; Y is short 4 A.
        let x_a = if *as_of < 3 * SEC { 10.0 * closes_a[k] } else { 0.0 };
        let (x_b, y_a) = (20.0 * closes_b[k], -4.0 * closes_a[k]);
        let risk = |id: &str| tables.risk.iter().find(|r| r.scope_id == id).unwrap();
        let sigma = (x_a * x_a * va + 2.0 * x_a * x_b * cab + x_b * x_b * vb).sqrt();
        let z = inv_norm_cdf(cfg.var_confidence);
        assert!(close(risk("X").var_parametric.unwrap(), z * sigma * 2.0), "X VaR at {as_of}");
        let z_es = inv_norm_cdf(cfg.es_confidence);
        let es = sigma * 2.0 * norm_pdf(z_es) / (1.0 - cfg.es_confidence);
        assert!(close(risk("X").es_parametric.unwrap(), es));
        // Historical over the last three bars: with so few, VaR and ES are the worst P&L.
        let pnl: Vec<f64> = (0..k).map(|s| x_a * ra[s] + x_b * rb[s]).collect();
        let tail = &pnl[pnl.len().saturating_sub(history)..];
        let worst = tail.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(close(risk("X").var_historical.unwrap(), -worst), "X hist VaR at {as_of}");
        assert_eq!(risk("X").history_bars, tail.len() as u64);
        // The desk is X and Y together.
        let d_a = x_a + y_a;
        let d_sigma = (d_a * d_a * va + 2.0 * d_a * x_b * cab + x_b * x_b * vb).sqrt();
        assert!(close(risk("D").var_parametric.unwrap(), z * d_sigma * 2.0), "desk VaR at {as_of}");
        // Stress: 2008-10-15 moves every equity −9.03%; linear positions lose e·shock.
        let scenario = tables.scenarios.iter().position(|s| s == "2008-10-15").unwrap();
        assert!(close(risk("X").stress[scenario], (x_a + x_b) * -0.0903));
        // X is long: its worst is 2020-03-16 (−11.98%); Y is short equity and loses in none.
        assert!(close(risk("X").stress_worst, (x_a + x_b) * 0.1198));
        assert_eq!(risk("X").worst_scenario.as_deref(), Some("2020-03-16"));
        assert_eq!((risk("Y").stress_worst, risk("Y").worst_scenario.as_deref()), (0.0, None));
    }
}

#[test]
fn one_and_two_workers_give_identical_tables() {
    let mut events = Vec::new();
    let mut seed = 7u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut prices = [100.0, 50.0];
    for i in 0..400u64 {
        let ts = SEC / 2 + i * SEC / 20;
        let which = (next() * 2.0) as usize;
        prices[which] *= 1.0 + (next() - 0.5) * 0.01;
        let name = ["A", "B"][which];
        events.push(tick(ts, name, (prices[which] * 100.0).round() / 100.0));
        if i % 3 == 0 {
            let account = ["X", "Y"][(next() * 2.0) as usize];
            let qty = ((next() - 0.5) * 100.0).round();
            events.push(delta(&format!("d{i}"), ts, account, name, qty));
        }
    }
    let one = run(reference(), events.clone(), config(5, 8), 1, SEC);
    let two = run(reference(), events, config(5, 8), 2, SEC);
    assert_eq!(one.len(), 21);
    assert_eq!(one, two);
}

/// The input ends at a bar end that is not a snapshot boundary (the last record's epoch ends
/// on the second): that bar closes and the closing snapshot is taken at the same time, once,
/// with one worker and with two.
#[test]
fn the_closing_snapshot_at_a_bar_end() {
    let events = vec![
        tick(SEC / 2, "A", 100.0),
        tick(SEC / 2, "B", 50.0),
        delta("d1", SEC / 2, "X", "A", 10.0),
        tick(3 * SEC / 2, "A", 110.0),
        tick(5 * SEC - SEC / 20, "B", 45.0),
    ];
    for workers in [1, 2] {
        let snaps = run(reference(), events.clone(), config(2, 3), workers, 60 * SEC);
        assert_eq!(snaps.iter().map(|s| (s.0, s.1.bar_end)).collect::<Vec<_>>(), vec![(5 * SEC, Some(5 * SEC))]);
        let vol = |name: &str| snaps[0].1.volatility.iter().find(|v| v.factor == name).unwrap().clone();
        // Bars with a tick close at 1, 2 and 5 s (A 100, 110, 110; B 50, 50, 45): two returns
        // each, the last at the bar the input ends on.
        assert_eq!((vol("A").close, vol("A").returns, vol("B").close, vol("B").returns), (110.0, 2, 45.0, 2));
    }
}

/// A factor model with two factors and some bars of returns.
fn model(moves: &[(f64, f64)]) -> FactorModel {
    let mut m = FactorModel::new(0.94, 250, 250);
    let (mut a, mut b) = (100.0, 50.0);
    m.close_bar(0, [("A".to_string(), a), ("B".to_string(), b)]);
    for (k, (da, db)) in moves.iter().enumerate() {
        a *= 1.0 + da;
        b *= 1.0 + db;
        m.close_bar(k as u64 + 1, [("A".to_string(), a), ("B".to_string(), b)]);
    }
    m
}

fn positions(x: (f64, f64), y: (f64, f64)) -> Positions {
    let mut p = Positions::default();
    for (id, price) in [("A", 100.0), ("B", 50.0)] {
        p.define_instrument(Instrument::equity(id, "USD"));
        p.set_price(id, f(price), None);
    }
    p.set_rate(Ccy::USD, 1.0);
    for (acct, (qa, qb)) in [("X", x), ("Y", y)] {
        p.define_account(Account { id: acct.into(), desk: "D".into(), firm: None });
        for (inst, q) in [("A", qa), ("B", qb)] {
            if q != 0.0 {
                p.add_qty(acct, inst, f(q));
            }
        }
    }
    p
}

proptest! {
    #[test]
    fn parametric_var_is_linear_and_subadditive(
        moves in prop::collection::vec((-0.05f64..0.05, -0.05f64..0.05), 2..30),
        qx in (-1000i32..1000, -1000i32..1000),
        qy in (-1000i32..1000, -1000i32..1000),
        k in 1i32..20,
    ) {
        let mut m = model(&moves);
        let c = AnalyticsConfig::default();
        let mut var = |p: &Positions, id: &str| {
            p.risk(0, Ccy::USD, 0.0, &c, &mut m, &|_, _| true)
                .into_iter()
                .find(|r| r.scope_id == id)
                .and_then(|r| r.var_parametric)
                .unwrap_or(0.0)
        };
        let (x, y) = ((qx.0 as f64, qx.1 as f64), (qy.0 as f64, qy.1 as f64));
        let base = positions(x, y);
        let scaled = positions((x.0 * k as f64, x.1 * k as f64), y);
        let (vx, vy, vd) = (var(&base, "X"), var(&base, "Y"), var(&base, "D"));
        let tol = 1e-9 * (vx + vy).max(1.0);
        prop_assert!((var(&scaled, "X") - k as f64 * vx).abs() <= tol * k as f64);
        prop_assert!(vd <= vx + vy + tol, "desk {vd} > {vx} + {vy}");
    }
}

/// Equity A in EUR and a future on A in USD: factor A is held in two currencies, its legs
/// met apart (B's between them), and each scope's exposure to A is their sum in the base
/// currency, once.
#[test]
fn a_factor_held_in_two_currencies_is_one_exposure() {
    let mut m = model(&[(0.01, -0.02), (-0.03, 0.01), (0.02, 0.02), (0.01, -0.01)]);
    let mut p = Positions::default();
    p.set_rate(Ccy::USD, 1.0);
    p.set_rate(Ccy::parse("EUR").unwrap(), 1.25);
    let mut future = Instrument::equity("ZF", "USD");
    (future.asset_class, future.underlying, future.multiplier) = (AssetClass::Future, Some("A".into()), f(10.0));
    for (def, price) in
        [(Instrument::equity("A", "EUR"), 100.0), (Instrument::equity("B", "USD"), 50.0), (future, 80.0)]
    {
        p.set_price(&def.id.clone(), f(price), None);
        p.define_instrument(def);
    }
    for (acct, held) in [("X", [("A", 10.0), ("B", 20.0), ("ZF", 3.0)]), ("Y", [("A", -4.0), ("B", 0.0), ("ZF", 5.0)])]
    {
        p.define_account(Account { id: acct.into(), desk: "D".into(), firm: None });
        held.iter().filter(|(_, q)| *q != 0.0).for_each(|(i, q)| p.add_qty(acct, i, f(*q)));
    }
    let c = AnalyticsConfig::default();
    let rows = p.risk(0, Ccy::USD, 0.0, &c, &mut m, &|_, _| true);
    let (va, vb, cab) = (m.cov(0, 0).unwrap(), m.cov(1, 1).unwrap(), m.cov(0, 1).unwrap());
    // (e_A, e_B) in USD: A's EUR leg at 1.25, the future's q·m·P in USD.
    for (id, e_a, e_b) in [("X", 10.0 * 100.0 * 1.25 + 3.0 * 10.0 * 80.0, 20.0 * 50.0), ("Y", -500.0 + 4000.0, 0.0)] {
        let sigma = (e_a * e_a * va + 2.0 * e_a * e_b * cab + e_b * e_b * vb).sqrt();
        let row = rows.iter().find(|r| r.scope_id == id).unwrap();
        let expected = inv_norm_cdf(c.var_confidence) * sigma * c.horizon_bars.sqrt();
        assert!(close(row.var_parametric.unwrap(), expected), "{id}: {:?} against {expected}", row.var_parametric);
    }
    let (e_a, e_b) = (1250.0 + 2400.0 - 500.0 + 4000.0, 1000.0);
    let sigma = (e_a * e_a * va + 2.0 * e_a * e_b * cab + e_b * e_b * vb).sqrt();
    let desk = rows.iter().find(|r| r.scope_id == "D").unwrap();
    assert!(close(desk.var_parametric.unwrap(), inv_norm_cdf(c.var_confidence) * sigma * c.horizon_bars.sqrt()));
}

/// (account, instrument, quantity).
type Held = (String, String, i64);

/// Equities in USD and EUR, a EUR/USD pair and calls on two equities; 40 accounts in four
/// desks holding seeded quantities of very different sizes, so floating-point sums depend on
/// the order they run in.
fn mixed_book() -> (Vec<Instrument>, Vec<Account>, Vec<Held>) {
    let mut instruments: Vec<Instrument> =
        (0..30).map(|i| Instrument::equity(format!("E{i:02}"), if i % 5 == 0 { "EUR" } else { "USD" })).collect();
    let mut pair = Instrument::equity("EURUSD", "USD");
    (pair.asset_class, pair.base, pair.quote) = (AssetClass::Fx, Some("EUR".into()), Some("USD".into()));
    instruments.push(pair);
    for u in ["E03", "E07"] {
        let mut call = Instrument::equity(format!("C{u}"), "USD");
        call.asset_class = AssetClass::Option;
        (call.underlying, call.strike, call.expiry) = (Some(u.into()), Some(f(100.0)), Date::parse("2027-06-18"));
        (call.option_type, call.multiplier) = (Some(OptionType::Call), Fixed::from_int(100));
        instruments.push(call);
    }
    let accounts =
        (0..40).map(|a| Account { id: format!("A{a:02}"), desk: format!("D{}", a % 4), firm: None }).collect();
    let mut x = 11u64;
    let mut next = |n: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let mut held = Vec::new();
    for a in 0..40 {
        for _ in 0..8 {
            let i = next(instruments.len() as u64) as usize;
            let qty = (next(2001) as i64 - 1000) * 10i64.pow(next(6) as u32);
            held.push((format!("A{a:02}"), instruments[i].id.clone(), qty));
        }
    }
    (instruments, accounts, held)
}

#[test]
fn risk_rows_do_not_depend_on_the_order_of_the_parts() {
    let (instruments, accounts, held) = mixed_book();
    let mut closes: Vec<(String, f64)> = instruments.iter().take(30).map(|i| (i.id.clone(), 100.0)).collect();
    closes.push(("FX:EUR".into(), 1.1));
    let mut m = FactorModel::new(0.9, 5, 10);
    for t in 0..6u64 {
        for (k, c) in closes.iter_mut().enumerate() {
            c.1 *= 1.0 + (((t * 31 + k as u64 * 17) % 21) as f64 - 10.0) / 1000.0;
        }
        m.close_bar(t, closes.clone());
    }
    let mut build = |reversed: bool| {
        let mut p = Positions::default();
        let (mut defs, mut accts, mut parts) = (instruments.clone(), accounts.clone(), held.clone());
        if reversed {
            defs.reverse();
            accts.reverse();
            // Each quantity in two parts, and a position opened and closed again.
            parts = parts.into_iter().rev().flat_map(|(a, i, q)| [(a.clone(), i.clone(), q - 7), (a, i, 7)]).collect();
            parts.push(("A00".into(), "E01".into(), 5));
            parts.push(("A00".into(), "E01".into(), -5));
        }
        p.set_rate(Ccy::USD, 1.0);
        p.set_rate(Ccy::parse("EUR").unwrap(), 1.1);
        for (a, i, q) in parts {
            p.add_qty(&a, &i, Fixed::from_int(q));
        }
        for def in defs {
            let (id, price) = (def.id.clone(), if def.asset_class == AssetClass::Fx { 1.1 } else { 100.0 });
            p.set_price(&id, f(price), (def.asset_class == AssetClass::Option).then_some(0.25));
            p.define_instrument(def);
        }
        accts.into_iter().for_each(|a| p.define_account(a));
        p.risk(0, Ccy::USD, 0.01, &AnalyticsConfig::default(), &mut m, &|_, _| true)
    };
    let (forward, reversed) = (build(false), build(true));
    assert_eq!(forward.len(), 40 + 4 + 1);
    assert!(forward.iter().all(|r| r.var_parametric.is_some() && r.stress.iter().any(|s| *s != 0.0)));
    assert_eq!(forward, reversed);
}
