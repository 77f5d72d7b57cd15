//! Question: how many position updates per second go through exposures and limits?
//! The plain single-threaded baseline and the dataflow (book + limits, in-memory source)
//! with 1 and 2 workers, on the same seeded workload, in one run.
//!
//! `cargo bench --bench throughput -- [accounts] [instruments] [updates] [records per epoch]`
//! (defaults 10000 5000 2000000 1000).

mod workload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riskflow_dataflows::engine::engine;
use riskflow_dataflows::event::Event;
use riskflow_dataflows::exposure::{position_exposure, Sums};
use riskflow_dataflows::limits::LimitState;
use riskflow_dataflows::model::{Fixed, Instrument, Ts};
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use workload::{arg, envelope, workload, Workload};

/// The same exposure and limit updates as the dataflow, in one thread with HashMaps: ids
/// interned on first sight, positions, last prices, positions per instrument, account and desk
/// gross/net sums, and the limit state machine on every change.
fn baseline(w: &Workload) -> (Duration, usize, u64) {
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
    for e in &w.updates {
        match e {
            Event::Tick(t) => {
                let i = instr[t.instrument.as_str()];
                price[i] = Some(t.price);
                for &p in &in_instr[i] {
                    revalue(p, &mut positions, &price, &mut sums);
                }
            }
            Event::Delta(d) => {
                if !seen.insert(&d.id) {
                    continue;
                }
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
        }
    }
    (started.elapsed(), positions.len(), events)
}

/// The dataflow: each worker feeds every `workers`-th update, `epoch` records per epoch.
/// Returns the time until the book has applied every update (the limits trail it by at
/// most eight epochs), the time until the graph is done (closing snapshot and analytics
/// included), and the number of limit events.
fn dataflow(w: &Arc<Workload>, workers: usize, epoch: usize) -> (Duration, Duration, u64) {
    let config = workload::engine_config();
    let w = w.clone();
    let live = Arc::new(Mutex::new(Duration::ZERO));
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
        let mine: Vec<_> = w.updates.iter().skip(index).step_by(peers).map(|e| envelope(e.clone(), 0)).collect();
        if index == 0 {
            for e in &w.reference {
                input.send(envelope(e.clone(), 0));
            }
        }
        input.advance_to(1);
        while probe.less_than(input.time()) {
            worker.step();
        }
        let started = Instant::now();
        let mut time: Ts = 1;
        let mut mine = mine.into_iter().peekable();
        while mine.peek().is_some() {
            for env in mine.by_ref().take(epoch) {
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
        while probe.less_than(&time) {
            worker.step();
        }
        if index == 0 {
            *live2.lock().unwrap() = started.elapsed();
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
    let (l, d) = (*live.lock().unwrap(), *elapsed.lock().unwrap());
    let n = *events.lock().unwrap();
    (l, d, n)
}

fn main() {
    let (accounts, instruments, updates, epoch) = (arg(0, 10_000), arg(1, 5_000), arg(2, 2_000_000), arg(3, 1_000));
    let w = Arc::new(workload(accounts, instruments, 20, updates, 7));
    println!(
        "throughput: {accounts} accounts × {instruments} instruments, 20 positions per account, {updates} updates (1 tick per 10 deltas), {epoch} records per epoch"
    );
    let rate = |d: Duration| updates as f64 / d.as_secs_f64() / 1e6;
    let (d, positions, events) = baseline(&w);
    println!("  baseline (1 thread, HashMaps)   {:>8.3} s  {:>6.2} M updates/s  ({positions} positions, {events} limit events)", d.as_secs_f64(), rate(d));
    for workers in [1, 2] {
        let (live, d, events) = dataflow(&w, workers, epoch);
        println!(
            "  dataflow, {workers} worker(s)            {:>8.3} s  {:>6.2} M updates/s  ({events} limit events; closing snapshot and analytics {:.3} s more)",
            live.as_secs_f64(),
            rate(live),
            (d - live).as_secs_f64()
        );
    }
}
