//! Limits end to end through the book: a scripted scenario whose exact event sequence is
//! asserted, a price oscillating around a limit, a limit changed mid-stream, a desk breached
//! by two accounts together, a concentration that an fx rate move changes, and utilisations
//! against a batch computation.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use riskflow_dataflows::book::{book, BookConfig, BookStats};
use riskflow_dataflows::event::{Envelope, Event, Origin};
use riskflow_dataflows::exposure::{position_exposure, Ccy};
use riskflow_dataflows::limits::{limits, LimitEvent, LimitState, LimitStates, LimitsConfig, Metric, MetricUpdate};
use riskflow_dataflows::model::*;
use timely::dataflow::operators::vec::{Map, ToStream};
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::InputHandleVec;

use common::{delta, f, tick};

fn limit(id: &str, scope: Scope, scope_id: &str, metric: &str, value: f64) -> Limit {
    Limit {
        id: id.into(),
        scope,
        scope_id: scope_id.into(),
        metric: metric.into(),
        limit: value,
        warn_at: None,
        hard: None,
        action: None,
        enabled: None,
    }
}

fn reference() -> Vec<Event> {
    let inst = |s: &str| Event::Instrument(serde_json::from_str(s).unwrap());
    vec![
        inst(r#"{"id":"AAPL","asset_class":"equity","currency":"USD","multiplier":1}"#),
        inst(r#"{"id":"SAP","asset_class":"equity","currency":"EUR","multiplier":1}"#),
        inst(r#"{"id":"EURUSD","asset_class":"fx","currency":"USD","multiplier":1,"base":"EUR","quote":"USD"}"#),
        Event::Account(Account { id: "A1".into(), desk: "D1".into(), firm: None }),
        Event::Account(Account { id: "A2".into(), desk: "D1".into(), firm: None }),
        Event::Account(Account { id: "A3".into(), desk: "D2".into(), firm: None }),
    ]
}

struct Run {
    events: Vec<LimitEvent>,
    states: Vec<(String, LimitState, f64)>,
}

/// Book and limits; events are sent at their event time, one step each.
fn run(events: Vec<(Ts, Event)>, workers: usize) -> Run {
    run_stepping(events, workers, true)
}

/// Book and limits; events are sent at their event time, with a step after each one
/// (`step_each`) or all before the first step, so that the operators see them in one batch.
fn run_stepping(events: Vec<(Ts, Event)>, workers: usize, step_each: bool) -> Run {
    run_with(events, workers, step_each, LimitsConfig::default())
}

fn run_with(events: Vec<(Ts, Event)>, workers: usize, step_each: bool, limits_config: LimitsConfig) -> Run {
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let mut input = InputHandleVec::<Ts, Envelope>::new();
        let out = Rc::new(RefCell::new(Vec::new()));
        let states: LimitStates = Rc::default();
        let o = out.clone();
        worker.dataflow::<Ts, _, _>(|scope| {
            let stream = input.to_stream(scope);
            let defs = stream.clone().flat_map(|e| match e.event {
                Event::Limit(l) => Some(l),
                _ => None,
            });
            let config =
                BookConfig { snapshot_interval: 1_000_000, bar_interval: 1_000_000, base_ccy: Ccy::USD, rate: 0.0 };
            let b = book(stream, config.clone(), Rc::new(RefCell::new(BookStats::default())));
            let metrics = Vec::<MetricUpdate>::new().to_stream(scope);
            limits(b.live, defs, metrics, limits_config.clone(), config, Ccy::USD, states.clone())
                .inspect(move |e| o.borrow_mut().push(e.clone()));
        });
        if worker.index() == 0 {
            for e in reference() {
                input.send(Envelope { event: e, origin: Origin::Engine, ingest_ns: 0 });
            }
            for (time, e) in events.iter().cloned() {
                if time > *input.time() {
                    input.advance_to(time);
                }
                input.send(Envelope { event: e, origin: Origin::Engine, ingest_ns: 0 });
                if step_each {
                    worker.step();
                }
            }
        }
        drop(input);
        while worker.step() {}
        let result = (out.take(), states.borrow().clone());
        result
    })
    .unwrap();
    let mut run = Run { events: Vec::new(), states: Vec::new() };
    for r in guards.join() {
        let (e, s) = r.unwrap();
        run.events.extend(e);
        run.states.extend(s);
    }
    run.states.sort_by(|a, b| a.0.cmp(&b.0));
    run
}

/// (ts, limit, state, prev) of breach events; (ts, scope id, state, prev) of actions.
fn sequence(events: &[LimitEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            LimitEvent::Breach(b) => {
                format!("{} {} {:?}->{:?}", b.ts, b.limit_id, b.prev_state, b.state)
            }
            LimitEvent::Action(a) => format!("{} {} {:?}->{:?}", a.ts, a.scope_id, a.prev_state, a.state),
            LimitEvent::Standing(now) => format!("standing {}", sequence(std::slice::from_ref(now))[0]),
        })
        .collect()
}

