//! `riskflow run --kafka`: the Kafka source driver, worker 0's output sink and its durable
//! progress (docs/kafka.md).
//!
//! ```text
//!  KafkaSource (each worker its partitions) ─ records at their own epoch ─> UnorderedInput ─> engine
//!        │ EventClock: watermark → input time            ─ dead letters ───> UnorderedInput ─> outputs
//!        └ PartitionLog: covered offsets ─ ProgressMark ──> UnorderedInput ─exchange(→0)─> MarkCollector
//!  worker 0: Durability: snapshot complete ∧ outputs delivered ∧ marks passed ─> _offsets.json, commit
//! ```
//!
//! Records enter the dataflow at once, at the epoch of their own event time (an unordered
//! input holds a capability at the worker's input time and sends at later times from it), so
//! the live path never waits for the watermark; only the input time, and with it snapshots,
//! follows the watermark.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use riskflow_connectors::kafka::clock::EventClock;
use riskflow_connectors::kafka::progress::{Durable, OffsetBook, PartitionLog, ProgressMark, ALL_READ};
use riskflow_connectors::kafka::publish::{KafkaOutputs, OutputStats, Published, Publisher};
use riskflow_connectors::kafka::source::KafkaSource;
use riskflow_connectors::kafka::{is_reference, Topics};
use riskflow_dataflows::clock::now_ns;
use riskflow_dataflows::event::{DeadLetter, Envelope, Event, Origin};
use riskflow_dataflows::model::Ts;
use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::unordered_input::{UnorderedHandle, UnorderedInput};
use timely::dataflow::operators::ActivateCapability;
use timely::dataflow::{Scope, StreamVec};

use crate::run::RunOptions;
use crate::summary::Counts;

/// How a Kafka run ends.
#[derive(Clone, Debug, Default)]
pub struct KafkaRun {
    /// Read each partition up to its high watermark at start, then finish (exit 0).
    pub until_caught_up: bool,
}

/// One unordered input: a handle and the capability at the worker's input time.
struct Input<D: 'static> {
    handle: UnorderedHandle<Ts, D>,
    cap: ActivateCapability<Ts>,
}

impl<D: 'static> Input<D> {
    fn send(&mut self, time: Ts, data: &mut Vec<D>) {
        if !data.is_empty() {
            let cap = self.cap.delayed(&time);
            self.handle.activate().session(&cap).give_container(data);
            data.clear();
        }
    }
}

/// The dataflow inputs a Kafka worker feeds.
pub struct Feed {
    events: Input<Envelope>,
    dead: Input<DeadLetter>,
    marks: Input<ProgressMark>,
}

impl Feed {
    fn time(&self) -> Ts {
        *self.events.cap.time()
    }

    fn advance_to(&mut self, time: Ts) {
        self.events.cap.downgrade(&time);
        self.dead.cap.downgrade(&time);
        self.marks.cap.downgrade(&time);
    }
}

/// The streams of a Kafka source: events, dead letters, and progress marks (already
/// collected on worker 0 into `marks`).
pub fn inputs<'scope>(
    scope: Scope<'scope, Ts>,
    marks: Rc<RefCell<MarkCollector>>,
) -> (Feed, StreamVec<'scope, Ts, Envelope>, StreamVec<'scope, Ts, DeadLetter>) {
    let ((handle, cap), events) = scope.new_unordered_input();
    let ((dead_handle, dead_cap), dead) = scope.new_unordered_input();
    let ((marks_handle, marks_cap), mark_stream) = scope.new_unordered_input::<ProgressMark>();
    mark_stream.sink(Exchange::new(|_: &ProgressMark| 0), "ProgressMarks", move |(input, frontier)| {
        let mut collector = marks.borrow_mut();
        input.for_each(|_, data| {
            for mark in data.drain(..) {
                collector.book.add(mark);
            }
        });
        collector.frontier = frontier.frontier().iter().min().copied();
    });
    let feed = Feed {
        events: Input { handle, cap },
        dead: Input { handle: dead_handle, cap: dead_cap },
        marks: Input { handle: marks_handle, cap: marks_cap },
    };
    (feed, events, dead)
}

