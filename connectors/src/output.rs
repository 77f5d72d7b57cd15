//! The engine's event outputs (DESIGN.md §4, §5): limit breaches, trading actions, regime
//! changes and dead letters, each a JSON object with a key. One sink contract, two transports:
//! JSON Lines files in the output directory (replay mode) and Kafka topics
//! ([`crate::kafka::publish::KafkaOutputs`]).
//!
//! Adding an output stream is one line in the wiring: map its records to [`Output`] with the
//! right [`OutTopic`].

use std::path::Path;

use riskflow_dataflows::analytics::RegimeEvent;
use riskflow_dataflows::event::DeadLetter;
use riskflow_dataflows::limits::LimitEvent;
use riskflow_dataflows::model::Ts;
use serde::{Deserialize, Serialize};

use crate::jsonl::JsonlFile;
use crate::ConnectorError;

/// Which output an event goes to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OutTopic {
    Breaches,
    Actions,
    Regimes,
    DeadLetter,
}

impl OutTopic {
    pub const ALL: [OutTopic; 4] = [OutTopic::Breaches, OutTopic::Actions, OutTopic::Regimes, OutTopic::DeadLetter];

    /// The default topic name (DESIGN.md §4).
    pub fn default_topic(self) -> &'static str {
        match self {
            OutTopic::Breaches => "risk-breaches",
            OutTopic::Actions => "risk-actions",
            OutTopic::Regimes => "risk-regimes",
            OutTopic::DeadLetter => "risk-dead-letter",
        }
    }

    /// The file replay mode writes it to, in the output directory.
    pub fn file_name(self) -> &'static str {
        match self {
            OutTopic::Breaches => "risk-breaches.jsonl",
            OutTopic::Actions => "risk-actions.jsonl",
            OutTopic::Regimes => "risk-regimes.jsonl",
            OutTopic::DeadLetter => "dead-letter.jsonl",
        }
    }
}

/// One output event: where it goes, its key (`scope:scope_id` for limit events) and its JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub topic: OutTopic,
    pub key: String,
    pub json: String,
    /// When the input record that caused it entered the dataflow, if one did (latency).
    pub ingest_ns: Option<u64>,
    /// Not an event but where a limit or scope stands at a restart's horizon
    /// ([`LimitEvent::Standing`]): a sink publishes it only as a correction of what its
    /// topic says.
    pub standing: bool,
}

impl Output {
    /// A breach or action event, keyed by its scope.
    pub fn limit_event(event: &LimitEvent) -> Output {
        let (topic, key, json) = match event {
            LimitEvent::Standing(now) => return Output { standing: true, ingest_ns: None, ..Output::limit_event(now) },
            LimitEvent::Breach(b) => {
                (OutTopic::Breaches, format!("{}:{}", b.scope.as_str(), b.scope_id), serde_json::to_string(b))
            }
            LimitEvent::Action(a) => {
                (OutTopic::Actions, format!("{}:{}", a.scope.as_str(), a.scope_id), serde_json::to_string(a))
            }
        };
        Output {
            topic,
            key,
            json: without_ingest(json.expect("limit events serialise")),
            ingest_ns: Some(event.ingest_ns()),
            standing: false,
        }
    }

    /// A regime change, keyed by its signal.
    pub fn regime(event: &RegimeEvent) -> Output {
        let json = serde_json::to_string(event).expect("regime events serialise");
        Output { topic: OutTopic::Regimes, key: event.signal.clone(), json, ingest_ns: None, standing: false }
    }

    /// A dead letter, keyed by where it came from, in the format of [`crate::dead_letter`];
    /// `topic_of` names the topic of a Kafka origin.
    pub fn dead_letter(d: &DeadLetter, topic_of: &dyn Fn(riskflow_dataflows::model::Kind) -> String) -> Output {
        let key = crate::dead_letter::source_key(d, topic_of);
        Output {
            topic: OutTopic::DeadLetter,
            key,
            json: crate::dead_letter::to_json_with(d, topic_of),
            ingest_ns: None,
            standing: false,
        }
    }
}

/// The published form of an event: without `ingest_ns`, which is this process's clock (it
/// travels between workers for the latency measurement only).
fn without_ingest(json: String) -> String {
    let mut value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    if let Some(map) = value.as_object_mut() {
        map.remove("ingest_ns");
    }
    value.to_string()
}

/// Where output events go. `time` is the dataflow time of the event.
pub trait OutputSink {
    /// Hands one event over; an error is fatal for the run.
    fn publish(&mut self, time: Ts, output: &Output) -> Result<(), ConnectorError>;
    /// Called when no limit or regime event at a time before `frontier` can arrive any more
    /// (`None`: none at all). Dead letters do not move it: the book holds unresolved records,
    /// and their dead letters, until the end of input.
    fn frontier(&mut self, frontier: Option<Ts>) -> Result<(), ConnectorError>;
    /// Makes what was handed over visible (flush, serve delivery reports).
    fn poll(&mut self) -> Result<(), ConnectorError>;
}

/// Replay mode's outputs: one JSON Lines file per [`OutTopic`], created empty at start.
pub struct JsonlOutputs {
    files: Vec<(OutTopic, JsonlFile)>,
}

impl JsonlOutputs {
    /// Creates (truncates) the files of `topics` in `dir`.
    pub fn create(dir: &Path, topics: &[OutTopic]) -> Result<JsonlOutputs, ConnectorError> {
        let mut files = Vec::new();
        for &t in topics {
            files.push((t, JsonlFile::create(&dir.join(t.file_name()))?));
        }
        Ok(JsonlOutputs { files })
    }
}

impl OutputSink for JsonlOutputs {
    /// A replay has no restart, and so no standing report to publish.
    fn publish(&mut self, _time: Ts, output: &Output) -> Result<(), ConnectorError> {
        match self.files.iter_mut().find(|(t, _)| *t == output.topic && !output.standing) {
            Some((_, file)) => file.write_line(&output.json),
            None => Ok(()),
        }
    }

    /// Files are flushed whenever the frontier moves, so a reader sees each event soon after it.
    fn frontier(&mut self, _frontier: Option<Ts>) -> Result<(), ConnectorError> {
        self.poll()
    }

    fn poll(&mut self) -> Result<(), ConnectorError> {
        self.files.iter_mut().try_for_each(|(_, f)| f.flush())
    }
}