#[test]
fn scripted_scenario_yields_exactly_these_events() {
    use Scope::*;
    let mut events = vec![
        (1, Event::Limit(limit("L1", Account, "A1", "gross", 1000.0))),
        (1, Event::Limit(limit("L2", Desk, "D1", "gross", 1300.0))),
        (1, tick(1, "AAPL", 10.0)),
        (10, delta("f1", 10, "A1", "AAPL", 50.0)), // A1 500: OK
        (20, delta("f2", 20, "A1", "AAPL", 35.0)), // A1 850: WARN
        (30, tick(30, "AAPL", 12.0)),              // A1 1020: BREACH, REDUCING; D1 1020/1300 OK
        (40, delta("f3", 40, "A2", "AAPL", 30.0)), // D1 1380/1300: BREACH by two accounts
        (50, tick(50, "AAPL", 11.9)),              // A1 1011.5, D1 1368.5: still BREACH
    ];
    // Oscillating around A1's limit, never below 1 − hysteresis: no event at all.
    for (i, p) in [11.7, 11.8, 11.6, 11.9, 11.5, 11.75].iter().enumerate() {
        events.push((60 + i as Ts, tick(60 + i as Ts, "AAPL", *p)));
    }
    events.push((70, tick(70, "AAPL", 11.0))); // A1 935 = 0.935: clears to WARN, ACTIVE; D1 0.973 stays
    for (i, p) in [11.3, 11.0, 11.4, 11.1].iter().enumerate() {
        events.push((80 + i as Ts, tick(80 + i as Ts, "AAPL", *p))); // A1 WARN, D1 BREACH: no event
    }
    let mut raised = limit("L1", Account, "A1", "gross", 2000.0);
    raised.warn_at = Some(0.9);
    events.push((100, Event::Limit(raised))); // A1 85 × 11.1 = 943.5 / 2000: OK
    events.push((110, delta("f4", 110, "A2", "AAPL", -30.0))); // D1 85 × 11.1 = 943.5: OK, ACTIVE
    events.push((120, delta("f4", 120, "A2", "AAPL", -30.0))); // duplicate: nothing

    let out = run(events, 1);
    assert_eq!(
        sequence(&out.events),
        vec![
            "20 L1 Ok->Warn",
            "30 L1 Warn->Breach",
            "30 A1 Active->Reducing",
            "40 L2 Ok->Breach",
            "40 D1 Active->Reducing",
            "70 L1 Breach->Warn",
            "70 A1 Reducing->Active",
            "100 L1 Warn->Ok",
            "110 L2 Breach->Ok",
            "110 D1 Reducing->Active",
        ]
    );
    let LimitEvent::Breach(b) = &out.events[1] else { panic!() };
    assert_eq!((b.value, b.limit, b.utilisation), (1020.0, 1000.0, 1.02));
    assert_eq!(b.scope, Account);
    assert_eq!(
        out.states,
        vec![("L1".into(), LimitState::Ok, 943.5 / 2000.0), ("L2".into(), LimitState::Ok, 943.5 / 1300.0)]
    );
}

