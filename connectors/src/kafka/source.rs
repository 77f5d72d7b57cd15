//! One worker's Kafka consumer: its share of the input partitions ([`super::assign`]),
//! assigned by hand with explicit start offsets, read reference topics first, decoded with
//! [`crate::decode`] into events or dead letters that carry topic, partition and offset.
//!
//! A finite run (`--until-caught-up`) records each partition's high watermark when it opens
//! and reads up to it: a record at or past it is not delivered (it belongs to the next run)
//! and the partition is paused.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use riskflow_dataflows::event::{DeadLetter, Origin};
use riskflow_dataflows::model::Kind;

use super::assign::{assign, TopicPartition};
use super::{consumer_config, is_reference, ClientSettings, KafkaError, Topics};
use crate::decode::decode;
use crate::replay::Record;

/// What the consumer knows of one assigned partition.
#[derive(Clone, Debug)]
pub struct SourcePartition {
    pub kind: Kind,
    pub topic: String,
    pub partition: i32,
    /// The first offset read (the partition's low watermark: state is rebuilt from the start).
    pub start: i64,
    /// The high watermark when the run opened: a finite run reads up to it.
    pub end_at_open: i64,
    /// The next offset to deliver.
    pub next: i64,
    /// The latest high watermark known (from fetch responses).
    pub high: i64,
    /// A finite run has read it to `end_at_open`.
    pub done: bool,
}

impl SourcePartition {
    /// Records between the next offset and the high watermark.
    pub fn lag(&self) -> i64 {
        (self.high - self.next).max(0)
    }
}

/// A worker's consumer.
pub struct KafkaSource {
    consumer: BaseConsumer,
    parts: Vec<SourcePartition>,
    /// Topic name → (kind, partition number → index in `parts`).
    by_topic: HashMap<String, HashMap<i32, usize>>,
    /// Partitions already paused (finished).
    paused: Vec<bool>,
    finite: bool,
    timeout: Duration,
}

