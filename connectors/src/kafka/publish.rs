//! Publishing to Kafka: [`Publisher`] (a producer that tracks every message to delivery,
//! retries failures and reports what it could not deliver), and [`KafkaOutputs`], the
//! engine's output sink on top of it.
//!
//! librdkafka retries sends itself (`retries`, `delivery.timeout.ms`); a message whose
//! delivery still fails is sent again by the publisher, up to [`Publisher::MAX_ATTEMPTS`]
//! times in all, and counted. A message never delivered keeps the durable point from moving
//! past it and makes [`Publisher::flush`] fail.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use riskflow_dataflows::model::Ts;
use serde::{Deserialize, Serialize};

use super::source::partitions_of;
use super::{consumer_config, producer_config, ClientSettings, KafkaError, Topics};
use crate::output::{OutTopic, Output, OutputSink};
use crate::ConnectorError;

/// Counters of a publisher.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PublishStats {
    /// Messages handed to the producer (retries not counted again).
    pub sent: u64,
    pub delivered: u64,
    /// Deliveries that failed and were sent again.
    pub retried: u64,
    /// Messages that failed on every attempt.
    pub failed: u64,
}

struct Failed {
    seq: u64,
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Deliveries {
    outstanding: BTreeSet<u64>,
    attempts: HashMap<u64, u32>,
    retry: Vec<Failed>,
    stats: PublishStats,
    last_error: Option<String>,
}

/// The producer's context: delivery reports land here (on the thread that polls).
struct Tracker {
    deliveries: Mutex<Deliveries>,
}

impl ClientContext for Tracker {}

impl ProducerContext for Tracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let seq = seq as u64;
        let mut d = self.deliveries.lock().expect("not poisoned");
        match result {
            Ok(_) => {
                d.outstanding.remove(&seq);
                d.attempts.remove(&seq);
                d.stats.delivered += 1;
            }
            Err((error, message)) => {
                let attempts = {
                    let a = d.attempts.entry(seq).or_insert(1);
                    *a += 1;
                    *a
                };
                tracing::warn!(topic = message.topic(), error = %error, attempts, "delivery failed");
                d.last_error = Some(format!("{}: {error}", message.topic()));
                if attempts <= Publisher::MAX_ATTEMPTS {
                    d.stats.retried += 1;
                    d.retry.push(Failed {
                        seq,
                        topic: message.topic().to_owned(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().unwrap_or_default().to_vec(),
                    });
                } else {
                    // Stays outstanding: undelivered.
                    d.stats.failed += 1;
                }
            }
        }
    }
}

/// A producer that knows which of its messages are delivered.
pub struct Publisher {
    producer: BaseProducer<Tracker>,
    next_seq: u64,
}

impl Publisher {
    /// Attempts per message, librdkafka's own retries aside.
    pub const MAX_ATTEMPTS: u32 = 3;

    pub fn new(settings: &ClientSettings) -> Result<Publisher, KafkaError> {
        let tracker = Tracker { deliveries: Mutex::new(Deliveries::default()) };
        let producer = producer_config(settings)
            .create_with_context(tracker)
            .map_err(KafkaError::client("creating the producer"))?;
        Ok(Publisher { producer, next_seq: 0 })
    }

    fn deliveries(&self) -> std::sync::MutexGuard<'_, Deliveries> {
        self.producer.context().deliveries.lock().expect("not poisoned")
    }

    /// Enqueues one message (waiting while librdkafka's queue is full) and returns its sequence
    /// number. An error means the message could not even be enqueued.
    pub fn send(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Result<u64, KafkaError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        {
            let mut d = self.deliveries();
            d.outstanding.insert(seq);
            d.stats.sent += 1;
        }
        self.enqueue(seq, topic, key, payload)?;
        Ok(seq)
    }

    fn enqueue(&self, seq: u64, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Result<(), KafkaError> {
        let mut record = BaseRecord::with_opaque_to(topic, seq as usize).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    let mut d = self.deliveries();
                    d.outstanding.remove(&seq);
                    d.stats.sent -= 1;
                    return Err(KafkaError::Client { context: format!("producing to {topic}"), source: e });
                }
            }
        }
    }

    /// Serves delivery reports and sends failed messages again.
    pub fn poll(&mut self) -> Result<(), KafkaError> {
        self.producer.poll(Duration::ZERO);
        let retry = std::mem::take(&mut self.deliveries().retry);
        for f in retry {
            self.enqueue(f.seq, &f.topic, f.key.as_deref(), &f.payload)?;
        }
        Ok(())
    }

    /// Every message with a sequence number below this is delivered.
    pub fn delivered_below(&self) -> u64 {
        self.deliveries().outstanding.first().copied().unwrap_or(self.next_seq)
    }

    /// The sequence number the next message will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn stats(&self) -> PublishStats {
        self.deliveries().stats.clone()
    }

    /// Waits until every message is delivered (retrying failures); an error names how many
    /// were not, and the last delivery error.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), KafkaError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll()?;
            let (outstanding, retrying, failed) = {
                let d = self.deliveries();
                (d.outstanding.len(), d.retry.len(), d.stats.failed)
            };
            if outstanding == 0 {
                return Ok(());
            }
            let in_flight = self.producer.in_flight_count();
            if (failed > 0 && retrying == 0 && in_flight == 0) || Instant::now() >= deadline {
                let last = self.deliveries().last_error.clone().unwrap_or_else(|| "timed out".into());
                return Err(KafkaError::Other(format!(
                    "{outstanding} message(s) not delivered ({failed} failed after {} attempts); last error: {last}",
                    Self::MAX_ATTEMPTS
                )));
            }
            // Serves delivery reports while it waits.
            let _ = self.producer.flush(Duration::from_millis(100));
        }
    }
}