/// A restart's horizon: every event up to it, then where each limit and scope stands (a scope
/// in REDUCING naming the hard limit that holds it there), then the later events, in that
/// order on the worker that owns them.
#[test]
fn the_standing_report_comes_between_the_horizon_and_what_follows() {
    use Scope::*;
    let events = vec![
        (1, Event::Limit(limit("L1", Account, "A1", "gross", 1000.0))),
        (1, Event::Limit(limit("L2", Desk, "D1", "gross", 1200.0))),
        (1, tick(1, "AAPL", 10.0)),
        (10, delta("f1", 10, "A1", "AAPL", 85.0)),  // A1 850: WARN
        (30, tick(30, "AAPL", 12.0)),               // A1 1020: BREACH, REDUCING; D1 1020/1200 WARN
        (40, delta("f3", 40, "A1", "AAPL", -10.0)), // A1 900: WARN, ACTIVE; D1 OK
        (50, delta("f4", 50, "A2", "AAPL", 50.0)),  // D1 1500: BREACH, REDUCING
    ];
    let config = LimitsConfig { standing_at: Some(35), ..LimitsConfig::default() };
    let out = run_with(events.clone(), 1, true, config.clone());
    assert_eq!(
        sequence(&out.events),
        vec![
            "10 L1 Ok->Warn",
            "30 L1 Warn->Breach",
            "30 A1 Active->Reducing",
            "30 L2 Ok->Warn",
            "standing 30 L1 Breach->Breach",
            "standing 30 L2 Warn->Warn",
            "standing 30 A1 Reducing->Reducing",
            "standing 30 D1 Active->Active",
            "40 L1 Breach->Warn",
            "40 A1 Reducing->Active",
            "40 L2 Warn->Ok",
            "50 L2 Ok->Breach",
            "50 D1 Active->Reducing",
        ]
    );
    let standing: Vec<_> = out.events.iter().filter(|e| matches!(e, LimitEvent::Standing(_))).collect();
    let LimitEvent::Standing(now) = standing[2] else { unreachable!() };
    let LimitEvent::Action(a) = &**now else { panic!("a scope's standing is an action") };
    assert_eq!(a.limit_id, "L1", "the hard limit that holds A1 in REDUCING");
    let LimitEvent::Standing(now) = standing[0] else { unreachable!() };
    let LimitEvent::Breach(b) = &**now else { panic!("a limit's standing is a breach") };
    assert_eq!((b.value, b.utilisation), (1020.0, 1.02));

    // Two workers, each its own limits and scopes: the same report, each after its own events
    // up to the horizon and before its later ones.
    let two = run_with(events.clone(), 2, true, config);
    let mut reported = sequence(&two.events);
    reported.retain(|e| e.starts_with("standing"));
    reported.sort();
    let mut one: Vec<_> = sequence(&out.events).into_iter().filter(|e| e.starts_with("standing")).collect();
    one.sort();
    assert_eq!(reported, one);
    // Without a horizon there is no report.
    let plain = run_with(events, 1, true, LimitsConfig::default());
    assert!(plain.events.iter().all(|e| !matches!(e, LimitEvent::Standing(_))));
}

