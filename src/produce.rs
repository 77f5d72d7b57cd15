//! `riskflow produce`: publishes a dataset directory to the Kafka input topics, as a trading
//! system would: reference data first (instruments, accounts, limits, in file order), then
//! market data and position deltas merged by event time. Each line is published verbatim
//! (bad lines too: they are the engine's to dead-letter), keyed so that a partition keeps
//! each key's records in order: ticks by instrument, deltas by account, reference records by
//! id. A line without a readable key is published without one.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use riskflow_connectors::kafka::publish::{PublishStats, Publisher};
use riskflow_dataflows::model::Kind;
use serde::Deserialize;

use crate::config::KafkaConfig;

pub struct ProduceOptions {
    pub dataset: PathBuf,
    pub kafka: KafkaConfig,
    /// Records per second; `None`: as fast as the producer takes them.
    pub rate: Option<f64>,
    pub progress: bool,
}

/// What was published.
#[derive(Debug, Default)]
pub struct ProduceReport {
    pub brokers: String,
    pub per_kind: Vec<(Kind, u64)>,
    pub stats: PublishStats,
    pub elapsed: Duration,
}

impl fmt::Display for ProduceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.per_kind.iter().map(|(_, n)| n).sum();
        let kinds: Vec<String> = self.per_kind.iter().map(|(k, n)| format!("{} {n}", k.topic())).collect();
        write!(
            f,
            "published {total} records to {} in {:.2} s ({:.0} records/s): {}; {} delivered, {} retried",
            self.brokers,
            self.elapsed.as_secs_f64(),
            total as f64 / self.elapsed.as_secs_f64().max(1e-9),
            kinds.join(", "),
            self.stats.delivered,
            self.stats.retried
        )
    }
}

/// The fields a line is keyed and ordered by, if it has them.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Probe<'a> {
    ts: Option<u64>,
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    instrument: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    account: Option<std::borrow::Cow<'a, str>>,
}

/// The key a record of `kind` is published under.
fn key_of(kind: Kind, line: &[u8]) -> (Option<Vec<u8>>, Option<u64>) {
    let Ok(p) = serde_json::from_slice::<Probe>(line) else { return (None, None) };
    let key = match kind {
        Kind::Tick => p.instrument,
        Kind::Delta => p.account,
        Kind::Instrument | Kind::Account | Kind::Limit => p.id,
    };
    (key.map(|k| k.as_bytes().to_vec()), p.ts)
}

/// The non-blank lines of one dataset file, each with its ordering time: its own `ts`, or
/// for a line without a readable one the time of the line before (so it keeps its place).
struct Lines {
    kind: Kind,
    reader: BufReader<File>,
    last_ts: u64,
    buf: Vec<u8>,
}

struct Line {
    kind: Kind,
    ts: u64,
    key: Option<Vec<u8>>,
    raw: Vec<u8>,
}

impl Lines {
    fn open(dir: &Path, kind: Kind) -> anyhow::Result<Option<Lines>> {
        let path = dir.join(kind.file_name());
        if !path.exists() {
            return Ok(None);
        }
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Some(Lines { kind, reader: BufReader::with_capacity(1 << 20, file), last_ts: 0, buf: Vec::new() }))
    }

    fn next_line(&mut self) -> anyhow::Result<Option<Line>> {
        loop {
            self.buf.clear();
            if self.reader.read_until(b'\n', &mut self.buf)? == 0 {
                return Ok(None);
            }
            let raw = self.buf.trim_ascii();
            if raw.is_empty() {
                continue;
            }
            let (key, ts) = key_of(self.kind, raw);
            if let Some(ts) = ts {
                self.last_ts = ts;
            }
            return Ok(Some(Line { kind: self.kind, ts: self.last_ts, key, raw: raw.to_vec() }));
        }
    }
}

