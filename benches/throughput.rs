//! Question: how many position updates per second go through exposures and limits?
//! Two plain single-threaded baselines (HashMaps keyed by the records' strings, and the
//! leanest loop: integer ids and flat arrays) and the dataflow (book + limits, in-memory
//! source) with 1 and 2 workers, on the same seeded workload, in one run. Both baselines count
//! the same limit events, which checks that they do the same work.
//!
//! Two figures each: *cold*, the first `warm-up` updates, during which most positions and
//! limit tallies are created (tables grow, memory is first touched); and *sustained*, the
//! `updates` after them, when the book holds its positions as it does through a trading day.
//!
//! `cargo bench --bench throughput -- [accounts] [instruments] [updates] [records per epoch] [warm-up]`
//! (defaults 10000 5000 2000000 1000 1000000).

mod workload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riskflow_dataflows::engine::engine;
use riskflow_dataflows::event::Event;
use riskflow_dataflows::exposure::{mul_fixed_nanos, position_exposure, Sums};
use riskflow_dataflows::limits::LimitState;
use riskflow_dataflows::model::{Fixed, Instrument, Ts};
use rustc_hash::{FxHashMap, FxHashSet};
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use workload::{arg, envelope, workload, Workload};

/// The same exposure and limit updates as the dataflow, in one thread with HashMaps: ids
/// interned on first sight, positions, last prices, positions per instrument, account and desk
/// gross/net sums, and the limit state machine on every change. Returns the time of the first
/// `warm` updates (reference data included), the time of the rest, positions, limit events.
fn baseline(w: &Workload, warm: usize) -> (Duration, Duration, usize, u64) {
    let started = Instant::now();
    let mut instr: HashMap<&str, usize> = HashMap::new();
    let mut defs: Vec<&Instrument> = Vec::new();
    let mut acct: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut desks: HashMap<&str, usize> = HashMap::new();
    let mut limit_of: HashMap<(u8, usize), f64> = HashMap::new();
    for e in &w.reference {
        match e {
            Event::Instrument(i) => {
                instr.insert(&i.id, defs.len());
                defs.push(i);
            }
            Event::Account(a) => {
                let n = desks.len();
                let desk = *desks.entry(&a.desk).or_insert(n);
                let n = acct.len();
                acct.insert(&a.id, (n, desk));
            }
            _ => {}
        }
    }
    for e in &w.reference {
        if let Event::Limit(l) = e {
            let key = match l.scope {
                riskflow_dataflows::model::Scope::Account => (0, acct[l.scope_id.as_str()].0),
                _ => (1, desks[l.scope_id.as_str()]),
            };
            limit_of.insert(key, l.limit);
        }
    }
    let mut price: Vec<Option<Fixed>> = vec![None; defs.len()];
    let mut in_instr: Vec<Vec<usize>> = vec![Vec::new(); defs.len()];
    let mut positions: Vec<(usize, usize, Fixed, Sums)> = Vec::new();
    let mut pos_of: HashMap<(usize, usize), usize> = HashMap::new();
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut sums: HashMap<(u8, usize), (Sums, LimitState)> = HashMap::new();
    let mut events = 0u64;
    let mut update = |key: (u8, usize), change: &Sums, sums: &mut HashMap<(u8, usize), (Sums, LimitState)>| {
        let entry = sums.entry(key).or_insert((Sums::default(), LimitState::Ok));
        entry.0.add(change);
        if let Some(limit) = limit_of.get(&key) {
            let u = (entry.0.gross as f64 / 1e9).abs() / limit;
            let next = LimitState::next(entry.1, u, 0.8, 0.05);
            if next != entry.1 {
                entry.1 = next;
                events += 1;
            }
        }
    };
    let mut revalue =
        |p: usize, positions: &mut Vec<(usize, usize, Fixed, Sums)>, price: &[Option<Fixed>], sums: &mut _| {
            let (a, i, q, old) = positions[p];
            let Some(px) = price[i] else { return };
            let new =
                position_exposure(defs[i], q, px, None, 0, 0.0).map(|e| Sums::of_exposure(&e)).unwrap_or_default();
            let mut change = new;
            change.sub(&old);
            positions[p].3 = new;
            let (acct_idx, desk) = a_desk(a);
            update((0, acct_idx), &change, sums);
            update((1, desk), &change, sums);
        };
    fn a_desk(packed: usize) -> (usize, usize) {
        (packed >> 8, packed & 0xff)
    }
    let (cold, sustained) = timed(w, warm, started, |e| match e {
        Event::Tick(t) => {
            let i = instr[t.instrument.as_str()];
            price[i] = Some(t.price);
            for &p in &in_instr[i] {
                revalue(p, &mut positions, &price, &mut sums);
            }
        }
        Event::Delta(d) if seen.insert(&d.id) => {
            let (a, desk) = acct[d.account.as_str()];
            let i = instr[d.instrument.as_str()];
            let p = *pos_of.entry((a, i)).or_insert_with(|| {
                positions.push(((a << 8) | desk, i, Fixed::ZERO, Sums::default()));
                in_instr[i].push(positions.len() - 1);
                positions.len() - 1
            });
            positions[p].2 = Fixed(positions[p].2 .0 + d.qty.0);
            revalue(p, &mut positions, &price, &mut sums);
        }
        _ => {}
    });
    (cold, sustained, positions.len(), events)
}