impl KafkaSource {
    /// Connects, reads the metadata of the input topics (each must exist), takes this worker's
    /// share of their partitions and their watermarks. Nothing is assigned yet: call
    /// [`KafkaSource::start_reference`], then [`KafkaSource::start_all`].
    pub fn open(
        settings: &ClientSettings,
        topics: &Topics,
        worker: usize,
        peers: usize,
        finite: bool,
        timeout: Duration,
    ) -> Result<KafkaSource, KafkaError> {
        let consumer: BaseConsumer =
            consumer_config(settings).create().map_err(KafkaError::client("creating the consumer"))?;
        let mut listing = Vec::new();
        for kind in Topics::INPUTS {
            let topic = topics.input(kind);
            listing.push((kind, topic.to_owned(), partitions_of(&consumer, topic, timeout)?));
        }
        let mut parts = Vec::new();
        let mut by_topic: HashMap<String, HashMap<i32, usize>> = HashMap::new();
        for TopicPartition { kind, topic, partition } in assign(&listing, worker, peers) {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, timeout)
                .map_err(KafkaError::client(format!("watermarks of {topic}/{partition}")))?;
            by_topic.entry(topic.clone()).or_default().insert(partition, parts.len());
            let done = finite && low >= high;
            parts.push(SourcePartition {
                kind,
                topic,
                partition,
                start: low,
                end_at_open: high,
                next: low,
                high,
                done,
            });
        }
        let paused = parts.iter().map(|p| p.done).collect();
        Ok(KafkaSource { consumer, parts, by_topic, paused, finite, timeout })
    }

    pub fn partitions(&self) -> &[SourcePartition] {
        &self.parts
    }

    /// Assigns the reference partitions alone, so that they are read first.
    pub fn start_reference(&mut self) -> Result<(), KafkaError> {
        self.assign(|p| is_reference(p.kind))
    }

    /// Whether every reference partition has been read up to its high watermark at open.
    pub fn reference_read(&self) -> bool {
        self.parts.iter().filter(|p| is_reference(p.kind)).all(|p| p.next >= p.end_at_open)
    }

    /// Assigns every partition, each from its next offset.
    pub fn start_all(&mut self) -> Result<(), KafkaError> {
        self.assign(|_| true)
    }

    fn assign(&mut self, which: impl Fn(&SourcePartition) -> bool) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for p in self.parts.iter().filter(|p| !p.done && which(p)) {
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next))
                .map_err(KafkaError::client("building the assignment"))?;
        }
        self.consumer.assign(&tpl).map_err(KafkaError::client("assigning partitions"))
    }

    /// Delivers up to `max` records (waiting at most `wait` for the first), each with the
    /// index of its partition; returns how many messages were read.
    pub fn poll(
        &mut self,
        max: usize,
        wait: Duration,
        mut deliver: impl FnMut(usize, Record),
    ) -> Result<usize, KafkaError> {
        let mut n = 0;
        let mut timeout = wait;
        while n < max {
            let Some(message) = self.consumer.poll(timeout) else { break };
            timeout = Duration::ZERO;
            let message = message.map_err(KafkaError::client("consuming"))?;
            let Some(&i) = self.by_topic.get(message.topic()).and_then(|t| t.get(&message.partition())) else {
                continue;
            };
            let offset = message.offset();
            let p = &mut self.parts[i];
            if p.done || offset < p.next {
                // Past the end of a finite run, or already delivered (a fetch from before a re-assignment).
                continue;
            }
            if self.finite && offset >= p.end_at_open {
                p.done = true;
                continue;
            }
            p.next = offset + 1;
            p.high = p.high.max(p.next);
            n += 1;
            let origin = Origin::Kafka { kind: p.kind, partition: p.partition, offset };
            let raw = message.payload().unwrap_or_default();
            let record = match decode(p.kind, raw) {
                Ok(event) => Ok((event, origin)),
                Err(reason) => {
                    let reason = if raw.is_empty() { "empty message".to_owned() } else { reason };
                    Err(DeadLetter { origin, payload: String::from_utf8_lossy(raw).into_owned(), reason })
                }
            };
            deliver(i, record);
            if self.finite && p.next >= p.end_at_open {
                p.done = true;
            }
        }
        self.pause_done()?;
        Ok(n)
    }

    /// Stops fetching partitions a finite run has finished.
    fn pause_done(&mut self) -> Result<(), KafkaError> {
        if !self.finite {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, paused) in self.parts.iter().zip(&mut self.paused) {
            if p.done && !*paused {
                *paused = true;
                tpl.add_partition(&p.topic, p.partition);
            }
        }
        if tpl.count() > 0 {
            self.consumer.pause(&tpl).map_err(KafkaError::client("pausing finished partitions"))?;
        }
        Ok(())
    }

    /// Whether a finite run has read every partition to its end.
    pub fn finished(&self) -> bool {
        self.finite && self.parts.iter().all(|p| p.done)
    }

    /// Refreshes each partition's high watermark from the consumer's cache (no broker call).
    pub fn refresh_watermarks(&mut self) {
        for p in &mut self.parts {
            if let Some(high) = cached_high_watermark(&self.consumer, &p.topic, p.partition) {
                p.high = p.high.max(high);
            }
        }
    }

    /// Commits offsets (topic, partition, next offset to read) under the group, without waiting.
    pub fn commit(&self, offsets: &[(String, i32, i64)]) -> Result<(), KafkaError> {
        commit(&self.consumer, offsets)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The partition numbers of a topic; an error if the topic does not exist.
pub fn partitions_of<C: Consumer>(consumer: &C, topic: &str, timeout: Duration) -> Result<Vec<i32>, KafkaError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(KafkaError::client(format!("metadata of topic {topic}")))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| KafkaError::Other(format!("topic {topic} is not in the metadata")))?;
    if let Some(err) = t.error() {
        return Err(KafkaError::Other(format!(
            "topic {topic}: {:?} (create the topics first, e.g. scripts/kafka-up.sh)",
            err
        )));
    }
    let partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if partitions.is_empty() {
        return Err(KafkaError::Other(format!("topic {topic} has no partitions (create the topics first)")));
    }
    Ok(partitions)
}

/// Commits `offsets` (topic, partition, next offset) under the consumer's group, asynchronously.
pub fn commit<C: Consumer>(consumer: &C, offsets: &[(String, i32, i64)]) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(KafkaError::client("building the commit"))?;
    }
    consumer.commit(&tpl, CommitMode::Async).map_err(KafkaError::client("committing offsets"))
}

/// The high watermark librdkafka last saw in a fetch response for a partition, without asking
/// the broker (`rd_kafka_get_watermark_offsets`, which rdkafka does not wrap); `None` until
/// one is known.
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the topic is a NUL-terminated
    // string that outlives the call; `low` and `high` are valid for writes. The call only reads
    // librdkafka's cached partition state under its own lock.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}