fn content_hash(topic: OutTopic, key: &[u8], payload: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    key.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

/// What the output topics already hold, to publish nothing twice after a restart: how many
/// times each (topic, key, payload) appears, and the state each limit and scope ends in there.
#[derive(Debug, Default)]
pub struct Published {
    seen: HashMap<u64, u32>,
    pub messages: u64,
    pub states: TopicStates,
}

/// What the output topics say of each limit and scope: the state of its last event there (a
/// limit by `limit_id` on the breaches topic, a scope by its key on the actions topic; one key
/// lies in one partition, so its events are read in the order they were published).
#[derive(Debug, Default)]
pub struct TopicStates {
    said: HashMap<(OutTopic, String), Said>,
    /// The largest event time of the limit events read.
    pub max_ts: Option<Ts>,
}

/// The last event of a limit or scope on its topic.
#[derive(Clone, Debug, Deserialize)]
struct Said {
    ts: Ts,
    state: String,
    #[serde(default)]
    limit_id: String,
}

impl TopicStates {
    /// What a limit or scope is called on its topic; none for the other topics.
    fn name(topic: OutTopic, key: &str, limit_id: &str) -> Option<(OutTopic, String)> {
        match topic {
            OutTopic::Breaches => Some((topic, limit_id.to_owned())),
            OutTopic::Actions => Some((topic, key.to_owned())),
            OutTopic::Regimes | OutTopic::DeadLetter => None,
        }
    }

    /// Records an event found on, or published to, `topic`; an unreadable one changes nothing.
    pub fn record(&mut self, topic: OutTopic, key: &str, json: &str) {
        let Ok(said) = serde_json::from_str::<Said>(json) else { return };
        if let Some(name) = TopicStates::name(topic, key, &said.limit_id) {
            self.max_ts = self.max_ts.max(Some(said.ts));
            self.said.insert(name, said);
        }
    }

    /// The event that brings a limit's or scope's topic to where a standing report says it
    /// stands, if the topic says otherwise (one without events says OK, or ACTIVE): the
    /// report with `prev_state` what the topic says, `ts` no earlier than the topic's last
    /// event of it, and a scope's cause, when the report names none, the one the topic names.
    pub fn correction(&self, standing: &Output) -> Option<String> {
        let mut report: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&standing.json).ok()?;
        let (state, limit_id) = (report.get("state")?.as_str()?, report.get("limit_id")?.as_str()?);
        let said = self.said.get(&TopicStates::name(standing.topic, &standing.key, limit_id)?);
        let start = if standing.topic == OutTopic::Breaches { "OK" } else { "ACTIVE" };
        let topic_state = said.map_or(start, |s| s.state.as_str());
        if topic_state == state {
            return None;
        }
        let named = !limit_id.is_empty();
        report.insert("prev_state".into(), topic_state.into());
        if let Some(said) = said {
            let ts = report.get("ts").and_then(|t| t.as_u64()).unwrap_or(0).max(said.ts);
            report.insert("ts".into(), ts.into());
            if !named {
                report.insert("limit_id".into(), said.limit_id.clone().into());
            }
        }
        Some(serde_json::Value::Object(report).to_string())
    }
}