/// Worker 0's progress marks and how far they are complete.
#[derive(Default)]
pub struct MarkCollector {
    book: OffsetBook,
    /// No mark at a time before this can arrive any more (`None`: none at all).
    frontier: Option<Ts>,
}

impl MarkCollector {
    fn passed(&self, as_of: Ts) -> bool {
        self.frontier.is_none_or(|f| f > as_of)
    }
}

/// What the restart of a Kafka run found in its output directory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Resume {
    /// The durable snapshot it resumed from (`None`: a fresh output directory).
    pub as_of: Option<Ts>,
    /// Messages already on the output topics.
    pub published: u64,
}

/// Kafka figures for the run summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KafkaSummary {
    pub brokers: String,
    pub partitions: usize,
    pub resume: Resume,
    /// Records read again to rebuild state (below the committed offsets of a previous run).
    pub reread: u64,
    /// Records between the last offset read and the high watermark, at the end.
    pub lag: i64,
    pub outputs: OutputStats,
    /// The durable snapshot at the end, and offset commits the broker refused.
    pub durable_as_of: Option<Ts>,
    pub commit_errors: u64,
    /// From worker 0, which publishes the outputs and records durable progress.
    #[serde(skip)]
    pub primary: bool,
}

impl KafkaSummary {
    /// Adds another worker's figures; worker 0's (`primary`) carry the outputs and durability.
    pub fn merge(&mut self, other: KafkaSummary) {
        self.partitions += other.partitions;
        self.reread += other.reread;
        self.lag += other.lag;
        if other.primary {
            self.brokers = other.brokers;
            self.resume = other.resume;
            self.outputs = other.outputs;
            self.durable_as_of = other.durable_as_of;
            self.commit_errors = other.commit_errors;
            self.primary = true;
        }
    }
}

/// What a restart finds: what the output topics hold (nothing on a first run), and its horizon,
/// the time by which the recomputed state has passed every event they hold and the durable
/// point. Up to it, events already on the topics are not published again; at it, the limits
/// report where they stand and the topics are corrected where they say otherwise.
#[derive(Debug, Default)]
pub struct Restart {
    pub published: Published,
    pub horizon: Option<Ts>,
}

impl Restart {
    /// Reads the durable record of a previous run in `out` and, if there is one, the output
    /// topics. Every process of a cluster reads them: each one's limits need the horizon.
    pub fn read(opts: &RunOptions) -> anyhow::Result<Restart> {
        let k = &opts.config.kafka;
        let Some(previous) = Durable::read(&opts.out)? else { return Ok(Restart::default()) };
        let published = Published::read(&k.client_settings(), &k.topics, k.timeout)?;
        let epoch = opts.config.engine.epoch.as_nanos() as Ts;
        let after = (previous.as_of > 0).then_some(previous.as_of);
        let held = published.states.max_ts.map(|ts| ts.div_ceil(epoch) * epoch);
        Ok(Restart { horizon: after.max(held), published })
    }
}

/// Worker 0's durable progress: moves `_offsets.json` forward when a snapshot is complete,
/// its output events delivered and every worker's progress marks in.
pub struct Durability {
    out: PathBuf,
    /// The `as_of` of the last complete snapshot (0: none), set by the Parquet writer thread.
    pub complete: Arc<AtomicU64>,
    pub marks: Rc<RefCell<MarkCollector>>,
    pub outputs: Rc<RefCell<KafkaOutputs>>,
    durable: Durable,
    resume: Resume,
    commit_errors: u64,
}

