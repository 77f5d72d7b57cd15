//! Question: what is the ingest-to-output latency under an open-loop offered load?
//! Records are released on a fixed schedule (rate R); a record's ingest time is its scheduled
//! time, so a stalled engine is charged for every record it delays (no coordinated omission).
//! Latency is taken where the live exposure updates leave the book (as they pass on to the
//! limits) and where the limit events leave the dataflow.
//! Two views of the live updates: each update one sample (a tick that moves ~50 scopes gives
//! ~50), and each input record one sample, taken at its last live update (every worker's).
//!
//! The source feeds the graph as `riskflow run --kafka` does: an unordered input sends each
//! record the moment it is due, and only the input time (the capability) advances, once per
//! epoch of wall time. A record never waits for its epoch to close.
//!
//! Before the clock starts, `warm-up` updates are fed as fast as the graph takes them, so that
//! the book holds its positions and the limits their tallies as through a trading day (the
//! throughput bench's *sustained*); with 0 the book starts empty and grows while measured.
//!
//! With `--bars`, records carry event times as a live feed does: each its scheduled time, at
//! the epoch of that time, so that one-second bars end while measured (the other lines' times
//! are epoch counters, which cross no bar end); the input time is the epoch of the latest
//! event time sent, as the Kafka driver's watermark is with no lateness. VaR limits on the
//! firm, every desk and every fourth account make each bar end revalue every position on the
//! analytics' thread, and the limits take a change after a bar end only once that bar's
//! figures are in (event-time order): the breach-detection line then shows that wait. The
//! warm-up spans ten bars before.
//!
//! `cargo bench --bench latency -- [rate per second] [seconds] [workers] [epoch µs] [warm-up] [--bars]`
//! (defaults 100000 5 1 100000 1000000: the engine's default `engine.epoch`, 100 ms).

mod baseline;
mod workload;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use baseline::{Baseline, Flat};
use hdrhistogram::Histogram;
use riskflow_dataflows::clock::now_ns;
use riskflow_dataflows::engine::engine;
use riskflow_dataflows::event::{Envelope, Event};
use riskflow_dataflows::limits::LimitEvent;
use riskflow_dataflows::model::Ts;
use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::unordered_input::{UnorderedHandle, UnorderedInput};
use timely::dataflow::operators::ActivateCapability;
use timely::dataflow::operators::Inspect;
use workload::{arg, envelope, retimed, var_limits, workload};

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// A plain baseline under the same open-loop schedule, in one thread: each record applied the
/// moment it is due, its latency from its scheduled time to the end of its apply.
fn open_loop<'w>(updates: &'w [Event], rate: usize, mut apply: impl FnMut(&'w Event)) -> Histogram<u64> {
    let mut h = histogram();
    let start = now_ns();
    for (j, e) in updates.iter().enumerate() {
        let due = start + (j as f64 * 1e9 / rate as f64) as u64;
        while now_ns() < due {}
        apply(e);
        h.saturating_record(now_ns() - due);
    }
    h
}

/// Sends records given with their times, in time order: each run of one time under its own
/// capability.
fn send_timed(input: &mut UnorderedHandle<Ts, Envelope>, cap: &ActivateCapability<Ts>, batch: Vec<(Ts, Envelope)>) {
    let (mut batch, mut run) = (batch.into_iter().peekable(), Vec::new());
    while let Some((time, e)) = batch.next() {
        run.push(e);
        if batch.peek().map(|(t, _)| *t) != Some(time) {
            input.activate().session(&cap.delayed(&time)).give_container(&mut run);
            run.clear();
        }
    }
}