impl Published {
    /// Reads every output topic from its start to its current end. A topic that does not
    /// exist holds nothing.
    pub fn read(settings: &ClientSettings, topics: &Topics, timeout: Duration) -> Result<Published, KafkaError> {
        let consumer: BaseConsumer =
            consumer_config(settings).create().map_err(KafkaError::client("creating the output reader"))?;
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        let mut kinds = HashMap::new();
        for out in OutTopic::ALL {
            let topic = topics.output(out);
            let Ok(partitions) = partitions_of(&consumer, topic, timeout) else { continue };
            kinds.insert(topic.to_owned(), out);
            for p in partitions {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p, timeout)
                    .map_err(KafkaError::client(format!("watermarks of {topic}/{p}")))?;
                if high > low {
                    ends.insert((topic.to_owned(), p), high);
                    tpl.add_partition_offset(topic, p, Offset::Offset(low))
                        .map_err(KafkaError::client("building the assignment"))?;
                }
            }
        }
        let mut published = Published::default();
        if ends.is_empty() {
            return Ok(published);
        }
        consumer.assign(&tpl).map_err(KafkaError::client("assigning output partitions"))?;
        let deadline = Instant::now() + timeout.max(Duration::from_secs(30));
        while !ends.is_empty() {
            if Instant::now() > deadline {
                return Err(KafkaError::Other(format!(
                    "reading the output topics timed out ({} partitions left)",
                    ends.len()
                )));
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
            let message = message.map_err(KafkaError::client("reading the output topics"))?;
            let key = (message.topic().to_owned(), message.partition());
            if let Some(&out) = kinds.get(message.topic()) {
                let (key, payload) = (message.key().unwrap_or_default(), message.payload().unwrap_or_default());
                *published.seen.entry(content_hash(out, key, payload)).or_default() += 1;
                published.messages += 1;
                if let (Ok(key), Ok(json)) = (std::str::from_utf8(key), std::str::from_utf8(payload)) {
                    published.states.record(out, key, json);
                }
            }
            if ends.get(&key).is_some_and(|&end| message.offset() + 1 >= end) {
                ends.remove(&key);
            }
        }
        Ok(published)
    }

    /// Whether this output was already published (each published copy matches once).
    pub fn take(&mut self, output: &Output) -> bool {
        let hash = content_hash(output.topic, output.key.as_bytes(), output.json.as_bytes());
        match self.seen.get_mut(&hash) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

/// Counters of the output sink.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutputStats {
    pub publish: PublishStats,
    /// Events not published again after a restart: at or before the durable snapshot, or
    /// found on the output topic.
    pub suppressed: u64,
    /// Events published at a restart's horizon to bring a limit's or scope's topic to where
    /// the engine has it.
    pub corrected: u64,
}

/// The engine's output sink on Kafka. After a restart it publishes no limit or regime event at
/// or before the durable point (`after`), and up to the restart's `horizon` nothing the output
/// topics already hold. The recomputed path of a limit can differ from the one the topics hold
/// (arrival order), so at the horizon the limits report where each stands, and a limit or
/// scope whose topic says otherwise gets the event that brings it there.
pub struct KafkaOutputs {
    publisher: Publisher,
    topics: Topics,
    after: Option<Ts>,
    horizon: Option<Ts>,
    published: Published,
    suppressed: u64,
    corrected: u64,
    /// The sink's input frontier, and the first sequence number handed over after it was seen.
    frontier: Option<Ts>,
    frontier_seq: u64,
    done: bool,
}

impl KafkaOutputs {
    pub fn new(
        publisher: Publisher,
        topics: Topics,
        after: Option<Ts>,
        horizon: Option<Ts>,
        published: Published,
    ) -> KafkaOutputs {
        KafkaOutputs {
            publisher,
            topics,
            after,
            horizon,
            published,
            suppressed: 0,
            corrected: 0,
            frontier: Some(0),
            frontier_seq: 0,
            done: false,
        }
    }

    /// Whether every output at a dataflow time ≤ `as_of` has been delivered.
    pub fn delivered_through(&self, as_of: Ts) -> bool {
        let passed = self.done || self.frontier.is_some_and(|f| f > as_of);
        passed && self.publisher.delivered_below() >= self.frontier_seq
    }

    /// Serves delivery reports; an error if a message cannot be enqueued again.
    pub fn poll(&mut self) -> Result<(), KafkaError> {
        self.publisher.poll()
    }

    pub fn flush(&mut self, timeout: Duration) -> Result<(), KafkaError> {
        self.publisher.flush(timeout)
    }