impl Durability {
    /// Opens worker 0's side of a Kafka run: reads the durable record of a previous run in
    /// `out` (writing an empty one if there is none, so that a restart knows it is one), and
    /// what the output topics already hold if it is a restart.
    pub fn open(opts: &RunOptions, complete: Arc<AtomicU64>, restart: Restart) -> anyhow::Result<Durability> {
        let k = &opts.config.kafka;
        let settings = k.client_settings();
        let previous = Durable::read(&opts.out)?;
        let Restart { published, horizon } = restart;
        let durable = previous.clone().unwrap_or_default();
        if previous.is_none() {
            durable.write(&opts.out)?;
        }
        let resume = Resume { as_of: (durable.as_of > 0).then_some(durable.as_of), published: published.messages };
        if let Some(as_of) = resume.as_of {
            tracing::info!(as_of, published = published.messages, "resuming after the durable snapshot");
        }
        let publisher = Publisher::new(&settings)?;
        let outputs = KafkaOutputs::new(publisher, k.topics.clone(), resume.as_of, horizon, published);
        Ok(Durability {
            out: opts.out.clone(),
            complete,
            marks: Rc::default(),
            outputs: Rc::new(RefCell::new(outputs)),
            durable,
            resume,
            commit_errors: 0,
        })
    }

    /// The durable snapshot a restart resumes from.
    pub fn resumed_as_of(&self) -> Option<Ts> {
        self.resume.as_of
    }

    /// Serves delivery reports and records a new durable point if there is one.
    fn advance(&mut self, source: Option<&KafkaSource>) -> anyhow::Result<()> {
        self.outputs.borrow_mut().poll()?;
        let complete = self.complete.load(Ordering::Acquire);
        tracing::trace!(
            complete,
            durable = self.durable.as_of,
            marks = ?self.marks.borrow().frontier,
            delivered = self.outputs.borrow().delivered_through(complete),
            "durable point"
        );
        if complete <= self.durable.as_of
            || !self.marks.borrow().passed(complete)
            || !self.outputs.borrow().delivered_through(complete)
        {
            return Ok(());
        }
        let offsets = self.marks.borrow().book.at(complete);
        self.record(complete, offsets, source)
    }

    fn record(
        &mut self,
        as_of: Ts,
        offsets: Vec<riskflow_connectors::kafka::progress::CommittedOffset>,
        source: Option<&KafkaSource>,
    ) -> anyhow::Result<()> {
        // Offsets never move back (a partition without marks keeps its previous offset).
        let mut merged: BTreeMap<(String, i32), i64> =
            self.durable.offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.offset)).collect();
        for o in offsets {
            let e = merged.entry((o.topic, o.partition)).or_insert(o.offset);
            *e = (*e).max(o.offset);
        }
        self.durable = Durable {
            as_of,
            offsets: merged
                .into_iter()
                .map(|((topic, partition), offset)| riskflow_connectors::kafka::progress::CommittedOffset {
                    topic,
                    partition,
                    offset,
                })
                .collect(),
        };
        self.durable.write(&self.out)?;
        self.marks.borrow_mut().book.prune(as_of);
        tracing::debug!(as_of, partitions = self.durable.offsets.len(), "durable progress recorded");
        if let Some(source) = source {
            let offsets: Vec<_> =
                self.durable.offsets.iter().map(|o| (o.topic.clone(), o.partition, o.offset)).collect();
            if let Err(e) = source.commit(&offsets) {
                self.commit_errors += 1;
                tracing::warn!(error = %e, "offset commit failed (progress is kept in _offsets.json)");
            }
        }
        Ok(())
    }

    /// At the end of a finite run, after the dataflow has finished: delivers every output
    /// (failing loudly if any is not delivered) and records the final durable point.
    pub fn finish(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.outputs.borrow_mut().flush(timeout).context("delivering the output events")?;
        let complete = self.complete.load(Ordering::Acquire);
        if complete > self.durable.as_of {
            let offsets = self.marks.borrow().book.at(ALL_READ);
            self.record(complete, offsets, None)?;
        }
        Ok(())
    }

    pub fn summary(&self) -> KafkaSummary {
        KafkaSummary {
            resume: self.resume.clone(),
            outputs: self.outputs.borrow().stats(),
            durable_as_of: (self.durable.as_of > 0).then_some(self.durable.as_of),
            commit_errors: self.commit_errors,
            primary: true,
            ..KafkaSummary::default()
        }
    }
}