#[test]
fn a_rate_move_moves_concentration() {
    use Scope::*;
    let events = vec![
        (1, Event::Limit(limit("C", Account, "A1", "concentration", 0.5))),
        (1, Event::Limit(limit("G", Account, "A3", "gross", 1000.0))),
        (1, tick(1, "AAPL", 100.0)),
        (1, tick(1, "SAP", 50.0)),
        (1, tick(1, "EURUSD", 1.1)),
        (10, delta("a", 10, "A1", "AAPL", 100.0)), // AAPL 10,000: concentration 1.0, BREACH
        (20, delta("b", 20, "A1", "SAP", 100.0)),  // SAP 5,500 of 15,500: 0.645, still BREACH
        (25, delta("c", 25, "A3", "AAPL", 9.0)),   // A3 900 USD only: WARN
        (30, tick(30, "EURUSD", 0.2)),             // SAP 1,000 of 11,000: 0.909, still BREACH
        // SAP 15,000 of 25,000: 0.6 from SAP, now the largest (A3 holds no EUR: no event).
        (40, tick(40, "EURUSD", 3.0)),
        (50, tick(50, "EURUSD", 9.0)), // SAP 45,000 of 55,000: 0.818, BREACH still
        (60, tick(60, "AAPL", 110.0)), // A3 990: WARN still; A1 SAP 45,000 of 56,000
    ];
    let out = run(events, 1);
    assert_eq!(sequence(&out.events), vec!["10 C Ok->Breach", "10 A1 Active->Reducing", "25 G Ok->Warn"]);
    let states: Vec<_> = out.states.iter().map(|(id, s, u)| (id.as_str(), *s, (u * 1e6).round() / 1e6)).collect();
    assert_eq!(states, vec![("C", LimitState::Breach, 1.607143), ("G", LimitState::Warn, 0.99)]);
}

/// Positions in a currency without a rate yet (Kafka partitions can deliver deltas before the
/// first fx tick): the scope's concentration is unknown, so its limits stay as they were,
/// and the rate's arrival evaluates them on every position held by then.
#[test]
fn a_concentration_waits_for_its_rate() {
    use Scope::*;
    let events = vec![
        (1, Event::Limit(limit("C", Account, "A1", "concentration", 0.9))),
        (1, Event::Limit(limit("CF", Firm, "FIRM", "concentration", 0.9))),
        (1, tick(1, "AAPL", 100.0)),
        (1, tick(1, "SAP", 50.0)),
        (10, delta("a", 10, "A1", "AAPL", 100.0)), // AAPL 10,000 of 10,000: 1.11, BREACH
        (20, delta("b", 20, "A1", "SAP", 300.0)),  // SAP 15,000 EUR, no rate: unknown
        (25, delta("c", 25, "A2", "SAP", 100.0)),  // the firm: SAP 20,000 EUR, unknown
        (30, tick(30, "AAPL", 120.0)),             // unknown still
        // A1: SAP 16,500 of 28,500: 0.643, OK. The firm: SAP 22,000 of 34,000: 0.719, OK.
        (40, tick(40, "EURUSD", 1.1)),
    ];
    let out = run(events, 1);
    assert_eq!(
        sequence(&out.events),
        vec![
            "10 C Ok->Breach",
            "10 A1 Active->Reducing",
            "10 CF Ok->Breach",
            "10 FIRM Active->Reducing",
            "40 C Breach->Ok",
            "40 A1 Reducing->Active",
            "40 CF Breach->Ok",
            "40 FIRM Reducing->Active",
        ]
    );
    let states: Vec<_> = out.states.iter().map(|(id, s, u)| (id.as_str(), *s, *u)).collect();
    assert_eq!(
        states,
        vec![("C", LimitState::Ok, 16_500.0 / 28_500.0 / 0.9), ("CF", LimitState::Ok, 22_000.0 / 34_000.0 / 0.9)]
    );
}

#[test]
fn removed_limits_stop_and_halting_limits_halt() {
    use Scope::*;
    let mut hard = limit("H", Firm, "FIRM", "net", 100.0);
    hard.action = Some(TradingState::Halted);
    let mut soft = limit("S", Account, "A3", "position_qty:SAP", 5.0);
    soft.hard = Some(false);
    let mut removed = hard.clone();
    removed.enabled = Some(false);
    let events = vec![
        (1, Event::Limit(hard)),
        (1, Event::Limit(soft)),
        (1, tick(1, "SAP", 10.0)),
        (1, tick(1, "EURUSD", 1.5)),
        (10, delta("a", 10, "A3", "SAP", 6.0)), // qty 6 > 5: S BREACH (soft: no action); net 90 USD: H WARN
        (20, tick(20, "EURUSD", 2.0)),          // net 120: H BREACH, firm HALTED
        (30, Event::Limit(removed)),            // H removed: firm ACTIVE again
        (40, tick(40, "EURUSD", 3.0)),          // no H any more: nothing
    ];
    let out = run(events, 1);
    assert_eq!(
        sequence(&out.events),
        vec![
            "10 S Ok->Breach",
            "10 H Ok->Warn",
            "20 H Warn->Breach",
            "20 FIRM Active->Halted",
            "30 FIRM Halted->Active"
        ]
    );
}

