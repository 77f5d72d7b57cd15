//! `riskflow run`: wires a source into the dataflow and the dataflow into its sinks, then
//! drives time. The source is a replay of files ([`drive_replay`]) or Kafka
//! ([`crate::kafka_run::drive_kafka`]); the outputs go to files or topics through one sink.
//!
//! ```text
//!  Replay or Kafka (each worker its share) ─ Envelope ─┬> book ─ live ─> probe, latency histogram
//!                       │                     │         │      └> limits ─ events ─> Outputs: risk-breaches, risk-actions
//!                       │                     └ limit definitions ─┘           │
//!                       │                               ├ snapshot parts ──────┴─> assemble ─> Parquet + summary
//!                       └─ DeadLetter ──────────────────┴ dead ───────────────────> Outputs: dead letters (worker 0)
//! ```

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use riskflow_connectors::output::{JsonlOutputs, OutTopic, Output, OutputSink};
use riskflow_connectors::parquet::{snapshot_tables, SnapshotWriter};
use riskflow_connectors::replay::Replay;
use riskflow_dataflows::book::{BookConfig, BookStats};
use riskflow_dataflows::clock::now_ns;
use riskflow_dataflows::engine::{engine, EngineConfig};
use riskflow_dataflows::event::{DeadLetter, Envelope, Event, Origin};
use riskflow_dataflows::exposure::Ccy;
use riskflow_dataflows::limits::{LimitEvent, LimitState, LimitsConfig};
use riskflow_dataflows::model::Kind;
use riskflow_dataflows::model::Ts;
use riskflow_dataflows::snapshot::{collect_snapshots, Collected, Snapshot, SnapshotPart};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle, StreamVec};

use crate::config::Config;
use crate::kafka_run::{Durability, KafkaRun, KafkaSummary};
use crate::summary::{Counts, Latencies, Summary};

/// Where a run reads from and how it is laid out over workers and processes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config: Config,
    pub replay: PathBuf,
    pub out: PathBuf,
    /// Timely processes in the cluster, this process's index, and their addresses.
    pub processes: usize,
    pub process: usize,
    pub hosts: Vec<String>,
    pub progress: bool,
    /// Read Kafka (`config.kafka`) instead of replaying `replay`.
    pub kafka: Option<KafkaRun>,
}

impl RunOptions {
    /// What the run reads, for the summary.
    pub fn source_name(&self) -> String {
        match &self.kafka {
            Some(_) => format!("kafka://{}", self.config.kafka.brokers),
            None => self.replay.display().to_string(),
        }
    }
}

/// What the summary needs of the snapshots: the last one, the limit events of all, the count.
#[derive(Default)]
pub struct Kept {
    pub count: usize,
    pub last: Option<Arc<Snapshot>>,
    pub breaches: Vec<riskflow_dataflows::limits::BreachEvent>,
    pub actions: usize,
    pub regimes: Vec<riskflow_dataflows::analytics::RegimeEvent>,
}

impl Kept {
    fn add(&mut self, snap: Arc<Snapshot>) {
        self.count += 1;
        self.breaches.extend(snap.breaches.iter().cloned());
        self.actions += snap.actions.len();
        if self.last.as_ref().is_none_or(|l| l.as_of < snap.as_of) {
            self.last = Some(snap);
        }
    }

    fn merge(&mut self, other: Kept) {
        self.count += other.count;
        self.breaches.extend(other.breaches);
        self.actions += other.actions;
        self.regimes.extend(other.regimes);
        if let Some(snap) = other.last {
            if self.last.as_ref().is_none_or(|l| l.as_of < snap.as_of) {
                self.last = Some(snap);
            }
        }
    }
}

/// What one worker hands back when the dataflow is done.
struct WorkerResult {
    counts: Counts,
    book: BookStats,
    limits: Vec<(String, LimitState, f64)>,
    latency: Histogram<u64>,
    breach_latency: Histogram<u64>,
    snapshots: Kept,
    dead_letters: u64,
    kafka: Option<KafkaSummary>,
}

