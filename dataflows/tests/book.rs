//! The book against a plain sequential computation: at every snapshot time, positions and
//! exposure aggregates from the dataflow equal those recomputed in batch from the raw events,
//! on seeded random inputs with retractions and duplicates, with one and two workers.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use riskflow_dataflows::book::{book, BookConfig, BookStats};
use riskflow_dataflows::event::{DeadLetter, Envelope, Event, Origin};
use riskflow_dataflows::exposure::{position_exposure, BaseSums, Ccy, OptionMarket, Sums, NANOS};
use riskflow_dataflows::formulas::rate_from_pair;
use riskflow_dataflows::model::*;
use riskflow_dataflows::snapshot::{assemble_snapshots, Dim, ExposureRow, FactorRow, Snapshot};
use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};

const INTERVAL: Ts = 1_000;

fn f(x: f64) -> Fixed {
    Fixed::from_f64(x).unwrap()
}

fn instruments() -> Vec<Instrument> {
    let j = |s: &str| serde_json::from_str::<Instrument>(s).unwrap();
    vec![
        j(r#"{"id":"AAPL","asset_class":"equity","currency":"USD","multiplier":1}"#),
        j(r#"{"id":"SAP","asset_class":"equity","currency":"EUR","multiplier":1}"#),
        j(r#"{"id":"TM","asset_class":"equity","currency":"JPY","multiplier":1}"#),
        j(r#"{"id":"IDX","asset_class":"equity","currency":"USD","multiplier":1,"sector":"index"}"#),
        j(r#"{"id":"IDXF","asset_class":"future","currency":"USD","multiplier":50,"underlying":"IDX"}"#),
        j(
            r#"{"id":"IDXC","asset_class":"option","currency":"USD","multiplier":100,"underlying":"IDX","strike":100,"expiry":"1970-03-01","option_type":"call"}"#,
        ),
        j(
            r#"{"id":"IDXP","asset_class":"option","currency":"USD","multiplier":100,"underlying":"IDX","strike":95,"expiry":"1970-02-01","option_type":"put"}"#,
        ),
        j(r#"{"id":"EURUSD","asset_class":"fx","currency":"USD","multiplier":1,"base":"EUR","quote":"USD"}"#),
        j(r#"{"id":"USDJPY","asset_class":"fx","currency":"JPY","multiplier":1,"base":"USD","quote":"JPY"}"#),
        j(r#"{"id":"EURJPY","asset_class":"fx","currency":"JPY","multiplier":1,"base":"EUR","quote":"JPY"}"#),
    ]
}

fn accounts() -> Vec<Account> {
    (0..6).map(|i| Account { id: format!("A{i}"), desk: format!("D{}", i % 3), firm: None }).collect()
}

/// Seeded ticks and deltas in non-decreasing event time: prices walk, positions open, grow,
/// shrink and close exactly; some deltas are redelivered.
fn random_events(seed: u64, n: usize) -> Vec<Event> {
    random_events_spaced(seed, n, 40)
}

/// `n` random ticks and deltas (some redelivered), event times `0..max_gap` apart.
fn random_events_spaced(seed: u64, n: usize, max_gap: Ts) -> Vec<Event> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let insts = instruments();
    let accts = accounts();
    let mut prices: Vec<f64> = vec![150.0, 80.0, 2500.0, 100.0, 100.0, 5.0, 3.0, 1.1, 150.0, 165.0];
    let mut events = Vec::new();
    let mut ts: Ts = 1;
    // Every instrument priced first, at ts 1.
    for (i, inst) in insts.iter().enumerate() {
        let iv = (inst.asset_class == AssetClass::Option).then_some(0.25);
        events.push(Event::Tick(Tick {
            ts,
            instrument: inst.id.clone(),
            price: f(prices[i]),
            bid: None,
            ask: None,
            iv,
        }));
    }
    let mut positions: HashMap<(usize, usize), i64> = HashMap::new();
    let mut deltas: Vec<Delta> = Vec::new();
    for _ in 0..n {
        ts += rng.random_range(0..max_gap);
        let roll: f64 = rng.random();
        if roll < 0.3 {
            let i = rng.random_range(0..insts.len());
            prices[i] = ((prices[i] * (1.0 + rng.random_range(-0.02..0.02))) * 1e4).round() / 1e4;
            let iv = (insts[i].asset_class == AssetClass::Option).then(|| rng.random_range(0.1..0.6));
            events.push(Event::Tick(Tick {
                ts,
                instrument: insts[i].id.clone(),
                price: f(prices[i]),
                bid: None,
                ask: None,
                iv,
            }));
        } else if roll < 0.35 && !deltas.is_empty() {
            let dup = deltas[rng.random_range(0..deltas.len())].clone();
            events.push(Event::Delta(Delta { ts, ..dup }));
        } else {
            let a = rng.random_range(0..accts.len());
            let i = rng.random_range(0..insts.len());
            let held = positions.entry((a, i)).or_default();
            let qty = if *held != 0 && rng.random_bool(0.2) {
                -*held
            } else {
                rng.random_range(-500..500) * 100_000_000 / if rng.random_bool(0.3) { 1000 } else { 1 }
            };
            *held += qty;
            let d = Delta {
                id: format!("F-{}", deltas.len()),
                ts,
                account: accts[a].id.clone(),
                instrument: insts[i].id.clone(),
                qty: Fixed(qty),
            };
            deltas.push(d.clone());
            events.push(Event::Delta(d));
        }
    }
    events
}

struct Output {
    snapshots: Vec<Snapshot>,
    dead: Vec<DeadLetter>,
    stats: BookStats,
}

/// Runs the book on `workers` workers: worker 0 feeds the reference data at time 0, then the
/// events at their event time (a record behind the current time is sent at it, as late).
fn run_book(reference: Vec<Event>, events: Vec<(Ts, Event)>, workers: usize) -> Output {
    let config = BookConfig { snapshot_interval: INTERVAL, bar_interval: INTERVAL, base_ccy: Ccy::USD, rate: 0.01 };
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let mut input = InputHandleVec::<Ts, Envelope>::new();
        let snaps = Rc::new(RefCell::new(Vec::new()));
        let dead = Rc::new(RefCell::new(Vec::new()));
        let stats = Rc::new(RefCell::new(BookStats::default()));
        let (s2, d2) = (snaps.clone(), dead.clone());
        worker.dataflow::<Ts, _, _>(|scope| {
            let streams = book(input.to_stream(scope), config.clone(), stats.clone());
            assemble_snapshots(streams.snapshots).inspect(move |s| s2.borrow_mut().push(s.clone()));
            streams.dead.inspect(move |d| d2.borrow_mut().push(d.clone()));
        });
        if worker.index() == 0 {
            let env = |event| Envelope { event, origin: Origin::Engine, ingest_ns: 0 };
            for e in reference.iter().cloned() {
                input.send(env(e));
            }
            let mut max_ts = 0;
            for (time, e) in events.iter().cloned() {
                max_ts = max_ts.max(e.ts().unwrap_or(0));
                if time > *input.time() {
                    input.advance_to(time);
                }
                input.send(env(e));
                worker.step();
            }
            input.send(env(Event::End { max_ts }));
        }
        drop(input);
        while worker.step() {}
        let out = (snaps.take(), dead.take(), stats.borrow().clone());
        out
    })
    .unwrap();
    let mut output = Output { snapshots: Vec::new(), dead: Vec::new(), stats: BookStats::default() };
    for r in guards.join() {
        let (s, d, st) = r.unwrap();
        output.snapshots.extend(s);
        output.dead.extend(d);
        output.stats.duplicates += st.duplicates;
        output.stats.deltas_applied += st.deltas_applied;
    }
    output.snapshots.sort_by_key(|s| s.as_of);
    output
}

fn reference() -> Vec<Event> {
    let mut r: Vec<Event> = instruments().into_iter().map(Event::Instrument).collect();
    r.extend(accounts().into_iter().map(Event::Account));
    r
}

/// The batch computation: straight from the events, at `as_of`.
fn batch(events: &[Event], as_of: Ts) -> Snapshot {
    let insts: BTreeMap<String, Instrument> = instruments().into_iter().map(|i| (i.id.clone(), i)).collect();
    let accts: BTreeMap<String, Account> = accounts().into_iter().map(|a| (a.id.clone(), a)).collect();
    let mut seen = HashSet::new();
    let mut qty: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut last: HashMap<String, (Ts, Fixed, Option<f64>)> = HashMap::new();
    for e in events {
        match e {
            Event::Delta(d) if d.ts <= as_of && seen.insert(d.id.clone()) => {
                *qty.entry((d.account.clone(), d.instrument.clone())).or_default() += d.qty.0;
            }
            Event::Tick(t) if t.ts <= as_of => {
                let entry = last.entry(t.instrument.clone()).or_insert((t.ts, t.price, t.iv));
                if t.ts >= entry.0 {
                    *entry = (t.ts, t.price, t.iv.or(entry.2));
                }
            }
            _ => {}
        }
    }
    let rate = |c: &str| -> f64 {
        match c {
            "USD" => 1.0,
            "EUR" => rate_from_pair("EUR", "USD", last["EURUSD"].1.to_f64(), "EUR", "USD").unwrap(),
            "JPY" => rate_from_pair("USD", "JPY", last["USDJPY"].1.to_f64(), "JPY", "USD").unwrap(),
            _ => unreachable!(),
        }
    };
    let mut nanos: BTreeMap<(Scope, String, Dim, String, String), Sums> = BTreeMap::new();
    for ((a, i), q) in &qty {
        if *q == 0 {
            continue;
        }
        let inst = &insts[i];
        let acct = &accts[a];
        let option = inst
            .underlying
            .as_ref()
            .filter(|_| inst.asset_class == AssetClass::Option)
            .map(|u| OptionMarket { spot: last[u].1, vol: last[i].2.unwrap() });
        let e = position_exposure(inst, Fixed(*q), last[i].1, option, as_of, 0.01).unwrap();
        let d = e.delta.ccy.to_string();
        for (scope, id) in [(Scope::Account, a.clone()), (Scope::Desk, acct.desk.clone()), (Scope::Firm, "FIRM".into())]
        {
            let mut add = |dim, bucket: String, ccy: &str, s: Sums| {
                nanos.entry((scope, id.clone(), dim, bucket, ccy.to_owned())).or_default().add(&s);
            };
            let s = Sums::of_exposure(&e);
            add(Dim::Total, String::new(), &d, s);
            add(Dim::AssetClass, inst.asset_class.as_str().into(), &d, s);
            add(Dim::Underlying, inst.underlying_id().into(), &d, s);
            add(Dim::Currency, d.clone(), &d, s);
            if inst.asset_class != AssetClass::Fx {
                add(Dim::Factor, inst.underlying_id().into(), &d, s);
            } else if d != "USD" {
                add(Dim::Factor, format!("FX:{d}"), &d, s);
            }
            if let Some(q) = e.quote {
                let qc = q.ccy.to_string();
                add(Dim::Currency, qc.clone(), &qc, Sums::of_leg(q.nanos, 0, 0));
                if qc != "USD" {
                    add(Dim::Factor, format!("FX:{qc}"), &qc, Sums::of_leg(q.nanos, 0, 0));
                }
            }
        }
    }
    let mut buckets: BTreeMap<(Scope, String, Dim, String), BaseSums> = BTreeMap::new();
    for ((scope, id, dim, bucket, ccy), s) in nanos {
        buckets.entry((scope, id, dim, bucket)).or_default().add(&s.to_base(rate(&ccy)));
    }
    let mut exposures = Vec::new();
    let mut factors = Vec::new();
    for ((scope, scope_id, dim, bucket), sums) in &buckets {
        if *dim == Dim::Factor {
            factors.push(FactorRow {
                scope: *scope,
                scope_id: scope_id.as_str().into(),
                factor: bucket.as_str().into(),
                exposure: sums.net,
            });
            continue;
        }
        let concentration = (*dim == Dim::Total && sums.gross > 0.0).then(|| {
            let max = buckets
                .iter()
                .filter(|((s, i, d, _), _)| s == scope && i == scope_id && *d == Dim::Underlying)
                .map(|(_, b)| b.net.abs())
                .fold(0.0, f64::max);
            max / sums.gross
        });
        exposures.push(ExposureRow {
            scope: *scope,
            scope_id: scope_id.as_str().into(),
            dim: *dim,
            bucket: bucket.as_str().into(),
            sums: *sums,
            concentration,
        });
    }
    Snapshot { as_of, exposures, factors, ..Snapshot::default() }
}

fn check_against_batch(events: &[Event], out: &Output) {
    assert!(out.snapshots.len() > 20, "only {} snapshots", out.snapshots.len());
    let end = events.iter().filter_map(Event::ts).max().unwrap();
    assert_eq!(out.snapshots.last().unwrap().as_of, end, "closing snapshot at the last event time");
    for snap in &out.snapshots {
        let expected = batch(events, snap.as_of);
        assert_eq!(snap.exposures, expected.exposures, "exposures at {}", snap.as_of);
        assert_eq!(snap.factors, expected.factors, "factor exposures at {}", snap.as_of);
        // Positions: one row per non-zero (account, instrument), with the batch's qty.
        let firm = expected.exposure(Scope::Firm, "FIRM", Dim::Total, "").map_or(0, |r| r.sums.positions);
        assert_eq!(snap.positions.len() as i64, firm, "position rows at {}", snap.as_of);
        let sum: f64 = snap.positions.iter().filter_map(|p| p.exposure).sum();
        let net = expected.exposure(Scope::Firm, "FIRM", Dim::Total, "").map_or(0.0, |r| r.sums.net);
        assert!((sum - net).abs() <= 1e-6 * (1.0 + net.abs()), "row sum {sum} vs net {net}");
    }
}

#[test]
fn incremental_equals_batch_on_random_inputs() {
    for seed in [1, 2, 3] {
        let events = random_events(seed, 1500);
        let timed: Vec<(Ts, Event)> = events.iter().map(|e| (e.ts().unwrap(), e.clone())).collect();
        let out = run_book(reference(), timed, 1);
        assert!(out.stats.duplicates > 0, "the input has redeliveries");
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        check_against_batch(&events, &out);
    }
}

/// Epochs of ~1,000 records, as a replay or a Kafka source under load delivers them: the
/// settled state reaches each snapshot boundary from a large stash.
#[test]
fn incremental_equals_batch_when_an_epoch_holds_many_records() {
    let events = random_events_spaced(4, 25_000, 3);
    let timed: Vec<(Ts, Event)> =
        events.iter().map(|e| (e.ts().unwrap().div_ceil(INTERVAL) * INTERVAL, e.clone())).collect();
    for workers in [1, 2] {
        let out = run_book(reference(), timed.clone(), workers);
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        check_against_batch(&events, &out);
    }
}

#[test]
fn two_workers_give_the_same_snapshots_as_one() {
    let events = random_events(7, 1500);
    let timed: Vec<(Ts, Event)> = events.iter().map(|e| (e.ts().unwrap(), e.clone())).collect();
    let one = run_book(reference(), timed.clone(), 1);
    let two = run_book(reference(), timed, 2);
    assert_eq!(one.snapshots, two.snapshots);
    assert_eq!(one.stats.duplicates, two.stats.duplicates);
    check_against_batch(&events, &two);
}

#[test]
fn a_closed_position_retracts_to_exactly_zero() {
    let d = |id: &str, ts, qty| {
        Event::Delta(Delta { id: id.into(), ts, account: "A0".into(), instrument: "SAP".into(), qty: f(qty) })
    };
    let t = |ts, p| Event::Tick(Tick { ts, instrument: "SAP".into(), price: f(p), bid: None, ask: None, iv: None });
    let fx = Event::Tick(Tick { ts: 1, instrument: "EURUSD".into(), price: f(1.1), bid: None, ask: None, iv: None });
    let events = [
        fx,
        t(1, 80.01),
        d("a", 10, 0.1),
        d("b", 20, 0.2),
        t(1500, 80.03),
        d("c", 1600, -0.3),
        d("b", 1700, 0.2),
        t(2500, 81.0),
    ];
    let timed: Vec<(Ts, Event)> = events.iter().map(|e| (e.ts().unwrap(), e.clone())).collect();
    let out = run_book(reference(), timed, 1);
    let at = |as_of| out.snapshots.iter().find(|s| s.as_of == as_of).unwrap();
    let firm = |s: &Snapshot| s.exposure(Scope::Firm, "FIRM", Dim::Total, "").cloned();
    // At 1000: 0.3 SAP at 80.01 EUR, EURUSD 1.1.
    let s1 = firm(at(1000)).unwrap();
    assert_eq!(s1.sums.net, 24_003_000_000f64 / NANOS * 1.1, "0.3 × 80.01 EUR at 1.1");
    assert_eq!(at(1000).positions[0].qty, f(0.3));
    // 0.1 + 0.2 − 0.3 is exactly zero in fixed point: no position, no aggregate row left.
    assert_eq!(at(2000).positions, vec![]);
    assert_eq!(firm(at(2000)), None);
    assert_eq!(out.stats.duplicates, 1);
    assert_eq!(out.snapshots.last().unwrap().as_of, 2500);
    assert_eq!(s1.sums.gross, s1.sums.net);
}

#[test]
fn records_for_late_reference_data_are_held_then_applied() {
    let late =
        serde_json::from_str::<Instrument>(r#"{"id":"NEW","asset_class":"equity","currency":"USD","multiplier":1}"#)
            .unwrap();
    let events = vec![
        (
            5,
            Event::Delta(Delta { id: "x".into(), ts: 5, account: "A1".into(), instrument: "NEW".into(), qty: f(10.0) }),
        ),
        (6, Event::Tick(Tick { ts: 6, instrument: "NEW".into(), price: f(12.5), bid: None, ask: None, iv: None })),
        (
            7,
            Event::Delta(Delta {
                id: "y".into(),
                ts: 7,
                account: "NOBODY".into(),
                instrument: "AAPL".into(),
                qty: f(1.0),
            }),
        ),
        (8, Event::Tick(Tick { ts: 8, instrument: "AAPL".into(), price: f(100.0), bid: None, ask: None, iv: None })),
        (1500, Event::Instrument(late)),
        (
            2100,
            Event::Tick(Tick { ts: 2100, instrument: "AAPL".into(), price: f(101.0), bid: None, ask: None, iv: None }),
        ),
    ];
    let out = run_book(reference(), events, 1);
    let at = |as_of| out.snapshots.iter().find(|s| s.as_of == as_of).unwrap();
    assert!(at(1000).positions.is_empty(), "nothing known yet at 1000");
    let row = &at(2000).positions[0];
    assert_eq!((&*row.account, &*row.instrument, row.qty, row.price), ("A1", "NEW", f(10.0), Some(f(12.5))));
    assert_eq!(row.exposure, Some(125.0));
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0].reason, "unknown account NOBODY");
    assert!(out.dead[0].payload.contains("\"id\":\"y\""), "{}", out.dead[0].payload);
}

/// Two sources: worker 1 sends a tick and a later delta for an account that worker 0 defines
/// only after the delta is held. The delta must be applied at its own time (after the first
/// boundary), not at the earlier time of the account's definition.
#[test]
fn a_reference_at_an_earlier_time_does_not_pull_a_held_record_into_an_earlier_snapshot() {
    // An account routed to worker 0 of 2 (deltas are exchanged by this hash).
    let account =
        (0..).map(|i| format!("OWN{i}")).find(|a| riskflow_dataflows::route_hash(a).is_multiple_of(2)).unwrap();
    let config = BookConfig { snapshot_interval: INTERVAL, bar_interval: INTERVAL, base_ccy: Ccy::USD, rate: 0.0 };
    let guards = timely::execute(timely::Config::process(2), move |worker| {
        let mut input = InputHandleVec::<Ts, Envelope>::new();
        let snaps = Rc::new(RefCell::new(Vec::new()));
        let stats = Rc::new(RefCell::new(BookStats::default()));
        let s2 = snaps.clone();
        worker.dataflow::<Ts, _, _>(|scope| {
            let streams = book(input.to_stream(scope), config.clone(), stats.clone());
            assemble_snapshots(streams.snapshots).inspect(move |s| s2.borrow_mut().push(s.clone()));
        });
        let env = |event| Envelope { event, origin: Origin::Engine, ingest_ns: 0 };
        if worker.index() == 1 {
            input.send(env(Event::Instrument(instruments()[0].clone())));
            input.advance_to(500);
            let t = Tick { ts: 500, instrument: "AAPL".into(), price: f(100.0), bid: None, ask: None, iv: None };
            input.send(env(Event::Tick(t)));
            input.advance_to(1500);
            let d =
                Delta { id: "late".into(), ts: 1500, account: account.clone(), instrument: "AAPL".into(), qty: f(7.0) };
            input.send(env(Event::Delta(d)));
            input.send(env(Event::End { max_ts: 2500 }));
        } else {
            // Hold input time 0 until the delta is held here, then define the account at time 0.
            while stats.borrow().held == 0 {
                worker.step();
            }
            input.send(env(Event::Account(Account { id: account.clone(), desk: "D".into(), firm: None })));
        }
        drop(input);
        while worker.step() {}
        snaps.take()
    })
    .unwrap();
    let snapshots: Vec<Snapshot> = guards.join().into_iter().flat_map(|r| r.unwrap()).collect();
    let at = |as_of| snapshots.iter().find(|s| s.as_of == as_of).unwrap_or_else(|| panic!("no snapshot at {as_of}"));
    assert!(at(1000).positions.is_empty(), "the delta at 1500 is not in the snapshot at 1000");
    assert_eq!(at(2000).positions.len(), 1);
    assert_eq!(at(2000).positions[0].qty, f(7.0));
}

/// A snapshot and a bar leave the book once the frontier has passed their boundary and the
/// records up to it are settled, while input still flows: neither the messages nor the
/// outputs' frontiers (which the analytics, limits and snapshot writer wait on) are held back
/// until the input ends.
#[test]
fn snapshots_and_bars_are_released_while_the_input_is_still_open() {
    let events = random_events(5, 600);
    let last = events.iter().filter_map(Event::ts).max().unwrap();
    let config = BookConfig { snapshot_interval: INTERVAL, bar_interval: INTERVAL, base_ccy: Ccy::USD, rate: 0.01 };
    let seen_before_end = timely::execute(timely::Config::process(1), move |worker| {
        let mut input = InputHandleVec::<Ts, Envelope>::new();
        let snaps = Rc::new(RefCell::new(Vec::new()));
        let s2 = snaps.clone();
        let stats = Rc::new(RefCell::new(BookStats::default()));
        let (snap_probe, bars_probe) = (ProbeHandle::new(), ProbeHandle::new());
        worker.dataflow::<Ts, _, _>(|scope| {
            let streams = book(input.to_stream(scope), config.clone(), stats);
            streams.bars.probe_with(&bars_probe);
            assemble_snapshots(streams.snapshots)
                .inspect(move |s| s2.borrow_mut().push(s.as_of))
                .probe_with(&snap_probe);
        });
        let env = |event| Envelope { event, origin: Origin::Engine, ingest_ns: 0 };
        for e in reference() {
            input.send(env(e));
        }
        for e in &events {
            let time = e.ts().unwrap().div_ceil(INTERVAL) * INTERVAL;
            if time > *input.time() {
                input.advance_to(time);
            }
            input.send(env(e.clone()));
            worker.step();
        }
        // The input stays open, at a time past the first boundary.
        input.advance_to(*input.time() + 1);
        for _ in 0..10_000 {
            worker.step();
        }
        let seen = snaps.borrow().clone();
        let past_first = |p: &ProbeHandle<Ts>| !p.less_equal(&INTERVAL);
        let released = (past_first(&snap_probe), past_first(&bars_probe));
        drop(input);
        while worker.step() {}
        (seen, released)
    })
    .unwrap()
    .join()
    .remove(0)
    .unwrap();
    let (seen_before_end, (snapshots_released, bars_released)) = seen_before_end;
    assert!(snapshots_released, "the snapshot output's frontier is held at the first boundary");
    assert!(bars_released, "the bar output's frontier is held at the first boundary");
    assert!(last > 2 * INTERVAL, "the input spans several boundaries");
    assert!(seen_before_end.contains(&INTERVAL), "first snapshot still held back: {seen_before_end:?}");
}

/// The book's bar output promises no time before its next boundary once the frontier has
/// passed the latest one before it, also before its first bar end (the limits wait on this
/// frontier for a bar end's figures: held at 0 until then, they kept every change of the
/// first bar waiting).
#[test]
fn the_bars_frontier_passes_the_boundary_before_the_input() {
    timely::execute(timely::Config::thread(), |worker| {
        let mut input = InputHandleVec::<Ts, Envelope>::new();
        let bars = ProbeHandle::new();
        worker.dataflow::<Ts, _, _>(|scope| {
            let config = BookConfig { snapshot_interval: 1_000_000, bar_interval: 1000, base_ccy: Ccy::USD, rate: 0.0 };
            let b = book(input.to_stream(scope), config, Rc::new(RefCell::new(BookStats::default())));
            b.bars.probe_with(&bars);
        });
        // One thread, no other source of progress: a few steps settle the frontier.
        let frontier = |worker: &mut timely::worker::Worker| {
            for _ in 0..10 {
                worker.step();
            }
            bars.with_frontier(|f| f.to_vec())
        };
        let instrument = Instrument::equity("AAPL", "USD");
        input.send(Envelope { event: Event::Instrument(instrument), origin: Origin::Engine, ingest_ns: 0 });
        input.advance_to(5500);
        let tick = Tick {
            ts: 5500,
            instrument: "AAPL".into(),
            price: Fixed::from_f64(10.0).unwrap(),
            bid: None,
            ask: None,
            iv: None,
        };
        input.send(Envelope { event: Event::Tick(tick), origin: Origin::Engine, ingest_ns: 0 });
        // No boundary yet: the first is 6000; the latest before the input's time is 5000.
        assert_eq!(frontier(worker), vec![5001]);
        input.advance_to(6500);
        // 6000 is taken; the next is 7000.
        assert_eq!(frontier(worker), vec![6001]);
        input.send(Envelope { event: Event::End { max_ts: 6500 }, origin: Origin::Engine, ingest_ns: 0 });
    })
    .unwrap();
}

/// A bar with thousands of settled changes sends them to the analytics ahead of its end, a
/// slice at a time at the frontier's last time, and the rest at the end: per position, the quantities of all the
/// parts up to each bar end add up to the net of the deltas up to it, and each instrument's
/// last price is its last tick.
#[test]
fn a_bars_changes_go_ahead_of_its_end_and_add_up_to_the_settled_book() {
    use riskflow_dataflows::analytics::BarPart;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::generic::Operator;
    const BAR: Ts = 1000;
    let accounts = 6000;
    let mut events = Vec::new();
    let mut rng = SmallRng::seed_from_u64(21);
    // Two bars of nine epochs each: each epoch a tick of every instrument and 1,000 deltas to
    // accounts in turn, so each bar changes every account's AAPL position at least once.
    for epoch in 1..20u64 {
        let time = epoch * BAR / 10;
        if time.is_multiple_of(BAR) {
            continue;
        }
        for (k, inst) in ["AAPL", "SAP"].into_iter().enumerate() {
            let price = f(100.0 + k as f64 + rng.random_range(0..100) as f64 / 100.0);
            events.push(Event::Tick(Tick { ts: time, instrument: inst.into(), price, bid: None, ask: None, iv: None }));
        }
        for j in 0..1000u64 {
            let a = ((epoch * 1000 + j) % accounts) as usize;
            let qty = f(rng.random_range(-50..50) as f64);
            let instrument = if j % 7 == 0 { "SAP" } else { "AAPL" };
            let id = format!("d{epoch}-{j}");
            events.push(Event::Delta(Delta {
                id,
                ts: time,
                account: format!("A{a}"),
                instrument: instrument.into(),
                qty,
            }));
        }
    }
    let reference: Vec<Event> = (instruments().into_iter().take(2).map(Event::Instrument))
        .chain((0..accounts).map(|a| Event::Account(Account { id: format!("A{a}"), desk: "D".into(), firm: None })))
        .collect();
    let input_events = events.clone();
    let parts = timely::execute(timely::Config::thread(), move |worker| {
        let mut input = InputHandleVec::<Ts, Envelope>::new();
        let parts = Rc::new(RefCell::new(Vec::new()));
        let p = parts.clone();
        worker.dataflow::<Ts, _, _>(|scope| {
            let config = BookConfig { snapshot_interval: 1_000_000, bar_interval: BAR, base_ccy: Ccy::USD, rate: 0.0 };
            let b = book(input.to_stream(scope), config, Rc::new(RefCell::new(BookStats::default())));
            b.bars.sink(Pipeline, "Collect", move |(input, _)| {
                input.for_each(|cap, data| {
                    let time = *cap.least().expect("a time");
                    p.borrow_mut().extend(data.drain(..).map(|part| (time, part)));
                })
            });
        });
        let env = |event| Envelope { event, origin: Origin::Engine, ingest_ns: 0 };
        reference.iter().cloned().for_each(|e| input.send(env(e)));
        for e in input_events.iter().cloned() {
            let time = e.ts().unwrap();
            if time > *input.time() {
                input.advance_to(time);
                for _ in 0..20 {
                    worker.step();
                }
            }
            input.send(env(e));
        }
        input.send(env(Event::End { max_ts: 19 * BAR / 10 }));
        drop(input);
        while worker.step() {}
        parts.take()
    })
    .unwrap()
    .join()
    .remove(0)
    .unwrap();

    let boundaries: Vec<Ts> =
        parts.iter().filter(|(_, p)| matches!(p, BarPart::Boundary { .. })).map(|(t, _)| *t).collect();
    assert_eq!(boundaries, [BAR, 19 * BAR / 10]);
    let ahead = |from: Ts, to: Ts| {
        parts.iter().filter(|(t, p)| (from + 1..to).contains(t) && matches!(p, BarPart::Qty { .. })).count()
    };
    assert!(ahead(0, BAR) >= 1000, "the first bar's changes wait for its end: {}", ahead(0, BAR));
    assert!(ahead(BAR, 19 * BAR / 10) >= 1000, "the last changes wait for the end: {}", ahead(BAR, 19 * BAR / 10));
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut qty: BTreeMap<(String, String), i128> = BTreeMap::new();
    let mut price: BTreeMap<String, Fixed> = BTreeMap::new();
    let mut previous = 0;
    for &bar_end in &boundaries {
        for (_, part) in parts.iter().filter(|(t, _)| *t <= bar_end && *t > previous) {
            match part {
                BarPart::Name { number, name, .. } => _ = names.insert(*number, name.to_string()),
                BarPart::Qty { account, instrument, qty: q, .. } => {
                    *qty.entry((names[account].clone(), names[instrument].clone())).or_default() += q.0 as i128
                }
                BarPart::Price { instrument, price: p, .. } => _ = price.insert(names[instrument].clone(), *p),
                _ => {}
            }
        }
        let mut want_qty: BTreeMap<(String, String), i128> = BTreeMap::new();
        let mut want_price: BTreeMap<String, Fixed> = BTreeMap::new();
        for e in events.iter().filter(|e| e.ts().unwrap() <= bar_end) {
            match e {
                Event::Delta(d) => {
                    *want_qty.entry((d.account.clone(), d.instrument.clone())).or_default() += d.qty.0 as i128
                }
                Event::Tick(t) => _ = want_price.insert(t.instrument.clone(), t.price),
                _ => {}
            }
        }
        qty.retain(|_, q| *q != 0);
        want_qty.retain(|_, q| *q != 0);
        assert!(want_qty.len() > 5000);
        let wrong = want_qty.iter().filter(|(k, q)| qty.get(*k) != Some(*q)).count();
        assert!(qty.len() == want_qty.len() && wrong == 0, "at {bar_end}: {wrong} quantities differ");
        assert_eq!(price, want_price, "prices at {bar_end}");
        previous = bar_end;
    }
}
