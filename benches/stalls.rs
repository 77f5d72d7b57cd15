//! Question: how often, and for how long, does this machine stop a thread that never blocks,
//! and do the longer stops keep time (a timer) or come at random?
//! A thread reads the clock in a loop for a while; a gap between two reads is time the thread
//! did not run (an interrupt, the hypervisor, another process). No latency figure measured on
//! the machine can be lower than these stalls for the records they hold up: they are the floor
//! under the latency bench's tail.
//!
//! With two threads spinning at once, as two workers do on this two-core machine, each is
//! counted alike.
//!
//! `cargo bench --bench stalls -- [seconds] [threads]` (defaults 3 1).

// The bench uses only the workload's argument parsing.
#[allow(dead_code)]
mod workload;

use hdrhistogram::Histogram;
use riskflow_dataflows::clock::now_ns;
use workload::arg;

/// A gap shorter than this is the loop's own time, not a stall.
const STALL_NS: u64 = 10_000;
/// Stalls at least this long are checked for a period: the ones that reach a latency tail.
const LONG_NS: u64 = 20_000;
/// Spacings are counted in steps of this size, and a phase window is this wide.
const STEP_NS: u64 = 100_000;
const WINDOW_NS: u64 = 500_000;

/// One spinning thread's stalls, the start of each long one (from `start`), and the time it ran.
fn spin(start: u64, seconds: u64) -> (Histogram<u64>, Vec<u64>, u64) {
    let mut stalls = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let end = start + seconds * 1_000_000_000;
    let mut last = now_ns();
    // When each long stall began; sized so that recording never allocates.
    let mut long = Vec::with_capacity(seconds as usize * 10_000);
    while last < end {
        let now = now_ns();
        if now - last >= STALL_NS {
            stalls.record(now - last).expect("within bounds");
            if now - last >= LONG_NS && long.len() < long.capacity() {
                long.push(last - start);
            }
        }
        last = now;
    }
    (stalls, long, last - start)
}

fn main() {
    let (seconds, threads) = (arg(0, 3) as u64, arg(1, 1));
    let start = now_ns();
    let runs: Vec<_> = std::thread::scope(|s| {
        let spinning: Vec<_> = (0..threads).map(|_| s.spawn(move || spin(start, seconds))).collect();
        spinning.into_iter().map(|t| t.join().expect("the thread ends")).collect()
    });
    let mut stalls = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let (mut long, mut ran) = (Vec::new(), 0);
    for (h, l, t) in runs {
        stalls.add(&h).expect("same bounds");
        long.extend(l);
        ran += t;
    }
    long.sort_unstable();
    // Per thread and second: the rates of one thread, whatever the number spinning.
    let elapsed = ran as f64 / 1e9;
    let stalled: u64 = stalls.iter_recorded().map(|v| v.value_iterated_to() * v.count_at_value()).sum();
    let per_second = |at_least_us: u64| {
        stalls
            .iter_recorded()
            .filter(|v| v.value_iterated_to() >= at_least_us * 1_000)
            .map(|v| v.count_at_value())
            .sum::<u64>() as f64
            / elapsed
    };
    let who =
        if threads == 1 { "a spinning thread".to_owned() } else { format!("{threads} threads spinning at once, each") };
    println!(
        "stalls of {who} over {:.1} s: per second {:.0} ≥ 10 µs, {:.0} ≥ 20 µs, {:.1} ≥ 50 µs, {:.2} ≥ 200 µs, {:.2} ≥ 1 ms; p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; {:.2}% of the time stopped",
        elapsed / threads as f64,
        per_second(10),
        per_second(20),
        per_second(50),
        per_second(200),
        per_second(1000),
        stalls.value_at_quantile(0.5) as f64 / 1e3,
        stalls.value_at_quantile(0.99) as f64 / 1e3,
        stalls.max() as f64 / 1e3,
        stalled as f64 / ran as f64 * 100.0
    );
    if let Some((period, share)) = period(&long) {
        println!(
            "stalls ≥ {} µs keep time: the most common spacing is {:.1} ms, and {:.0}% of them fall within the same {:.1} ms of every {:.1} ms",
            LONG_NS / 1_000,
            period as f64 / 1e6,
            share * 100.0,
            WINDOW_NS as f64 / 1e6,
            period as f64 / 1e6
        );
    }
}

/// The most common spacing between consecutive stalls (in steps of `STEP_NS`), and the share
/// of stalls in the fullest `WINDOW_NS`-wide window of their phase modulo that spacing: near
/// 1 when a timer stops the thread, near `WINDOW_NS / period` when stalls come at random.
fn period(starts: &[u64]) -> Option<(u64, f64)> {
    let mut spacings = std::collections::BTreeMap::<u64, usize>::new();
    for w in starts.windows(2) {
        *spacings.entry((w[1] - w[0] + STEP_NS / 2) / STEP_NS).or_default() += 1;
    }
    // The most common, the shortest of equals; a spacing under one step says nothing of a period.
    let (steps, _) = spacings.into_iter().filter(|(s, _)| *s > 0).max_by_key(|&(s, n)| (n, std::cmp::Reverse(s)))?;
    let period = steps * STEP_NS;
    let mut phases: Vec<u64> = starts.iter().map(|t| t % period).collect();
    phases.sort_unstable();
    // The window may wrap past the period: each phase is also counted one period later.
    let wrapped: Vec<u64> = phases.iter().copied().chain(phases.iter().map(|p| p + period)).collect();
    let (mut fullest, mut j) = (0, 0);
    for (i, &p) in phases.iter().enumerate() {
        while j < wrapped.len() && wrapped[j] < p + WINDOW_NS {
            j += 1;
        }
        fullest = fullest.max(j - i);
    }
    Some((period, fullest as f64 / phases.len() as f64))
}