fn communication(opts: &RunOptions) -> timely::CommunicationConfig {
    let workers = opts.config.engine.workers;
    if opts.processes > 1 {
        let addresses = if opts.hosts.is_empty() {
            (0..opts.processes).map(|i| format!("127.0.0.1:{}", 2101 + i)).collect()
        } else {
            opts.hosts.clone()
        };
        timely::CommunicationConfig::Cluster {
            threads: workers,
            process: opts.process,
            addresses,
            report: false,
            zerocopy: false,
        }
    } else if workers > 1 {
        timely::CommunicationConfig::Process(workers)
    } else {
        timely::CommunicationConfig::Thread
    }
}

/// Starts the thread that assembles snapshots and writes them to Parquet, so that neither the
/// sorting of a large book nor a slow disk stalls the worker; a write error goes to `fail`.
/// Each complete snapshot's `as_of` is stored in `complete`; snapshots a previous run
/// completed at or before `written_through` are not written again. The thread hands back what
/// the summary keeps of them.
fn snapshot_writer_thread(
    out: &std::path::Path,
    fail: impl Fn(String) + Send + 'static,
    complete: Arc<std::sync::atomic::AtomicU64>,
    written_through: Option<Ts>,
) -> (std::sync::mpsc::Sender<Collected>, std::thread::JoinHandle<Kept>) {
    let writer = SnapshotWriter::new(out);
    let out = out.to_owned();
    let (tx, rx) = std::sync::mpsc::channel::<Collected>();
    let handle = std::thread::Builder::new()
        .name("parquet-writer".into())
        .spawn(move || {
            let mut kept = Kept::default();
            for collected in rx {
                let snap = Arc::new(collected.finish());
                kept.add(snap.clone());
                if crate::kafka_run::already_written(&out, snap.as_of, written_through) {
                    complete.fetch_max(snap.as_of, std::sync::atomic::Ordering::AcqRel);
                    continue;
                }
                match writer.write(snap.as_of, snapshot_tables(&snap)) {
                    Ok(_) => {
                        complete.fetch_max(snap.as_of, std::sync::atomic::Ordering::AcqRel);
                        tracing::debug!(as_of = snap.as_of, positions = snap.positions.len(), "snapshot written")
                    }
                    Err(e) => fail(e.to_string()),
                }
            }
            kept
        })
        .expect("spawning the parquet writer");
    (tx, handle)
}

/// Hands a stream of outputs to worker 0's sink. `gates` says whether its frontier is the
/// event frontier the sink is told about (limit and regime events do, dead letters do not).
fn output_sink<'scope>(
    outputs: StreamVec<'scope, Ts, Output>,
    sink: Rc<RefCell<Option<Box<dyn OutputSink>>>>,
    gates: bool,
    latency: Rc<RefCell<Histogram<u64>>>,
    dead_count: Rc<RefCell<u64>>,
    fail: impl Fn(String) + 'static,
) {
    let name = if gates { "EventOutputs" } else { "DeadLetterOutputs" };
    outputs.sink(Exchange::new(|_: &Output| 0), name, move |(input, frontier)| {
        let mut sink = sink.borrow_mut();
        input.for_each(|cap, data| {
            let time = *cap.least().expect("a message carries a time");
            for output in data.drain(..) {
                if output.topic == OutTopic::DeadLetter {
                    *dead_count.borrow_mut() += 1;
                }
                // Only worker 0 publishes; the others receive nothing.
                let Some(sink) = sink.as_mut() else { continue };
                if let Err(e) = sink.publish(time, &output) {
                    fail(e.to_string());
                }
                if let Some(ingest_ns) = output.ingest_ns {
                    latency.borrow_mut().saturating_record(now_ns().saturating_sub(ingest_ns));
                }
            }
        });
        if let Some(sink) = sink.as_mut() {
            let result = if gates { sink.frontier(frontier.frontier().iter().min().copied()) } else { sink.poll() };
            if let Err(e) = result {
                fail(e.to_string());
            }
        }
    });
}