/// The topic names of input kinds, for dead letters.
pub fn topic_namer(topics: &Topics) -> impl Fn(riskflow_dataflows::model::Kind) -> String + Clone + 'static {
    let topics = topics.clone();
    move |kind| topics.input(kind).to_owned()
}

/// Skips rewriting snapshots a previous run already completed (at or before `through`).
pub fn already_written(out: &Path, as_of: Ts, through: Option<Ts>) -> bool {
    through.is_some_and(|t| as_of <= t) && out.join("_snapshots").join(as_of.to_string()).join("_SUCCESS").exists()
}

/// Feeds this worker's partitions into the dataflow until a finite run has read them all
/// (or forever), and returns what it read.
#[allow(clippy::too_many_arguments)]
pub fn drive_kafka(
    worker: &mut timely::worker::Worker,
    opts: &RunOptions,
    run: &KafkaRun,
    mut feed: Feed,
    pacing: &crate::run::Pacing,
    mut durability: Option<&mut Durability>,
    summary: &mut KafkaSummary,
) -> anyhow::Result<Counts> {
    let (index, peers) = (worker.index(), worker.peers());
    let k = &opts.config.kafka;
    let settings = k.client_settings();
    let finite = run.until_caught_up;
    let mut source = KafkaSource::open(&settings, &k.topics, index, peers, finite, k.timeout)
        .with_context(|| format!("connecting to {}", k.brokers))?;
    let epoch = opts.config.engine.epoch.as_nanos() as Ts;
    let interval = opts.config.risk.snapshot_interval.as_nanos() as Ts;
    let batch = opts.config.engine.batch;
    let committed = Durable::read(&opts.out)?.unwrap_or_default();

    // Data partitions have a clock slot; reference partitions carry no event time.
    let parts = source.partitions().to_vec();
    let mut slot = Vec::with_capacity(parts.len());
    let mut data = 0;
    for p in &parts {
        slot.push((!is_reference(p.kind)).then(|| {
            data += 1;
            data - 1
        }));
    }
    let mut clock = EventClock::new(data, k.lateness.as_nanos() as Ts, k.idle, Instant::now());
    for (p, s) in parts.iter().zip(&slot) {
        if let (Some(s), true) = (s, p.done) {
            clock.finish(*s);
        }
    }
    let mut logs: Vec<PartitionLog> = parts.iter().map(|p| PartitionLog::new(p.start)).collect();
    let reread_below: Vec<i64> = parts.iter().map(|p| committed.offset(&p.topic, p.partition).unwrap_or(0)).collect();
    summary.partitions = parts.len();
    tracing::info!(worker = index, partitions = parts.len(), finite, "kafka source open");

    let mut counts = Counts::default();
    let mut events: BTreeMap<Ts, Vec<Envelope>> = BTreeMap::new();
    let mut dead: Vec<DeadLetter> = Vec::new();
    if index == 0 {
        for limit in &opts.config.limits.rules {
            counts.limits += 1;
            let event = Event::Limit(limit.clone());
            events.entry(0).or_default().push(Envelope { event, origin: Origin::Engine, ingest_ns: now_ns() });
        }
    }

    let mut progress = crate::run::Progress::new(opts.progress && index == 0);
    let mut polled: Vec<(usize, riskflow_connectors::replay::Record)> = Vec::with_capacity(batch);
    let mut last_refresh = Instant::now();
    let mut reference_phase = true;
    source.start_reference()?;
    let mut last_message = Instant::now();
    let mut wait = Duration::ZERO;
    loop {
        if reference_phase && source.reference_read() {
            reference_phase = false;
            source.start_all()?;
        }
        let n = source.poll(batch, wait, |i, record| polled.push((i, record)))?;
        // Wait briefly for data only when there was none, so that a quiet source neither spins
        // nor keeps the other workers waiting.
        wait = if n == 0 { Duration::from_millis(1) } else { Duration::ZERO };
        let now = Instant::now();
        if n > 0 {
            last_message = now;
        } else if reference_phase && now.duration_since(last_message) > k.timeout {
            anyhow::bail!("reference topics: no message for {:?} before their high watermark", k.timeout);
        }
        let time = feed.time();
        let ingest_ns = now_ns();
        for (i, record) in polled.drain(..) {
            let offset = match &record {
                Ok((_, Origin::Kafka { offset, .. }))
                | Err(DeadLetter { origin: Origin::Kafka { offset, .. }, .. }) => *offset,
                _ => unreachable!("kafka records carry a kafka origin"),
            };
            if offset < reread_below[i] {
                summary.reread += 1;
            }
            match record {
                Ok((event, origin)) => {
                    let ts = event.ts();
                    if let (Some(s), Some(ts)) = (slot[i], ts) {
                        clock.observe(s, Some(ts), now);
                    }
                    let mut at = ts.map_or(time, |ts| ts.div_ceil(epoch) * epoch);
                    if at < time {
                        counts.late += 1;
                        at = time;
                    }
                    counts.count(&event);
                    logs[i].sent(at, offset);
                    events.entry(at).or_default().push(Envelope { event, origin, ingest_ns });
                }
                Err(letter) => {
                    if let Some(s) = slot[i] {
                        clock.observe(s, None, now);
                    }
                    counts.rejected += 1;
                    logs[i].sent(time, offset);
                    dead.push(letter);
                }
            }
        }
        for (at, mut batch) in std::mem::take(&mut events) {
            feed.events.send(at, &mut batch);
        }
        feed.dead.send(time, &mut dead);

        if now.duration_since(last_refresh) >= Duration::from_millis(100) || source.finished() {
            last_refresh = now;
            source.refresh_watermarks();
            for (p, s) in source.partitions().iter().zip(&slot) {
                if let Some(s) = *s {
                    clock.set_caught_up(s, p.next >= p.high);
                    if p.done {
                        clock.finish(s);
                    }
                }
            }
        }
        if !reference_phase {
            let next = clock.watermark(now).div_ceil(epoch) * epoch;
            if next > time {
                advance(&mut feed, &mut logs, &parts, time, next, interval);
            }
        }
        worker.step();
        pacing.wait(worker, feed.time());
        if let Some(d) = durability.as_deref_mut() {
            d.advance(Some(&source))?;
        }
        let lag: i64 = source.partitions().iter().map(|p| p.lag()).sum();
        progress.show(&counts, feed.time(), Some(lag));
        if source.finished() {
            break;
        }
    }

    // Every partition is read: the last marks, and the end of input at the last epoch read.
    let time = feed.time();
    let mut marks: Vec<ProgressMark> = parts
        .iter()
        .zip(&logs)
        .map(|(p, log)| ProgressMark {
            boundary: ALL_READ,
            topic: p.topic.clone(),
            partition: p.partition,
            offset: log.covered(ALL_READ),
        })
        .collect();
    feed.marks.send(time, &mut marks);
    let last = clock.max_ts().unwrap_or(0).div_ceil(epoch) * epoch;
    let end = Envelope { event: Event::End { max_ts: last }, origin: Origin::Engine, ingest_ns: now_ns() };
    feed.events.send(time.max(last), &mut vec![end]);
    summary.lag = source.partitions().iter().map(|p| p.lag()).sum();
    progress.finish();
    drop(feed);
    Ok(counts)
}