/// The same updates as [`baseline`] in the leanest plain loop: ids interned to integers,
/// FxHash, positions, prices and scope sums in flat arrays, only the gross figure the limits
/// read. What one core does with this workload at best, whatever the engine's design.
fn flat_baseline(w: &Workload, warm: usize) -> (Duration, Duration, u64) {
    let started = Instant::now();
    let mut instr: FxHashMap<&str, u32> = FxHashMap::default();
    let mut acct: FxHashMap<&str, (u32, u32)> = FxHashMap::default();
    let mut desks: FxHashMap<&str, u32> = FxHashMap::default();
    for e in &w.reference {
        match e {
            Event::Instrument(i) => {
                let n = instr.len() as u32;
                instr.insert(&i.id, n);
            }
            Event::Account(a) => {
                let n = desks.len() as u32;
                let desk = *desks.entry(&a.desk).or_insert(n);
                let n = acct.len() as u32;
                acct.insert(&a.id, (n, desk));
            }
            _ => {}
        }
    }
    // (gross in nanos, limit, state) per account, then per desk.
    let mut scopes: Vec<(i128, f64, LimitState)> = vec![(0, f64::INFINITY, LimitState::Ok); acct.len() + desks.len()];
    for e in &w.reference {
        if let Event::Limit(l) = e {
            let s = match l.scope {
                riskflow_dataflows::model::Scope::Account => acct[l.scope_id.as_str()].0,
                _ => acct.len() as u32 + desks[l.scope_id.as_str()],
            };
            scopes[s as usize].1 = l.limit;
        }
    }
    let first_desk = acct.len() as u32;
    let mut price: Vec<Fixed> = vec![Fixed::ZERO; instr.len()];
    let mut in_instr: Vec<Vec<u32>> = vec![Vec::new(); instr.len()];
    // (account, desk, instrument, qty, exposure in nanos)
    let mut positions: Vec<(u32, u32, u32, Fixed, i128)> = Vec::new();
    let mut pos_of: FxHashMap<(u32, u32), u32> = FxHashMap::default();
    let mut seen: FxHashSet<&str> = FxHashSet::default();
    let mut events = 0u64;
    let mut revalue = |p: usize, positions: &mut Vec<(u32, u32, u32, Fixed, i128)>, price: &[Fixed]| {
        let (a, desk, i, q, old) = positions[p];
        let new = mul_fixed_nanos(q, price[i as usize]);
        positions[p].4 = new;
        for s in [a, first_desk + desk] {
            let scope = &mut scopes[s as usize];
            scope.0 += new.abs() - old.abs();
            let next = LimitState::next(scope.2, scope.0 as f64 / 1e9 / scope.1, 0.8, 0.05);
            if next != scope.2 {
                scope.2 = next;
                events += 1;
            }
        }
    };
    let (cold, sustained) = timed(w, warm, started, |e| match e {
        Event::Tick(t) => {
            let i = instr[t.instrument.as_str()] as usize;
            price[i] = t.price;
            for &p in &in_instr[i] {
                revalue(p as usize, &mut positions, &price);
            }
        }
        Event::Delta(d) if seen.insert(&d.id) => {
            let (a, desk) = acct[d.account.as_str()];
            let i = instr[d.instrument.as_str()];
            let p = *pos_of.entry((a, i)).or_insert_with(|| {
                positions.push((a, desk, i, Fixed::ZERO, 0));
                in_instr[i as usize].push(positions.len() as u32 - 1);
                positions.len() as u32 - 1
            }) as usize;
            positions[p].3 = Fixed(positions[p].3 .0 + d.qty.0);
            revalue(p, &mut positions, &price);
        }
        _ => {}
    });
    (cold, sustained, events)
}

/// Applies every update in order; returns the time from `started` to the `warm`-th update
/// (reference data and warm-up) and the time of the rest.
fn timed<'w>(w: &'w Workload, warm: usize, started: Instant, mut apply: impl FnMut(&'w Event)) -> (Duration, Duration) {
    let mut hot_started = started;
    for (n, e) in w.updates.iter().enumerate() {
        if n == warm {
            hot_started = Instant::now();
        }
        apply(e);
    }
    (hot_started - started, hot_started.elapsed())
}