    pub fn stats(&self) -> OutputStats {
        OutputStats { publish: self.publisher.stats(), suppressed: self.suppressed, corrected: self.corrected }
    }
}

impl OutputSink for Rc<RefCell<KafkaOutputs>> {
    fn publish(&mut self, time: Ts, output: &Output) -> Result<(), ConnectorError> {
        let mut me = self.borrow_mut();
        tracing::trace!(time, topic = ?output.topic, key = output.key, "output");
        // Limit and regime events at or before the durable snapshot were delivered before it
        // became durable (their recomputation may differ in arrival order, so they are not
        // matched by content). A dead letter's content is exact, and the time a restart reads a
        // bad record again is not the time it was first read: dead letters are matched by content.
        // After the horizon the topics agree with the engine, and every limit event is new.
        let limit_event = matches!(output.topic, OutTopic::Breaches | OutTopic::Actions);
        let json = if output.standing {
            match me.published.states.correction(output) {
                Some(json) => {
                    me.corrected += 1;
                    Cow::Owned(json)
                }
                None => return Ok(()),
            }
        } else {
            let durable = output.topic != OutTopic::DeadLetter && me.after.is_some_and(|after| time <= after);
            let copy = (!limit_event || me.horizon.is_some_and(|h| time <= h)) && me.published.take(output);
            if durable || copy {
                tracing::debug!(time, durable, key = output.key, "not published again");
                me.suppressed += 1;
                return Ok(());
            }
            Cow::Borrowed(output.json.as_str())
        };
        // What the topics say is needed until the standing report, just after the horizon.
        if limit_event && me.horizon.is_some_and(|h| time <= h + 1) {
            me.published.states.record(output.topic, &output.key, &json);
        }
        let topic = me.topics.output(output.topic).to_owned();
        me.publisher
            .send(&topic, Some(output.key.as_bytes()), json.as_bytes())
            .map(|_| ())
            .map_err(|e| ConnectorError::Kafka(e.to_string()))
    }

    fn frontier(&mut self, frontier: Option<Ts>) -> Result<(), ConnectorError> {
        let mut me = self.borrow_mut();
        if me.frontier != frontier {
            me.frontier = frontier;
            me.frontier_seq = me.publisher.next_seq();
            me.done = frontier.is_none();
        }
        me.publisher.poll().map_err(|e| ConnectorError::Kafka(e.to_string()))
    }

    fn poll(&mut self) -> Result<(), ConnectorError> {
        self.borrow_mut().publisher.poll().map_err(|e| ConnectorError::Kafka(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(topic: OutTopic, key: &str, json: &str) -> Output {
        Output { topic, key: key.into(), json: json.into(), ingest_ns: None, standing: true }
    }

    fn breach(ts: Ts, limit: &str, state: &str, prev: &str) -> String {
        format!(
            r#"{{"limit":100.0,"limit_id":"{limit}","metric":"gross","prev_state":"{prev}","scope":"account","scope_id":"A1","state":"{state}","ts":{ts},"utilisation":0.5,"value":50.0}}"#
        )
    }

    fn action(ts: Ts, cause: &str, state: &str, prev: &str) -> String {
        format!(
            r#"{{"limit_id":"{cause}","prev_state":"{prev}","scope":"account","scope_id":"A1","state":"{state}","ts":{ts}}}"#
        )
    }

    fn parsed(json: &str) -> serde_json::Value {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_topic_that_ends_elsewhere_gets_the_event_that_brings_it_to_the_standing() {
        let mut states = TopicStates::default();
        states.record(OutTopic::Breaches, "account:A1", &breach(40, "L1", "WARN", "OK"));
        states.record(OutTopic::Breaches, "account:A1", &breach(70, "L1", "BREACH", "WARN"));
        states.record(OutTopic::Breaches, "account:A1", &breach(20, "L2", "WARN", "OK"));
        states.record(OutTopic::Actions, "account:A1", &action(70, "L1", "REDUCING", "ACTIVE"));
        assert_eq!(states.max_ts, Some(70));

        // L1: the topic says BREACH (its last event), the engine has it in WARN since ts 50.
        let fix = states.correction(&standing(OutTopic::Breaches, "account:A1", &breach(50, "L1", "WARN", "WARN")));
        assert_eq!(parsed(&fix.unwrap()), parsed(&breach(70, "L1", "WARN", "BREACH")));
        // L2 stands where the topic has it: nothing to publish.
        let same = standing(OutTopic::Breaches, "account:A1", &breach(90, "L2", "WARN", "WARN"));
        assert_eq!(states.correction(&same), None);
        // L3 has no event on the topic (OK there): the engine's BREACH is published from OK,
        // at the engine's own time.
        let fix = states.correction(&standing(OutTopic::Breaches, "account:A1", &breach(30, "L3", "BREACH", "BREACH")));
        assert_eq!(parsed(&fix.unwrap()), parsed(&breach(30, "L3", "BREACH", "OK")));
        // The scope is ACTIVE again: no limit holds it, so the cause is the one the topic names.
        let fix = states.correction(&standing(OutTopic::Actions, "account:A1", &action(50, "", "ACTIVE", "ACTIVE")));
        assert_eq!(parsed(&fix.unwrap()), parsed(&action(70, "L1", "ACTIVE", "REDUCING")));
        // A scope without events on the topic that stands ACTIVE needs nothing.
        let other = standing(OutTopic::Actions, "desk:D1", &action(50, "", "ACTIVE", "ACTIVE"));
        assert_eq!(states.correction(&other), None);
    }
}
