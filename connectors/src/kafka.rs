//! The Kafka transport (DESIGN.md §2, §4): input topics in, output topics out, through
//! librdkafka (`rdkafka`, built from source).
//!
//! - [`assign`]: which worker reads which partition (manual assignment, no group rebalancing);
//! - [`clock`]: how a worker's event time advances from what its partitions delivered;
//! - [`source`]: one consumer per worker, decoding with [`crate::decode`];
//! - [`publish`]: the producer of the output topics and of `riskflow produce`;
//! - [`progress`]: which input offsets are covered by a complete snapshot, kept in
//!   `<out>/_offsets.json` and committed to the broker.
//!
//! This module is the one place that builds rdkafka clients ([`consumer_config`],
//! [`producer_config`]); each property riskflow sets itself is commented there, and any
//! librdkafka property can be passed through verbatim (`[kafka.consumer]`, `[kafka.producer]`).

pub mod assign;
pub mod clock;
pub mod progress;
pub mod publish;
pub mod source;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use riskflow_dataflows::model::Kind;
use serde::Deserialize;

use crate::output::OutTopic;

/// Errors of the Kafka transport.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka: {context}: {source}")]
    Client { context: String, source: rdkafka::error::KafkaError },
    #[error("kafka: {0}")]
    Other(String),
}

impl KafkaError {
    pub(crate) fn client(context: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError {
        let context = context.into();
        move |source| KafkaError::Client { context, source }
    }
}

/// Topic names, all configurable (`[kafka.topics]`); the defaults are DESIGN.md's.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub instruments: String,
    pub accounts: String,
    pub limits: String,
    pub market_data: String,
    pub position_deltas: String,
    pub breaches: String,
    pub actions: String,
    pub regimes: String,
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            instruments: Kind::Instrument.topic().into(),
            accounts: Kind::Account.topic().into(),
            limits: Kind::Limit.topic().into(),
            market_data: Kind::Tick.topic().into(),
            position_deltas: Kind::Delta.topic().into(),
            breaches: OutTopic::Breaches.default_topic().into(),
            actions: OutTopic::Actions.default_topic().into(),
            regimes: OutTopic::Regimes.default_topic().into(),
            dead_letter: OutTopic::DeadLetter.default_topic().into(),
        }
    }
}

impl Topics {
    /// The input kinds in the order their partitions are dealt to workers: the busy topics
    /// first, so that they spread evenly.
    pub const INPUTS: [Kind; 5] = [Kind::Tick, Kind::Delta, Kind::Instrument, Kind::Account, Kind::Limit];

    /// The topic a kind of input record is read from.
    pub fn input(&self, kind: Kind) -> &str {
        match kind {
            Kind::Instrument => &self.instruments,
            Kind::Account => &self.accounts,
            Kind::Limit => &self.limits,
            Kind::Tick => &self.market_data,
            Kind::Delta => &self.position_deltas,
        }
    }

    /// The topic an output goes to.
    pub fn output(&self, topic: OutTopic) -> &str {
        match topic {
            OutTopic::Breaches => &self.breaches,
            OutTopic::Actions => &self.actions,
            OutTopic::Regimes => &self.regimes,
            OutTopic::DeadLetter => &self.dead_letter,
        }
    }
}

/// Whether a kind is reference data (read to its end before market data at startup).
pub fn is_reference(kind: Kind) -> bool {
    matches!(kind, Kind::Instrument | Kind::Account | Kind::Limit)
}

/// How to reach the cluster: bootstrap servers and librdkafka properties passed verbatim.
#[derive(Clone, Debug, Default)]
pub struct ClientSettings {
    pub brokers: String,
    /// Consumer group under which riskflow commits its durable progress (lag monitoring).
    pub group_id: String,
    pub consumer: BTreeMap<String, String>,
    pub producer: BTreeMap<String, String>,
}

/// The consumer configuration: riskflow's settings, then the user's `[kafka.consumer]`
/// properties, which win.
pub fn consumer_config(s: &ClientSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.brokers);
    // Offsets are committed under this group for monitoring (consumer lag); partitions are
    // assigned by riskflow itself, so the group never rebalances.
    c.set("group.id", &s.group_id);
    // riskflow commits only offsets whose effects are in a complete snapshot (see `progress`).
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    // Caught-up partitions are recognised from the cached high watermark, not from EOF events.
    c.set("enable.partition.eof", "false");
    // Partitions are assigned with explicit start offsets; this applies only if one is out of range.
    c.set("auto.offset.reset", "earliest");
    for (k, v) in &s.consumer {
        c.set(k, v);
    }
    c
}

/// The producer configuration: riskflow's settings, then the user's `[kafka.producer]`
/// properties, which win.
pub fn producer_config(s: &ClientSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.brokers);
    // Every in-sync replica acknowledges before a delivery counts (librdkafka's default,
    // stated because progress is recorded only after delivery).
    c.set("acks", "all");
    // Batch for up to 5 ms: throughput for `riskflow produce`, bounded delay for events.
    c.set("linger.ms", "5");
    for (k, v) in &s.producer {
        c.set(k, v);
    }
    c
}