/// Moves the worker's input time from `from` to `to`, first sending the progress marks of
/// the last snapshot boundary it passes.
fn advance(
    feed: &mut Feed,
    logs: &mut [PartitionLog],
    parts: &[riskflow_connectors::kafka::source::SourcePartition],
    from: Ts,
    to: Ts,
    interval: Ts,
) {
    let boundary = (to - 1) / interval * interval;
    if boundary >= from {
        let mut marks: Vec<ProgressMark> = parts
            .iter()
            .zip(logs.iter_mut())
            .map(|(p, log)| {
                let offset = log.covered(boundary);
                log.prune(boundary);
                ProgressMark { boundary, topic: p.topic.clone(), partition: p.partition, offset }
            })
            .collect();
        feed.marks.send(from, &mut marks);
    }
    feed.advance_to(to);
}

/// The Kafka lines of the run summary.
pub fn fmt_summary(f: &mut std::fmt::Formatter<'_>, k: &KafkaSummary) -> std::fmt::Result {
    let o = &k.outputs;
    writeln!(f)?;
    writeln!(
        f,
        "kafka          {} partitions from {}; lag at end {}; {} records re-read below committed offsets",
        k.partitions, k.brokers, k.lag, k.reread
    )?;
    if let Some(as_of) = k.resume.as_of {
        writeln!(
            f,
            "resumed        after durable snapshot {} ({} messages already on the output topics)",
            crate::summary::format_ts(as_of),
            k.resume.published
        )?;
    }
    write!(
        f,
        "published      {} delivered of {} sent to the output topics (dead letters to the dead-letter topic); \
         {} retried, {} failed, {} not published again, {} corrections; durable through {}; {} commit errors",
        o.publish.delivered,
        o.publish.sent,
        o.publish.retried,
        o.publish.failed,
        o.suppressed,
        o.corrected,
        k.durable_as_of.map_or("-".to_owned(), crate::summary::format_ts),
        k.commit_errors
    )
}