#[test]
fn utilisations_equal_a_batch_computation_with_two_workers() {
    utilisations_equal_a_batch_computation(None);
}

/// Concentration and position_qty limits defined after 300 records, and a position_qty limit
/// on a second instrument of a scope whose first is tallied already after 450: each book
/// seeds each tally from its positions then, and the limits end where the batch says.
#[test]
fn tally_limits_defined_mid_stream_equal_a_batch_computation_with_two_workers() {
    utilisations_equal_a_batch_computation(Some(300));
}

/// Final utilisations of every limit against a batch computation from the final positions and
/// last prices; `tally_limits_at`: the record after which the limits that read tallies are
/// defined (none: all limits at the start).
fn utilisations_equal_a_batch_computation(tally_limits_at: Option<usize>) {
    // Seeded linear book: three accounts, AAPL and SAP, prices and EURUSD moving.
    let mut state: u64 = 42;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut events = vec![(1, tick(1, "AAPL", 100.0)), (1, tick(1, "SAP", 50.0)), (1, tick(1, "EURUSD", 1.1))];
    let accounts = ["A1", "A2", "A3"];
    let mut limits_defs = Vec::new();
    for (i, a) in accounts.iter().enumerate() {
        limits_defs.push(limit(&format!("G{i}"), Scope::Account, a, "gross", 50_000.0));
        limits_defs.push(limit(&format!("N{i}"), Scope::Account, a, "net", 20_000.0));
        limits_defs.push(limit(&format!("C{i}"), Scope::Account, a, "concentration", 0.9));
    }
    limits_defs.push(limit("D1", Scope::Desk, "D1", "gross", 80_000.0));
    limits_defs.push(limit("F", Scope::Firm, "FIRM", "net", 40_000.0));
    limits_defs.push(limit("Q", Scope::Desk, "D2", "position_qty:SAP", 300.0));
    limits_defs.push(limit("CD", Scope::Desk, "D1", "concentration", 0.9));
    limits_defs.push(limit("CF", Scope::Firm, "FIRM", "concentration", 0.9));
    limits_defs.push(limit("QF", Scope::Firm, "FIRM", "position_qty:SAP", 500.0));
    limits_defs.push(limit("QFA", Scope::Firm, "FIRM", "position_qty:AAPL", 700.0));
    // The record before which each limit is defined (none: at the start).
    let defined_at = |l: &Limit| {
        let reads_tallies = Metric::parse(&l.metric).is_some_and(|m| m.tally().is_some());
        let later = if l.id == "QFA" { 150 } else { 0 };
        tally_limits_at.filter(|_| reads_tallies).map(|at| at + later)
    };
    for l in limits_defs.iter().filter(|l| defined_at(l).is_none()) {
        events.push((1, Event::Limit(l.clone())));
    }
    for n in 0..600 {
        let ts = 10 + n as Ts;
        for l in limits_defs.iter().filter(|l| defined_at(l) == Some(n)) {
            events.push((ts, Event::Limit(l.clone())));
        }
        let r = next();
        if r < 0.3 {
            let (inst, base) = [("AAPL", 100.0), ("SAP", 50.0), ("EURUSD", 1.1)][(next() * 3.0) as usize % 3];
            let p = (base * (0.8 + 0.4 * next()) * 1e4f64).round() / 1e4;
            events.push((ts, tick(ts, inst, p)));
        } else {
            let a = accounts[(next() * 3.0) as usize % 3];
            let inst = if next() < 0.5 { "AAPL" } else { "SAP" };
            let q = ((next() - 0.5) * 200.0).round();
            events.push((ts, delta(&format!("d{n}"), ts, a, inst, q)));
        }
    }
    let out = run(events.clone(), 2);

    // Batch: final positions and last prices, straight from the events.
    let mut qty: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    let mut last: BTreeMap<&str, f64> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (_, e) in &events {
        match e {
            Event::Tick(t) => {
                last.insert(&t.instrument, t.price.to_f64());
            }
            Event::Delta(d) if seen.insert(&d.id) => {
                *qty.entry((&d.account, &d.instrument)).or_default() += d.qty.to_f64()
            }
            _ => {}
        }
    }
    let desk = |a: &str| if a == "A3" { "D2" } else { "D1" };
    let inst_def = |i: &str| -> Instrument {
        serde_json::from_str(&format!(
            r#"{{"id":"{i}","asset_class":"equity","currency":"{}","multiplier":1}}"#,
            if i == "SAP" { "EUR" } else { "USD" }
        ))
        .unwrap()
    };
    let exposure = |a: &str, i: &str| -> f64 {
        let q = qty.get(&(a, i)).copied().unwrap_or(0.0);
        let e = position_exposure(&inst_def(i), f(q), f(last[i]), None, 0, 0.0).unwrap();
        let rate = if i == "SAP" { last["EURUSD"] } else { 1.0 };
        e.delta.nanos as f64 / 1e9 * rate
    };
    let in_scope = |scope: Scope, id: &str, a: &str| match scope {
        Scope::Account => a == id,
        Scope::Desk => desk(a) == id,
        Scope::Firm => true,
    };
    for l in &limits_defs {
        let exposures: Vec<(&str, f64)> = accounts
            .iter()
            .filter(|a| in_scope(l.scope, &l.scope_id, a))
            .flat_map(|a| ["AAPL", "SAP"].map(|i| (i, exposure(a, i))))
            .collect();
        let gross: f64 = exposures.iter().map(|(_, e)| e.abs()).sum();
        let value = match l.metric.as_str() {
            "gross" => gross,
            "net" => exposures.iter().map(|(_, e)| e).sum(),
            "concentration" => {
                ["AAPL", "SAP"]
                    .iter()
                    .map(|u| exposures.iter().filter(|(i, _)| i == u).map(|(_, e)| e).sum::<f64>().abs())
                    .fold(0.0, f64::max)
                    / gross
            }
            position_qty => {
                let instrument = position_qty.strip_prefix("position_qty:").expect("a position_qty limit");
                accounts
                    .iter()
                    .filter(|a| in_scope(l.scope, &l.scope_id, a))
                    .map(|a| qty.get(&(*a, instrument)).copied().unwrap_or(0.0))
                    .sum()
            }
        };
        let expected = value.abs() / l.limit;
        let (_, _, got) = out.states.iter().find(|(id, _, _)| *id == l.id).expect("limit state");
        assert!((got - expected).abs() <= 1e-12 * expected.max(1.0), "{}: {got} vs {expected}", l.id);
    }
}

