//! How a worker's event time advances on Kafka: its watermark.
//!
//! Each partition of market data or position deltas this worker reads keeps the largest
//! event time it delivered. The watermark is the smallest of those over the partitions that
//! still *hold* it, minus the allowed lateness:
//!
//! ```text
//!   watermark = max(previous, min over holding partitions p of max_ts(p) − lateness)
//! ```
//!
//! A partition holds the watermark unless it is finished (a finite run read it to its end) or
//! idle: caught up with its high watermark and silent for the configured idle time. A holding
//! partition that has delivered nothing yet holds the watermark where it is. When no partition
//! holds it (all idle), it moves to the largest event time seen minus the lateness, so a quiet
//! market still closes its snapshots. The watermark never goes back.
//!
//! A record whose epoch is behind the dataflow time reached is *late*: it is applied at the
//! current time (so it lands in the next snapshot, not its own) and counted. With partitions
//! in event-time order and no partition going idle, no record is late, and a Kafka run's
//! snapshots equal those of a replay of the same records.

use std::time::{Duration, Instant};

use riskflow_dataflows::model::Ts;

#[derive(Clone, Debug)]
struct Part {
    max_ts: Option<Ts>,
    last_message: Instant,
    caught_up: bool,
    finished: bool,
}

/// The event-time clock of one worker's data partitions (indexes `0..n`).
#[derive(Clone, Debug)]
pub struct EventClock {
    parts: Vec<Part>,
    lateness: Ts,
    idle: Duration,
    watermark: Ts,
}

impl EventClock {
    pub fn new(partitions: usize, lateness: Ts, idle: Duration, now: Instant) -> EventClock {
        let part = Part { max_ts: None, last_message: now, caught_up: false, finished: false };
        EventClock { parts: vec![part; partitions], lateness, idle, watermark: 0 }
    }

    /// Partition `i` delivered a record, with its event time if it has one (a record that did
    /// not decode has none but still shows the partition is alive).
    pub fn observe(&mut self, i: usize, ts: Option<Ts>, now: Instant) {
        let p = &mut self.parts[i];
        p.last_message = now;
        if let Some(ts) = ts {
            p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
        }
    }

    /// Whether partition `i` has been read up to its high watermark.
    pub fn set_caught_up(&mut self, i: usize, caught_up: bool) {
        self.parts[i].caught_up = caught_up;
    }

    /// Partition `i` was read to the end of a finite run: it holds nothing back any more.
    pub fn finish(&mut self, i: usize) {
        self.parts[i].finished = true;
    }

    /// Whether every partition is finished.
    pub fn all_finished(&self) -> bool {
        self.parts.iter().all(|p| p.finished)
    }

    /// The largest event time any partition delivered.
    pub fn max_ts(&self) -> Option<Ts> {
        self.parts.iter().filter_map(|p| p.max_ts).max()
    }

    /// Whether partition `i` currently holds the watermark back.
    pub fn holds(&self, i: usize, now: Instant) -> bool {
        let p = &self.parts[i];
        let idle = p.caught_up && now.duration_since(p.last_message) >= self.idle;
        !(p.finished || idle)
    }

    /// The watermark at `now`: no record with an event time below it is expected any more.
    pub fn watermark(&mut self, now: Instant) -> Ts {
        let mut least: Option<Ts> = None;
        let mut blocked = false;
        for (i, p) in self.parts.iter().enumerate() {
            if !self.holds(i, now) {
                continue;
            }
            match p.max_ts {
                Some(ts) => least = Some(least.map_or(ts, |l| l.min(ts))),
                None => blocked = true,
            }
        }
        let candidate = if blocked {
            None
        } else if least.is_some() {
            least
        } else {
            self.max_ts()
        };
        if let Some(c) = candidate {
            self.watermark = self.watermark.max(c.saturating_sub(self.lateness));
        }
        self.watermark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_slowest_partition_holds_the_watermark() {
        let t0 = Instant::now();
        let mut c = EventClock::new(2, 10, 5 * S, t0);
        c.observe(0, Some(1_000), t0);
        assert_eq!(c.watermark(t0), 0, "partition 1 has delivered nothing");
        c.observe(1, Some(400), t0);
        assert_eq!(c.watermark(t0), 390, "min(1000, 400) − lateness");
        c.observe(1, Some(2_000), t0);
        assert_eq!(c.watermark(t0), 990);
        c.observe(0, Some(500), t0);
        assert_eq!(c.watermark(t0), 990, "an older record does not move it back");
    }

    #[test]
    fn idle_partitions_stop_holding_only_when_caught_up() {
        let t0 = Instant::now();
        let mut c = EventClock::new(2, 0, 5 * S, t0);
        c.observe(0, Some(100), t0);
        c.observe(1, Some(900), t0);
        let later = t0 + 6 * S;
        assert_eq!(c.watermark(later), 100, "silent but not caught up: still holds");
        c.set_caught_up(0, true);
        assert_eq!(c.watermark(later), 900, "caught up and silent: idle");
        c.observe(0, Some(150), later);
        assert!(c.holds(0, later), "a new record makes it hold again");
        assert_eq!(c.watermark(later), 900, "but the watermark never goes back");
    }

    #[test]
    fn all_idle_moves_to_the_largest_time_seen() {
        let t0 = Instant::now();
        let mut c = EventClock::new(3, 50, S, t0);
        c.observe(0, Some(1_000), t0);
        c.observe(1, Some(3_000), t0);
        for i in 0..3 {
            c.set_caught_up(i, true);
        }
        assert_eq!(c.watermark(t0), 0, "partition 2 has delivered nothing and is not idle yet");
        assert_eq!(c.watermark(t0 + 2 * S), 2_950);
    }

    #[test]
    fn finished_partitions_hold_nothing() {
        let t0 = Instant::now();
        let mut c = EventClock::new(2, 0, 60 * S, t0);
        c.observe(0, Some(700), t0);
        c.finish(1);
        assert!(!c.all_finished());
        assert_eq!(c.watermark(t0), 700);
        c.finish(0);
        assert!(c.all_finished());
        assert_eq!(c.max_ts(), Some(700));
    }
}
