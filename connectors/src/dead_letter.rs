//! The dead-letter format: one JSON object per rejected record with its source position
//! (file and line, or topic, partition and offset), raw payload and reason. Replay mode
//! writes them to `<out>/dead-letter.jsonl`, Kafka mode to the `risk-dead-letter` topic
//! ([`crate::output`]).

use riskflow_dataflows::event::{DeadLetter, Origin};
use riskflow_dataflows::model::Kind;
use serde::Serialize;

/// One line of the dead-letter file.
#[derive(Serialize)]
struct Line<'a> {
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i64>,
    payload: &'a str,
    reason: &'a str,
}

/// The JSON object a dead letter is written as, in a file or on the dead-letter topic, with
/// Kafka origins named by their default topic.
pub fn to_json(d: &DeadLetter) -> String {
    to_json_with(d, &|kind| kind.topic().to_owned())
}

/// The key a dead letter is published under: its source topic and partition, or file.
pub fn source_key(d: &DeadLetter, topic_of: &dyn Fn(Kind) -> String) -> String {
    match d.origin {
        Origin::File { kind, .. } => kind.file_name().to_owned(),
        Origin::Kafka { kind, partition, .. } => format!("{}:{partition}", topic_of(kind)),
        Origin::Engine => "engine".to_owned(),
    }
}

/// [`to_json`], with the topic of a Kafka origin named by `topic_of` (topic names are configurable).
pub fn to_json_with(d: &DeadLetter, topic_of: &dyn Fn(Kind) -> String) -> String {
    let mut line = Line {
        source: "engine",
        file: None,
        line: None,
        topic: None,
        partition: None,
        offset: None,
        payload: &d.payload,
        reason: &d.reason,
    };
    match d.origin {
        Origin::File { kind, line: n } => {
            line.source = "file";
            line.file = Some(kind.file_name());
            line.line = Some(n);
        }
        Origin::Kafka { kind, partition, offset } => {
            line.source = "kafka";
            line.topic = Some(topic_of(kind));
            line.partition = Some(partition);
            line.offset = Some(offset);
        }
        Origin::Engine => {}
    }
    serde_json::to_string(&line).expect("dead letters serialise")
}