/// Nanoseconds from 1 ns to 10 minutes, 3 significant digits (values beyond saturate).
fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram")
}

/// Replays a dataset through the dataflow and returns the run's summary.
pub fn run(opts: RunOptions) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let base_ccy = Ccy::parse(&opts.config.risk.base_currency).context("base currency")?;
    let analytics = opts.config.analytics.resolve(riskflow_connectors::replay::dataset_bar_ns(&opts.replay));
    let epoch = opts.config.engine.epoch.as_nanos() as u64;
    anyhow::ensure!(
        analytics.bar_ns.is_multiple_of(epoch),
        "the bar length ({} ns) must be a multiple of engine.epoch ({epoch} ns)",
        analytics.bar_ns
    );
    // A Kafka restart's output topics, read before the workers start: the limits need its horizon.
    let restart = match &opts.kafka {
        Some(_) => crate::kafka_run::Restart::read(&opts)?,
        None => Default::default(),
    };
    let engine_config = EngineConfig {
        book: BookConfig {
            snapshot_interval: opts.config.risk.snapshot_interval.as_nanos() as Ts,
            bar_interval: analytics.bar_ns,
            base_ccy,
            rate: opts.config.risk.rate,
        },
        limits: LimitsConfig {
            warn_at: opts.config.limits.warn_at,
            hysteresis: opts.config.limits.hysteresis,
            breach_action: opts.config.limits.breach_action,
            standing_at: restart.horizon,
        },
        analytics,
    };
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let started = Instant::now();
    let config = timely::Config { communication: communication(&opts), worker: timely::WorkerConfig::default() };
    let worker_opts = opts.clone();
    let bar = engine_config.analytics.bar_ns;
    let worker_failure = failure.clone();
    let restart = Mutex::new(Some(restart));
    let guards = timely::execute(config, move |worker| {
        let opts = &worker_opts;
        let fail = {
            let failure = worker_failure.clone();
            move |msg: String| {
                tracing::error!(error = %msg, "sink failed");
                failure.lock().expect("not poisoned").get_or_insert(msg);
            }
        };
        let index = worker.index();
        let peers = worker.peers();
        let mut input = InputHandleVec::<Ts, Envelope>::new();
        let mut dead_input = InputHandleVec::<Ts, DeadLetter>::new();
        let probe = ProbeHandle::new();
        let figures = ProbeHandle::new();
        let mut handles = None;
        let latency = Rc::new(RefCell::new(new_histogram()));
        let breach_latency = Rc::new(RefCell::new(new_histogram()));
        let snapshots = Rc::new(RefCell::new(Kept::default()));
        let dead_count = Rc::new(RefCell::new(0u64));
        // Kafka: worker 0 keeps the durable progress and publishes the outputs.
        let complete = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut durability = match (&opts.kafka, index) {
            (Some(_), 0) => match Durability::open(
                opts,
                complete.clone(),
                restart.lock().expect("not poisoned").take().unwrap_or_default(),
            ) {
                Ok(d) => Some(d),
                Err(e) => {
                    fail(format!("{e:#}"));
                    None
                }
            },
            _ => None,
        };
        let written_through = durability.as_ref().and_then(|d| d.resumed_as_of());
        let marks = durability.as_ref().map(|d| d.marks.clone()).unwrap_or_default();
        let mut feed = None;

        worker.dataflow::<Ts, _, _>(|scope| {
            let (events, dead_events) = match &opts.kafka {
                None => (input.to_stream(scope), dead_input.to_stream(scope)),
                Some(_) => {
                    let (kafka_feed, events, dead) = crate::kafka_run::inputs(scope, marks);
                    feed = Some(kafka_feed);
                    (events, dead)
                }
            };
            // The live output follows the input frontier: the source paces itself on it. Its
            // latency is taken as it passes on to the limits.
            let hist = latency.clone();
            let engine = engine(events, &engine_config, |live| {
                live.probe_with(&probe).inspect_core(move |event| {
                    if let Ok((_, updates)) = event {
                        let now = now_ns();
                        let mut hist = hist.borrow_mut();
                        for update in updates {
                            hist.saturating_record(now.saturating_sub(update.ingest_ns()));
                        }
                    }
                })
            });
            handles = Some((engine.stats.clone(), engine.limit_states.clone()));
            // The limit events follow the analytics' figures (the limits wait for a bar end's
            // before taking later changes): the source paces itself on them too.
            let limit_events = engine.limit_events.probe_with(&figures);
            let analytics_parts = engine.analytics.map(|t| SnapshotPart::Analytics(Box::new(t)));

            // Regime changes are kept for the summary and published with the other events.
            let kept_regimes = snapshots.clone();
            let regimes = engine.regime_events.inspect(move |e| kept_regimes.borrow_mut().regimes.push(e.clone()));

            // Every output event, keyed, to one sink on worker 0: files in replay mode, topics
            // with Kafka. Breach detection latency is measured there.
            let topic_of = crate::kafka_run::topic_namer(&opts.config.kafka.topics);
            let events =
                limit_events.clone().map(|e| Output::limit_event(&e)).concat(regimes.map(|r| Output::regime(&r)));
            let dead_letters =
                dead_events.concat(engine.dead).map(move |d| Output::dead_letter(&d, &|k: Kind| topic_of(k)));
            let sink: Option<Box<dyn OutputSink>> = match (index, &durability) {
                (0, Some(d)) => Some(Box::new(d.outputs.clone())),
                (0, None) if opts.kafka.is_none() => {
                    let topics = OutTopic::ALL;
                    match JsonlOutputs::create(&opts.out, &topics) {
                        Ok(files) => Some(Box::new(files)),
                        Err(e) => {
                            fail(format!("cannot create the event files: {e}"));
                            None
                        }
                    }
                }
                _ => None,
            };
            let sink = Rc::new(RefCell::new(sink));
            output_sink(events, sink.clone(), true, breach_latency.clone(), dead_count.clone(), fail.clone());
            output_sink(dead_letters, sink, false, breach_latency.clone(), dead_count.clone(), fail.clone());

            let writer = (index == 0)
                .then(|| snapshot_writer_thread(&opts.out, fail.clone(), complete.clone(), written_through));
            let kept = snapshots.clone();
            let event_parts = limit_events.flat_map(|e| match e {
                LimitEvent::Breach(b) => Some(SnapshotPart::Breach(b)),
                LimitEvent::Action(a) => Some(SnapshotPart::Action(a)),
                LimitEvent::Standing(_) => None,
            });
            let mut writer = writer;
            collect_snapshots(engine.snapshots.concat(event_parts).concat(analytics_parts)).sink(
                Pipeline,
                "ParquetSnapshots",
                move |(input, frontier)| {
                    input.for_each(|_, data| {
                        for collected in data.drain(..) {
                            if let Some((tx, _)) = &writer {
                                let _ = tx.send(collected);
                            }
                        }
                    });
                    if frontier.is_empty() {
                        if let Some((tx, handle)) = writer.take() {
                            drop(tx);
                            if let Ok(written) = handle.join() {
                                kept.borrow_mut().merge(written);
                            }
                        }
                    }
                },
            );
        });

        let mut kafka_summary = KafkaSummary::default();
        let pacing =
            Pacing { live: &probe, figures: &figures, lead: opts.config.risk.snapshot_interval.as_nanos() as Ts, bar };
        let driven = match (&opts.kafka, feed) {
            (Some(run), Some(feed)) => {
                crate::kafka_run::drive_kafka(worker, opts, run, feed, &pacing, durability.as_mut(), &mut kafka_summary)
            }
            _ => drive_replay(worker, opts, index, peers, &mut input, &mut dead_input, &pacing),
        };
        let counts = match driven {
            Ok(counts) => counts,
            Err(e) => {
                worker_failure.lock().expect("not poisoned").get_or_insert(format!("{e:#}"));
                Counts::default()
            }
        };
        drop(input);
        drop(dead_input);
        while worker.step_or_park(None) {}
        if let Some(d) = durability.as_mut() {
            if let Err(e) = d.finish(opts.config.kafka.timeout) {
                worker_failure.lock().expect("not poisoned").get_or_insert(format!("{e:#}"));
            }
        }
        let kafka = opts.kafka.as_ref().map(|_| {
            if let Some(d) = &durability {
                let mut primary = d.summary();
                primary.brokers = opts.config.kafka.brokers.clone();
                kafka_summary.merge(primary);
            }
            kafka_summary
        });
        let (stats, limit_states) = handles.expect("dataflow built");
        let book = stats.borrow().clone();
        let result = WorkerResult {
            counts,
            book,
            limits: limit_states.borrow().clone(),
            latency: latency.borrow().clone(),
            breach_latency: breach_latency.borrow().clone(),
            snapshots: std::mem::take(&mut *snapshots.borrow_mut()),
            dead_letters: *dead_count.borrow(),
            kafka,
        };
        result
    })
    .map_err(|e| anyhow::anyhow!("starting workers: {e}"))?;

    let mut results = Vec::new();
    for r in guards.join() {
        results.push(r.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?);
    }
    if let Some(msg) = failure.lock().expect("not poisoned").take() {
        anyhow::bail!(msg);
    }
    let elapsed = started.elapsed();
    let mut counts = Counts::default();
    let mut book = BookStats::default();
    let mut latency = new_histogram();
    let mut breach_latency = new_histogram();
    let mut limit_states = Vec::new();
    let mut snapshots = Kept::default();
    let mut dead_letters = 0;
    let mut kafka: Option<KafkaSummary> = None;
    for r in results {
        if let Some(k) = r.kafka {
            kafka.get_or_insert_with(KafkaSummary::default).merge(k);
        }
        limit_states.extend(r.limits);
        breach_latency.add(&r.breach_latency).expect("same histogram bounds");
        counts.add(&r.counts);
        book.deltas_applied += r.book.deltas_applied;
        book.ticks_applied += r.book.ticks_applied;
        book.duplicates += r.book.duplicates;
        book.held += r.book.held;
        book.released += r.book.released;
        latency.add(&r.latency).expect("same histogram bounds");
        snapshots.merge(r.snapshots);
        dead_letters += r.dead_letters;
    }
    limit_states.sort_by(|a, b| a.0.cmp(&b.0));
    let latencies = Latencies { live: latency, breach: breach_latency };
    let mut summary = Summary::new(&opts, counts, book, limit_states, latencies, snapshots, dead_letters, elapsed);
    summary.kafka = kafka;
    Ok(summary)
}

