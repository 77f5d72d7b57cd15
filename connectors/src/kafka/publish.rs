//! Publishing to Kafka: [`Publisher`] (a producer that tracks every message to delivery,
//! retries failures and reports what it could not deliver), and [`KafkaOutputs`], the
//! engine's output sink on top of it.
//!
//! librdkafka retries sends itself (`retries`, `delivery.timeout.ms`); a message whose
//! delivery still fails is sent again by the publisher, up to [`Publisher::MAX_ATTEMPTS`]
//! times in all, and counted. A message never delivered keeps the durable point from moving
//! past it and makes [`Publisher::flush`] fail.

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
use serde::Serialize;

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
/// times each (topic, key, payload) appears.
#[derive(Debug, Default)]
pub struct Published {
    seen: HashMap<u64, u32>,
    pub messages: u64,
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
                let hash = content_hash(out, message.key().unwrap_or_default(), message.payload().unwrap_or_default());
                *published.seen.entry(hash).or_default() += 1;
                published.messages += 1;
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
}

/// The engine's output sink on Kafka. After a restart it publishes no limit or regime event at
/// or before the durable point (`after`), and nothing the output topics already hold.
pub struct KafkaOutputs {
    publisher: Publisher,
    topics: Topics,
    after: Option<Ts>,
    published: Published,
    suppressed: u64,
    /// The sink's input frontier, and the first sequence number handed over after it was seen.
    frontier: Option<Ts>,
    frontier_seq: u64,
    done: bool,
}

impl KafkaOutputs {
    pub fn new(publisher: Publisher, topics: Topics, after: Option<Ts>, published: Published) -> KafkaOutputs {
        KafkaOutputs {
            publisher,
            topics,
            after,
            published,
            suppressed: 0,
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
        OutputStats { publish: self.publisher.stats(), suppressed: self.suppressed }
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
        let durable = output.topic != OutTopic::DeadLetter && me.after.is_some_and(|after| time <= after);
        if durable || me.published.take(output) {
            tracing::debug!(time, durable, key = output.key, "not published again");
            me.suppressed += 1;
            return Ok(());
        }
        let topic = me.topics.output(output.topic).to_owned();
        me.publisher
            .send(&topic, Some(output.key.as_bytes()), output.json.as_bytes())
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
