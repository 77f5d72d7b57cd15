//! Question: what is the ingest-to-output latency under an open-loop offered load?
//! Records are released on a fixed schedule (rate R); a record's ingest time is its scheduled
//! time, so a stalled engine is charged for every record it delays (no coordinated omission).
//! Latency is taken where the live exposure update and the limit event leave the dataflow.
//!
//! `cargo bench --bench latency -- [rate per second] [seconds] [workers]` (defaults 100000 5 1).

mod workload;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use riskflow_dataflows::clock::now_ns;
use riskflow_dataflows::engine::engine;
use riskflow_dataflows::model::Ts;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::InputHandleVec;
use workload::{arg, envelope, workload};

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn main() {
    let (rate, seconds, workers) = (arg(0, 100_000), arg(1, 5), arg(2, 1));
    let n = rate * seconds;
    let w = Arc::new(workload(10_000, 5_000, 20, n, 11));
    let config = workload::engine_config();
    let totals = Arc::new(Mutex::new((histogram(), histogram())));
    let t2 = totals.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut input = InputHandleVec::<Ts, _>::new();
        let live = Rc::new(RefCell::new(histogram()));
        let breach = Rc::new(RefCell::new(histogram()));
        let (l2, b2) = (live.clone(), breach.clone());
        worker.dataflow::<Ts, _, _>(|scope| {
            let e = engine(input.to_stream(scope), &config);
            e.book.live.sink(Pipeline, "LiveLatency", move |(input, _)| {
                input.for_each(|_, data| {
                    let now = now_ns();
                    for u in data.drain(..) {
                        l2.borrow_mut().saturating_record(now.saturating_sub(u.ingest_ns()));
                    }
                });
            });
            e.limit_events.sink(Pipeline, "BreachLatency", move |(input, _)| {
                input.for_each(|_, data| {
                    let now = now_ns();
                    for ev in data.drain(..) {
                        b2.borrow_mut().saturating_record(now.saturating_sub(ev.ingest_ns()));
                    }
                });
            });
        });
        if index == 0 {
            for e in &w.reference {
                input.send(envelope(e.clone(), now_ns()));
            }
        }
        let mine: Vec<_> = w.updates.iter().skip(index).step_by(peers).cloned().collect();
        input.advance_to(1);
        for _ in 0..1000 {
            worker.step();
        }
        live.borrow_mut().reset();
        let per_worker = rate as f64 / peers as f64;
        let start = now_ns();
        let mut sent = 0;
        let mut time: Ts = 1;
        while sent < mine.len() {
            // Record j is scheduled at start + j / rate: due once that time has come.
            let due = (((now_ns() - start) as f64 * per_worker / 1e9) as usize + 1).min(mine.len());
            if due > sent {
                for (k, e) in mine[sent..due].iter().enumerate() {
                    let scheduled = start + ((sent + k) as f64 * 1e9 / per_worker) as u64;
                    input.send(envelope(e.clone(), scheduled));
                }
                sent = due;
                time += 1;
                input.advance_to(time);
            }
            worker.step();
        }
        drop(input);
        while worker.step() {}
        let mut t = t2.lock().unwrap();
        t.0.add(&*live.borrow()).unwrap();
        t.1.add(&*breach.borrow()).unwrap();
    })
    .expect("workers start");
    let t = totals.lock().unwrap();
    println!("latency: open loop, {rate} updates/s offered for {seconds} s, {workers} worker(s), 10000 accounts × 5000 instruments");
    for (name, h) in [("ingest → live exposure update", &t.0), ("ingest → limit event (breach detection)", &t.1)] {
        let us = |v: f64| v / 1e3;
        println!(
            "  {name:<42} n {:>8}  mean {:>8.2} µs  p50 {:>8.2}  p99 {:>8.2}  p99.9 {:>9.2}  max {:>10.2} µs",
            h.len(),
            us(h.mean()),
            us(h.value_at_quantile(0.5) as f64),
            us(h.value_at_quantile(0.99) as f64),
            us(h.value_at_quantile(0.999) as f64),
            us(h.max() as f64)
        );
    }
}