/// Reads every input topic from its beginning up to the high watermark at start (the messages
/// a finite run consumes) into `dir` as a replay dataset, for `riskflow recon --kafka`:
/// reference records as they come, ticks and deltas in event-time order (by partition and
/// offset on a tie). Messages that do not decode are left out, as the engine dead-letters
/// them. Returns the number of records written.
pub fn dump_inputs(config: &crate::config::Config, dir: &Path) -> anyhow::Result<usize> {
    use riskflow_connectors::kafka::source::KafkaSource;
    use riskflow_dataflows::event::Event;
    use riskflow_dataflows::model::Kind;
    let k = &config.kafka;
    let mut source = KafkaSource::open(&k.client_settings(), &k.topics, 0, 1, true, k.timeout)?;
    source.start_all()?;
    let mut lines: Vec<(Kind, Ts, i32, i64, String)> = Vec::new();
    while !source.finished() {
        source.poll(10_000, Duration::from_millis(200), |_, record| {
            let Ok((event, riskflow_dataflows::event::Origin::Kafka { kind, partition, offset })) = record else {
                return;
            };
            let json = match &event {
                Event::Instrument(x) => serde_json::to_string(x),
                Event::Account(x) => serde_json::to_string(x),
                Event::Limit(x) => serde_json::to_string(x),
                Event::Tick(x) => serde_json::to_string(x),
                Event::Delta(x) => serde_json::to_string(x),
                Event::End { .. } => return,
            };
            let ts = event.ts().unwrap_or(0);
            lines.push((kind, ts, partition, offset, json.expect("records serialise")));
        })?;
    }
    lines.sort_by_key(|(kind, ts, partition, offset, _)| (*kind as u8, *ts, *partition, *offset));
    std::fs::create_dir_all(dir)?;
    let mut files: std::collections::HashMap<Kind, String> = std::collections::HashMap::new();
    for kind in Topics::INPUTS {
        files.insert(kind, String::new());
    }
    for (kind, _, _, _, json) in &lines {
        let text = files.get_mut(kind).expect("every kind");
        text.push_str(json);
        text.push('\n');
    }
    for (kind, text) in files {
        let path = dir.join(kind.file_name());
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(lines.len())
}