/// Publishes the dataset; fails if a message cannot be delivered.
pub fn produce(opts: &ProduceOptions) -> anyhow::Result<ProduceReport> {
    let dir = &opts.dataset;
    if !dir.join(Kind::Instrument.file_name()).exists() {
        anyhow::bail!("{} is not a dataset directory (no {})", dir.display(), Kind::Instrument.file_name());
    }
    let topics = &opts.kafka.topics;
    let mut publisher = Publisher::new(&opts.kafka.client_settings())?;
    let started = Instant::now();
    let mut report = ProduceReport { brokers: opts.kafka.brokers.clone(), ..ProduceReport::default() };
    let mut counts = [0u64; 5];
    let slot = |k: Kind| Kind::index(k);
    let mut progress = Progress::new(opts.progress);
    let mut sent: u64 = 0;
    let mut publish = |line: Line, publisher: &mut Publisher| -> anyhow::Result<()> {
        if let Some(rate) = opts.rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                publisher.poll()?;
                std::thread::sleep(due - now);
            }
        }
        publisher.send(topics.input(line.kind), line.key.as_deref(), &line.raw)?;
        sent += 1;
        counts[slot(line.kind)] += 1;
        if sent.is_multiple_of(1024) {
            publisher.poll()?;
            progress.show(sent, started);
        }
        Ok(())
    };
    for kind in [Kind::Instrument, Kind::Account, Kind::Limit] {
        if let Some(mut lines) = Lines::open(dir, kind)? {
            while let Some(line) = lines.next_line()? {
                publish(line, &mut publisher)?;
            }
        }
    }
    let mut streams = Vec::new();
    for kind in [Kind::Tick, Kind::Delta] {
        if let Some(mut lines) = Lines::open(dir, kind)? {
            let head = lines.next_line()?;
            streams.push((lines, head));
        }
    }
    loop {
        // The earliest head; ticks before deltas at equal times, as the replay reads them.
        let pick = streams.iter().enumerate().filter_map(|(i, (_, head))| head.as_ref().map(|h| (h.ts, i))).min();
        let Some((_, i)) = pick else { break };
        let (lines, head) = &mut streams[i];
        let next = lines.next_line()?;
        let line = std::mem::replace(head, next).expect("picked a head");
        publish(line, &mut publisher)?;
    }
    progress.finish();
    publisher.flush(opts.kafka.timeout.max(Duration::from_secs(60))).context("delivering the dataset")?;
    report.elapsed = started.elapsed();
    report.stats = publisher.stats();
    report.per_kind = [Kind::Instrument, Kind::Account, Kind::Limit, Kind::Tick, Kind::Delta]
        .into_iter()
        .map(|k| (k, counts[slot(k)]))
        .collect();
    Ok(report)
}

trait KindIndex {
    fn index(self) -> usize;
}

impl KindIndex for Kind {
    fn index(self) -> usize {
        match self {
            Kind::Instrument => 0,
            Kind::Account => 1,
            Kind::Limit => 2,
            Kind::Tick => 3,
            Kind::Delta => 4,
        }
    }
}

/// Records and rate on a terminal.
struct Progress {
    on: bool,
    last: Instant,
}

impl Progress {
    fn new(on: bool) -> Progress {
        Progress { on: on && std::io::IsTerminal::is_terminal(&std::io::stderr()), last: Instant::now() }
    }

    fn show(&mut self, sent: u64, started: Instant) {
        if self.on && self.last.elapsed() >= Duration::from_millis(500) {
            self.last = Instant::now();
            let rate = sent as f64 / started.elapsed().as_secs_f64();
            eprint!("\r  {sent} records published  {:.0} records/s   ", rate);
        }
    }

    fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_kind() {
        let tick = br#"{"ts":5,"instrument":"SPX","price":1}"#;
        assert_eq!(key_of(Kind::Tick, tick), (Some(b"SPX".to_vec()), Some(5)));
        let delta = br#"{"id":"F-1","ts":7,"account":"ACC-1","instrument":"SPX","qty":1}"#;
        assert_eq!(key_of(Kind::Delta, delta), (Some(b"ACC-1".to_vec()), Some(7)));
        assert_eq!(key_of(Kind::Instrument, br#"{"id":"SPX","asset_class":"equity"}"#).0, Some(b"SPX".to_vec()));
        assert_eq!(key_of(Kind::Delta, b"{not json"), (None, None));
    }
}