/// The dataflow: each worker feeds every `workers`-th update, `epoch` records per epoch.
/// Returns the times until the book has applied the first `warm` updates and then the rest
/// (the limits trail it by at most eight epochs), the time from the end of warm-up until the
/// graph is done (closing snapshot and analytics included), and the number of limit events.
fn dataflow(w: &Arc<Workload>, workers: usize, epoch: usize, warm: usize) -> (Duration, Duration, Duration, u64) {
    let config = workload::engine_config();
    let w = w.clone();
    let live = Arc::new(Mutex::new((Duration::ZERO, Duration::ZERO)));
    let live2 = live.clone();
    let elapsed = Arc::new(Mutex::new(Duration::ZERO));
    let events = Arc::new(Mutex::new(0u64));
    let (elapsed2, events2) = (elapsed.clone(), events.clone());
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut input = InputHandleVec::<Ts, _>::new();
        let probe = ProbeHandle::new();
        let counted = Arc::new(Mutex::new(0u64));
        let c = counted.clone();
        worker.dataflow::<Ts, _, _>(|scope| {
            let e = engine(input.to_stream(scope), &config);
            use timely::dataflow::operators::Inspect;
            e.limit_events.inspect(move |_| *c.lock().unwrap() += 1);
            e.book.live.probe_with(&probe);
        });
        // Prepared before the clock starts: the source is memory.
        let share = |updates: &[riskflow_dataflows::event::Event]| -> Vec<_> {
            updates.iter().skip(index).step_by(peers).map(|e| envelope(e.clone(), 0)).collect()
        };
        let (warm_up, hot) = (share(&w.updates[..warm]), share(&w.updates[warm..]));
        if index == 0 {
            for e in &w.reference {
                input.send(envelope(e.clone(), 0));
            }
        }
        input.advance_to(1);
        while probe.less_than(input.time()) {
            worker.step();
        }
        let mut feed = |records: Vec<_>, mut time: Ts, end: Option<Ts>| {
            let started = Instant::now();
            let mut records = records.into_iter().peekable();
            while records.peek().is_some() {
                for env in records.by_ref().take(epoch) {
                    input.send(env);
                }
                time += 1;
                input.advance_to(time);
                worker.step();
                // Keep a bounded number of epochs in flight.
                while probe.less_than(&time.saturating_sub(8)) {
                    worker.step();
                }
            }
            // With `end`, every worker's input reaches it only once all of its share is fed.
            let end = end.unwrap_or(time);
            input.advance_to(end);
            while probe.less_than(&end) {
                worker.step();
            }
            started.elapsed()
        };
        // Above any worker's epoch count for its share of the warm-up (timely time stays far
        // below the bench's one-second bars, as before).
        let warm_end = (warm / epoch + 10) as Ts;
        let cold = feed(warm_up, 1, Some(warm_end));
        let started = Instant::now();
        let sustained = feed(hot, warm_end, None);
        if index == 0 {
            *live2.lock().unwrap() = (cold, sustained);
        }
        drop(input);
        while worker.step() {}
        if index == 0 {
            *elapsed2.lock().unwrap() = started.elapsed();
        }
        *events2.lock().unwrap() += *counted.lock().unwrap();
    })
    .expect("workers start");
    drop(guards);
    let ((cold, sustained), d) = (*live.lock().unwrap(), *elapsed.lock().unwrap());
    let n = *events.lock().unwrap();
    (cold, sustained, d, n)
}

fn main() {
    let (accounts, instruments, updates, epoch, warm) =
        (arg(0, 10_000), arg(1, 5_000), arg(2, 2_000_000), arg(3, 1_000), arg(4, 1_000_000));
    let w = Arc::new(workload(accounts, instruments, 20, warm + updates, 7));
    println!(
        "throughput: {accounts} accounts × {instruments} instruments, 20 positions per account, 1 tick per 10 deltas, {epoch} records per epoch; cold: the first {warm} updates, sustained: the {updates} after them"
    );
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64() / 1e6;
    let line = |name: &str, cold: Duration, sustained: Duration, note: String| {
        println!(
            "  {name:<30} cold {:>6.2} M/s ({:>6.3} s)   sustained {:>6.2} M updates/s ({:>6.3} s)  {note}",
            rate(warm, cold),
            cold.as_secs_f64(),
            rate(updates, sustained),
            sustained.as_secs_f64()
        )
    };
    let (cold, sustained, positions, events) = baseline(&w, warm);
    line("baseline (1 thread, HashMaps)", cold, sustained, format!("({positions} positions, {events} limit events)"));
    let (cold, sustained, flat_events) = flat_baseline(&w, warm);
    line("baseline, flat arrays", cold, sustained, format!("({flat_events} limit events)"));
    assert_eq!(flat_events, events, "the two baselines must do the same work");
    for workers in [1, 2] {
        let (cold, sustained, d, events) = dataflow(&w, workers, epoch, warm);
        let note = format!(
            "({events} limit events; closing snapshot and analytics {:.3} s more)",
            (d - sustained).as_secs_f64()
        );
        line(&format!("dataflow, {workers} worker(s)"), cold, sustained, note);
    }
}
