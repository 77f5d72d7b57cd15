//! Question: how often, and for how long, does this machine stop a thread that never blocks?
//! A thread reads the clock in a loop for a while; a gap between two reads is time the thread
//! did not run (an interrupt, the hypervisor, another process). No latency figure measured on
//! the machine can be lower than these stalls for the records they hold up: they are the floor
//! under the latency bench's tail.
//!
//! `cargo bench --bench stalls -- [seconds]` (default 3).

// The bench uses only the workload's argument parsing.
#[allow(dead_code)]
mod workload;

use hdrhistogram::Histogram;
use riskflow_dataflows::clock::now_ns;
use workload::arg;

/// A gap shorter than this is the loop's own time, not a stall.
const STALL_NS: u64 = 10_000;

fn main() {
    let seconds = arg(0, 3) as u64;
    let mut stalls = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let start = now_ns();
    let end = start + seconds * 1_000_000_000;
    let mut last = start;
    while last < end {
        let now = now_ns();
        if now - last >= STALL_NS {
            stalls.record(now - last).expect("within bounds");
        }
        last = now;
    }
    let elapsed = (last - start) as f64 / 1e9;
    let stalled: u64 = stalls.iter_recorded().map(|v| v.value_iterated_to() * v.count_at_value()).sum();
    let per_second = |at_least_us: u64| {
        stalls
            .iter_recorded()
            .filter(|v| v.value_iterated_to() >= at_least_us * 1_000)
            .map(|v| v.count_at_value())
            .sum::<u64>() as f64
            / elapsed
    };
    println!(
        "stalls of a spinning thread over {elapsed:.1} s: per second {:.0} ≥ 10 µs, {:.0} ≥ 20 µs, {:.1} ≥ 50 µs, {:.2} ≥ 200 µs; p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; {:.2}% of the time stopped",
        per_second(10),
        per_second(20),
        per_second(50),
        per_second(200),
        stalls.value_at_quantile(0.5) as f64 / 1e3,
        stalls.value_at_quantile(0.99) as f64 / 1e3,
        stalls.max() as f64 / 1e3,
        stalled as f64 / (last - start) as f64 * 100.0
    );
}
