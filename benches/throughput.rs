//! Question: how many position updates per second go through exposures and limits?
//! The two plain single-threaded baselines of `baseline.rs` (HashMaps keyed by the records'
//! strings, and the leanest loop: integer ids and flat arrays) and the dataflow (book +
//! limits, in-memory source) with 1 and 2 workers, on the same seeded workload, in one run.
//! Both baselines count the same limit events, which checks that they do the same work.
//!
//! Two figures each: *cold*, the first `warm-up` updates, during which most positions and
//! limit tallies are created (tables grow, memory is first touched); and *sustained*, the
//! `updates` after them, when the book holds its positions as it does through a trading day.
//!
//! `cargo bench --bench throughput -- [accounts] [instruments] [updates] [records per epoch] [warm-up]`
//! (defaults 10000 5000 2000000 1000 1000000).

mod baseline;
mod workload;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baseline::{Baseline, Flat};
use riskflow_dataflows::engine::engine;
use riskflow_dataflows::event::Event;
use riskflow_dataflows::model::Ts;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use workload::{arg, envelope, workload, Workload};

/// [`Baseline`]'s time for the first `warm` updates (reference data included) and for the
/// rest, its positions and limit events.
fn baseline(w: &Workload, warm: usize) -> (Duration, Duration, usize, u64) {
    let started = Instant::now();
    let mut b = Baseline::new(w);
    let (cold, sustained) = timed(w, warm, started, |e| b.apply(e));
    (cold, sustained, b.positions(), b.events)
}

/// The same for [`Flat`].
fn flat_baseline(w: &Workload, warm: usize) -> (Duration, Duration, u64) {
    let started = Instant::now();
    let mut b = Flat::new(w);
    let (cold, sustained) = timed(w, warm, started, |e| b.apply(e));
    (cold, sustained, b.events)
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
            let e = engine(input.to_stream(scope), &config, |live| live.probe_with(&probe));
            use timely::dataflow::operators::Inspect;
            e.limit_events.inspect(move |_| *c.lock().unwrap() += 1);
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
    workload::allocator::configure();
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