fn main() {
    workload::allocator::configure();
    let (rate, seconds, workers, epoch_us, warm) =
        (arg(0, 100_000), arg(1, 5), arg(2, 1), arg(3, 100_000), arg(4, 1_000_000));
    let n = rate * seconds;
    let bars = std::env::args().any(|a| a == "--bars");
    let w = Arc::new(workload(10_000, 5_000, 20, warm + n, 11));
    let config = workload::engine_config();
    // With `--bars`: the warm-up's event times span WARM_BARS bars from `t0`, the measured
    // records' start at `measured_from`, the bar end after them.
    const WARM_BARS: u64 = 10;
    let bar = config.analytics.bar_ns;
    let t0: Ts = 1_000 * bar;
    let measured_from = t0 + WARM_BARS * bar;
    // Per output: live updates, limit events (split into limits' state changes and
    // trading-state actions); per record: ingest time → last live update.
    let totals =
        Arc::new(Mutex::new((histogram(), histogram(), FxHashMap::<u64, u64>::default(), [histogram(), histogram()])));
    let t2 = totals.clone();
    let workload = w.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let w = &workload;
        let (index, peers) = (worker.index(), worker.peers());
        let live = Rc::new(RefCell::new(histogram()));
        let breach = Rc::new(RefCell::new(histogram()));
        let kinds = Rc::new(RefCell::new([histogram(), histogram()]));
        // Sized for every measured record up front: growing it rehashes every entry at once, a
        // stall of the worker that the measurement itself would cause and then count.
        let last_out = Rc::new(RefCell::new(FxHashMap::<u64, u64>::with_capacity_and_hasher(n, Default::default())));
        let (l2, b2, o2, k2) = (live.clone(), breach.clone(), last_out.clone(), kinds.clone());
        // How far the live output and the limit events have got: the warm-up waits on them.
        let (reached, settled) = (Rc::new(std::cell::Cell::new(0 as Ts)), Rc::new(std::cell::Cell::new(0 as Ts)));
        let (r2, s2) = (reached.clone(), settled.clone());
        let (mut input, mut cap) = worker.dataflow::<Ts, _, _>(|scope| {
            let (input, events) = scope.new_unordered_input();
            let e = engine(events, &config, |live| {
                live.inspect_core(move |event| match event {
                    Err(frontier) => r2.set(frontier.first().copied().unwrap_or(Ts::MAX)),
                    Ok((_, updates)) => {
                        let now = now_ns();
                        let (mut live, mut last_out) = (l2.borrow_mut(), o2.borrow_mut());
                        let mut previous = None;
                        for u in updates {
                            live.saturating_record(now.saturating_sub(u.ingest_ns()));
                            // A record's updates come together: one map write for each run of them.
                            if previous != Some(u.ingest_ns()) {
                                previous = Some(u.ingest_ns());
                                last_out.insert(u.ingest_ns(), now);
                            }
                        }
                    }
                })
            });
            e.limit_events.sink(Pipeline, "BreachLatency", move |(input, frontier)| {
                input.for_each(|_, data| {
                    let now = now_ns();
                    for ev in data.drain(..) {
                        let latency = now.saturating_sub(ev.ingest_ns());
                        b2.borrow_mut().saturating_record(latency);
                        k2.borrow_mut()[matches!(ev, LimitEvent::Action(_)) as usize].saturating_record(latency);
                    }
                });
                s2.set(frontier.frontier().first().copied().unwrap_or(Ts::MAX));
            });
            input
        });
        if index == 0 {
            let var = if bars { var_limits(10_000) } else { Vec::new() };
            let mut reference: Vec<_> = w.reference.iter().chain(&var).map(|e| envelope(e.clone(), now_ns())).collect();
            input.activate().session(&cap).give_container(&mut reference);
        }
        let epoch_ns = epoch_us as u64 * 1_000;
        let epoch_of = |ts: Ts| ts.div_ceil(epoch_ns) * epoch_ns;
        let share = |updates: &[Event]| -> Vec<_> { updates.iter().skip(index).step_by(peers).cloned().collect() };
        let (warm_up, mine) = (share(&w.updates[..warm]), share(&w.updates[warm..]));
        // The warm-up: epochs of 1,000 records, each let through before the next (with `--bars`,
        // 1,000 records at their own epochs).
        let mut time: Ts = if bars { t0 } else { 1 };
        cap.downgrade(&time);
        let span = (WARM_BARS * bar) as f64 / warm.max(1) as f64;
        for (c, chunk) in warm_up.chunks(1000).enumerate() {
            if bars {
                let ts = |k: usize| t0 + 1 + (((c * 1000 + k) * peers + index) as f64 * span) as Ts;
                let batch: Vec<_> = (chunk.iter().enumerate())
                    .map(|(k, e)| (epoch_of(ts(k)), envelope(retimed(e, ts(k)), now_ns())))
                    .collect();
                time = batch.last().map_or(time, |(at, _)| *at);
                send_timed(&mut input, &cap, batch);
            } else {
                let mut batch: Vec<_> = chunk.iter().map(|e| envelope(e.clone(), now_ns())).collect();
                input.activate().session(&cap).give_container(&mut batch);
                time += 1;
            }
            cap.downgrade(&time);
            while reached.get() < time {
                worker.step();
            }
        }
        // With bars, also every bar end's figures and the changes they held back: the limit
        // events pass the last bar end before the input time (its figures' frontier stops there).
        while bars && settled.get() <= (time - 1) / bar * bar {
            worker.step();
        }
        for _ in 0..1000 {
            worker.step();
        }
        live.borrow_mut().reset();
        breach.borrow_mut().reset();
        kinds.borrow_mut().iter_mut().for_each(|h| h.reset());
        last_out.borrow_mut().clear();
        let per_worker = rate as f64 / peers as f64;
        let start = now_ns();
        let mut sent = 0;
        let base = time;
        // With bars: record j's event time is its scheduled time from `measured_from`; the input
        // time never passes the last record's epoch.
        let event_ts = |j: usize| measured_from + 1 + ((j * peers + index) as f64 * 1e9 / rate as f64) as Ts;
        let last = epoch_of(event_ts(mine.len().saturating_sub(1)));
        // With bars, the input time then goes on to the last record's epoch, as a live feed's
        // watermark would, so that the last records' bar end comes before the input closes.
        while sent < mine.len() || (bars && time < last) {
            let now = now_ns();
            // Record j is scheduled at start + j / rate: due once that time has come.
            let due = (((now - start) as f64 * per_worker / 1e9) as usize + 1).min(mine.len());
            if due > sent {
                let scheduled = |j: usize| start + (j as f64 * 1e9 / per_worker) as u64;
                if bars {
                    let batch = (sent..due)
                        .map(|j| (epoch_of(event_ts(j)), envelope(retimed(&mine[j], event_ts(j)), scheduled(j))));
                    send_timed(&mut input, &cap, batch.collect());
                } else {
                    let mut batch: Vec<_> = (sent..due).map(|j| envelope(mine[j].clone(), scheduled(j))).collect();
                    input.activate().session(&cap).give_container(&mut batch);
                }
                sent = due;
            }
            // With bars, the input time is the epoch of the latest event time sent: the Kafka
            // driver's watermark (with no lateness), so a bar closes with its first later record.
            let epoch = if bars {
                epoch_of(event_ts(sent.saturating_sub(1))).min(last)
            } else {
                base + (now - start) / epoch_ns
            };
            if epoch > time {
                time = epoch;
                cap.downgrade(&time);
            }
            worker.step();
        }
        while bars && settled.get() <= (last - 1) / bar * bar {
            worker.step();
        }
        // Every measured record's events are out. With bars, closing the input takes a last
        // revaluation of every scope, whose figures' events are not any record's: left out.
        let measured_breach = bars.then(|| (breach.borrow().clone(), kinds.borrow().clone()));
        drop((input, cap));
        while worker.step() {}
        let mut t = t2.lock().unwrap();
        t.0.add(&*live.borrow()).unwrap();
        let (all, kinds) = measured_breach.unwrap_or_else(|| (breach.borrow().clone(), kinds.borrow().clone()));
        t.1.add(&all).unwrap();
        t.3.iter_mut().zip(&kinds).for_each(|(total, h)| total.add(h).unwrap());
        for (ingest, out) in last_out.borrow_mut().drain() {
            let latest = t.2.entry(ingest).or_insert(out);
            *latest = (*latest).max(out);
        }
    })
    .expect("workers start");
    // The yardsticks: the plain loops of baseline.rs, warmed up the same way, then offered the
    // same records at the same rate.
    let (warm_up, measured) = w.updates[..warm + n].split_at(warm);
    let mut b = Baseline::new(&w);
    warm_up.iter().for_each(|e| b.apply(e));
    let plain = open_loop(measured, rate, |e| b.apply(e));
    let mut f = Flat::new(&w);
    warm_up.iter().for_each(|e| f.apply(e));
    let flat = open_loop(measured, rate, |e| f.apply(e));
    let t = totals.lock().unwrap();
    let mut per_record = histogram();
    for (ingest, out) in &t.2 {
        per_record.saturating_record(out.saturating_sub(*ingest));
    }
    let timing = if bars {
        format!(
            "event times, {} ms bars ending while measured, VaR limits on the firm, desks and every fourth account",
            bar / 1_000_000
        )
    } else {
        "epoch counters (no bar end)".to_owned()
    };
    println!("latency: open loop, {rate} updates/s offered for {seconds} s, {workers} worker(s), {epoch_us} µs epochs, 10000 accounts × 5000 instruments, after {warm} updates of warm-up; {timing}");
    let lines = [
        ("ingest → live exposure update", &t.0),
        ("ingest → a record's last live update", &per_record),
        ("ingest → limit event (breach detection)", &t.1),
        ("  of which limits' state changes", &t.3[0]),
        ("  of which trading-state actions", &t.3[1]),
        ("baseline (1 thread, HashMaps): ingest → applied", &plain),
        ("baseline, flat arrays: ingest → applied", &flat),
    ];
    for (name, h) in lines {
        let us = |v: f64| v / 1e3;
        println!(
            "  {name:<48} n {:>8}  mean {:>8.2} µs  p50 {:>8.2}  p99 {:>8.2}  p99.9 {:>9.2}  max {:>10.2} µs",
            h.len(),
            us(h.mean()),
            us(h.value_at_quantile(0.5) as f64),
            us(h.value_at_quantile(0.99) as f64),
            us(h.value_at_quantile(0.999) as f64),
            us(h.max() as f64)
        );
    }
}