/// Concentration and position_qty limits read a scope's tallies (net per underlying, quantity
/// per instrument). Defined mid-stream, they start from exactly the history before them, and
/// yield the same events whether records arrive one at a time or all in one batch (where the
/// limits operator adds the other scopes' tallies ahead of the batch).
#[test]
fn tally_limits_defined_mid_stream_agree_in_any_batching() {
    use Scope::*;
    let mut events = vec![(1, tick(1, "AAPL", 100.0)), (1, tick(1, "SAP", 50.0)), (1, tick(1, "EURUSD", 1.1))];
    let accounts = ["A1", "A2", "A3"];
    for n in 0..240u64 {
        let ts = 10 + 2 * n;
        let a = accounts[(n % 3) as usize];
        let (inst, q) = if n % 4 < 2 { ("SAP", 40.0) } else { ("AAPL", 15.0) };
        let sign = if (n / 5) % 3 == 2 { -1.0 } else { 1.0 };
        events.push((ts, delta(&format!("d{n}"), ts, a, inst, sign * q)));
        if n % 7 == 3 {
            events.push((ts, tick(ts, "SAP", 50.0 + (n % 11) as f64)));
        }
        if n == 120 {
            // Odd times carry nothing else: the definitions are ordered against every record.
            for l in [
                limit("C1", Account, "A1", "concentration", 0.7),
                limit("Q1", Desk, "D1", "position_qty:SAP", 1500.0),
                limit("G1", Desk, "D1", "gross", 150_000.0),
            ] {
                events.push((ts + 1, Event::Limit(l)));
            }
        }
    }
    let one_by_one = run_stepping(events.clone(), 1, true);
    let batched = run_stepping(events, 1, false);
    let fired: HashSet<String> = one_by_one
        .events
        .iter()
        .filter_map(|e| match e {
            LimitEvent::Breach(b) => Some(b.limit_id.clone()),
            _ => None,
        })
        .collect();
    assert!(["C1", "Q1", "G1"].iter().all(|l| fired.contains(*l)), "every limit changes state: {fired:?}");
    assert_eq!(sequence(&one_by_one.events), sequence(&batched.events));
    assert_eq!(one_by_one.states, batched.states);
}