/// What a source (replay or Kafka) paces itself on, after each batch it sends.
pub(crate) struct Pacing<'a> {
    /// The live output's probe: the source runs ahead of the slowest worker by at most `lead`
    /// of event time.
    pub live: &'a ProbeHandle<Ts>,
    /// The limit events' probe: at most a bar ahead of the analytics' figures, which their
    /// thread computes meanwhile (the limits keep the changes after a bar end until its
    /// figures are in; falling behind, a Kafka run's lag grows rather than what they keep).
    pub figures: &'a ProbeHandle<Ts>,
    pub lead: Ts,
    pub bar: Ts,
}

impl Pacing<'_> {
    /// Steps the worker until the outputs are close enough behind the input's `time`.
    pub(crate) fn wait(&self, worker: &mut timely::worker::Worker, time: Ts) {
        while self.live.less_than(&time.saturating_sub(self.lead)) {
            worker.step();
        }
        while self.figures.less_than(&time.saturating_sub(self.bar)) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
    }
}

/// Feeds this worker's share of the dataset into the dataflow, in event-time order, and
/// returns what it read.
fn drive_replay(
    worker: &mut timely::worker::Worker,
    opts: &RunOptions,
    index: usize,
    peers: usize,
    input: &mut InputHandleVec<Ts, Envelope>,
    dead_input: &mut InputHandleVec<Ts, DeadLetter>,
    pacing: &Pacing,
) -> anyhow::Result<Counts> {
    let mut replay = Replay::open(&opts.replay, index, peers)
        .with_context(|| format!("opening dataset {}", opts.replay.display()))?;
    let epoch = opts.config.engine.epoch.as_nanos() as Ts;
    let batch = opts.config.engine.batch;
    let mut counts = Counts::default();
    if index == 0 {
        for limit in &opts.config.limits.rules {
            counts.limits += 1;
            let event = Event::Limit(limit.clone());
            input.send(Envelope { event, origin: Origin::Engine, ingest_ns: now_ns() });
        }
    }
    fn send(
        record: riskflow_connectors::replay::Record,
        ingest_ns: u64,
        counts: &mut Counts,
        input: &mut InputHandleVec<Ts, Envelope>,
        dead_input: &mut InputHandleVec<Ts, DeadLetter>,
    ) {
        match record {
            Ok((event, origin)) => {
                counts.count(&event);
                input.send(Envelope { event, origin, ingest_ns });
            }
            Err(dead) => {
                counts.rejected += 1;
                dead_input.send(dead);
            }
        }
    }
    for record in replay.reference()? {
        send(record, now_ns(), &mut counts, input, dead_input);
    }
    let mut progress = Progress::new(opts.progress && index == 0);
    // Records are decoded a batch at a time and stamped as they enter the dataflow, so the
    // measured latency is the dataflow's, not the decoder's.
    let mut batch_buf = Vec::with_capacity(batch);
    loop {
        while batch_buf.len() < batch {
            match replay.next_record()? {
                Some(record) => batch_buf.push(record),
                None => break,
            }
        }
        if batch_buf.is_empty() {
            break;
        }
        let ingest_ns = now_ns();
        for record in batch_buf.drain(..) {
            if let Ok((event, _)) = &record {
                let time = event.ts().unwrap_or(0).div_ceil(epoch) * epoch;
                if time < *input.time() {
                    counts.late += 1;
                } else if time > *input.time() {
                    input.advance_to(time);
                    dead_input.advance_to(time);
                }
            }
            send(record, ingest_ns, &mut counts, input, dead_input);
        }
        worker.step();
        pacing.wait(worker, *input.time());
        progress.show(&counts, *input.time(), None);
    }
    // The closing snapshot is at the end of the last epoch read, so that it comes after every
    // record and every event derived from one.
    let last = replay.max_ts().div_ceil(epoch) * epoch;
    let end = Envelope { event: Event::End { max_ts: last }, origin: Origin::Engine, ingest_ns: now_ns() };
    input.send(end);
    progress.finish();
    Ok(counts)
}

/// A one-line progress display on a terminal: records, rate, event time reached (and the
/// consumer lag, from Kafka).
pub(crate) struct Progress {
    on: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub(crate) fn new(on: bool) -> Progress {
        let on = on && std::io::stderr().is_terminal();
        Progress { on, started: Instant::now(), last: Instant::now() }
    }

    pub(crate) fn show(&mut self, counts: &Counts, time: Ts, lag: Option<i64>) {
        if !self.on || self.last.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last = Instant::now();
        let n = counts.records();
        let rate = n as f64 / self.started.elapsed().as_secs_f64();
        let lag = lag.map(|l| format!("  lag {l}")).unwrap_or_default();
        eprint!("\r  {n} records  {:.2}M/s  event time {}{lag}   ", rate / 1e6, crate::summary::format_ts(time));
    }

    pub(crate) fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}