/// A bar end's figure reaches the limits after changes of later times (the analytics compute
/// it on their own thread); the limits still take it first. Here a VaR breach at the bar end
/// 1000 and a gross breach at 1500 of the same account, both hard: the account starts reducing
/// at 1000, on the VaR breach, however the figure and the changes arrive.
#[test]
fn a_bar_ends_figure_comes_before_the_changes_after_it() {
    use Scope::Account;
    let guards = timely::execute(timely::Config::thread(), |worker| {
        let mut input = InputHandleVec::<Ts, Envelope>::new();
        let mut figures = InputHandleVec::<Ts, MetricUpdate>::new();
        let out = Rc::new(RefCell::new(Vec::new()));
        let o = out.clone();
        let live = timely::dataflow::ProbeHandle::new();
        worker.dataflow::<Ts, _, _>(|scope| {
            let stream = input.to_stream(scope);
            let defs = stream.clone().flat_map(|e| match e.event {
                Event::Limit(l) => Some(l),
                _ => None,
            });
            let config = BookConfig { snapshot_interval: 1_000_000, bar_interval: 1000, base_ccy: Ccy::USD, rate: 0.0 };
            let b = book(stream, config.clone(), Rc::new(RefCell::new(BookStats::default())));
            let states = LimitStates::default();
            let changes = b.live.probe_with(&live);
            limits(changes, defs, figures.to_stream(scope), LimitsConfig::default(), config, Ccy::USD, states)
                .inspect(move |e| o.borrow_mut().push(e.clone()));
        });
        let send = |input: &mut InputHandleVec<Ts, Envelope>, e| {
            input.send(Envelope { event: e, origin: Origin::Engine, ingest_ns: 0 })
        };
        for e in reference() {
            send(&mut input, e);
        }
        send(&mut input, Event::Limit(limit("LV", Account, "A1", "var", 100.0)));
        send(&mut input, Event::Limit(limit("LG", Account, "A1", "gross", 1000.0)));
        input.advance_to(500);
        send(&mut input, tick(500, "AAPL", 10.0));
        send(&mut input, delta("f1", 500, "A1", "AAPL", 50.0)); // gross 500: OK
        input.advance_to(1500);
        send(&mut input, delta("f2", 1500, "A1", "AAPL", 60.0)); // gross 1100: BREACH
        input.advance_to(1501);
        // Every change is in before the figure of the bar end at 1000 is.
        figures.advance_to(1000);
        while live.less_than(&1501) {
            worker.step();
        }
        let figure = MetricUpdate {
            scope: Account,
            scope_id: "A1".into(),
            metric: Metric::Var,
            value: 150.0,
            ts: 1000,
            ingest_ns: 0,
        };
        figures.send(figure);
        drop((input, figures));
        while worker.step() {}
        let events = sequence(&out.borrow());
        events
    })
    .unwrap();
    let events = guards.join().pop().unwrap().unwrap();
    assert_eq!(events, vec!["1000 LV Ok->Breach", "1000 A1 Active->Reducing", "1500 LG Ok->Breach"]);
}
