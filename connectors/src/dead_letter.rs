//! The dead-letter sink of replay mode: `<out>/dead-letter.jsonl`, one JSON object per
//! rejected record with its source position, raw payload and reason.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use riskflow_dataflows::event::{DeadLetter, Origin};
use serde::Serialize;

use crate::ConnectorError;

/// One line of the dead-letter file.
#[derive(Serialize)]
struct Line<'a> {
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i64>,
    payload: &'a str,
    reason: &'a str,
}

/// The JSON object a dead letter is written as, in a file or on the dead-letter topic.
pub fn to_json(d: &DeadLetter) -> String {
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
            line.topic = Some(kind.topic());
            line.partition = Some(partition);
            line.offset = Some(offset);
        }
        Origin::Engine => {}
    }
    serde_json::to_string(&line).expect("dead letters serialise")
}

/// Appends dead letters to a JSON Lines file, created empty when the sink opens.
pub struct DeadLetterFile {
    path: PathBuf,
    out: BufWriter<File>,
    count: u64,
}

impl DeadLetterFile {
    pub fn create(path: &Path) -> Result<DeadLetterFile, ConnectorError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(ConnectorError::io(dir))?;
        }
        let file = File::create(path).map_err(ConnectorError::io(path))?;
        Ok(DeadLetterFile { path: path.to_owned(), out: BufWriter::new(file), count: 0 })
    }

    pub fn write(&mut self, d: &DeadLetter) -> Result<(), ConnectorError> {
        self.count += 1;
        writeln!(self.out, "{}", to_json(d)).map_err(ConnectorError::io(&self.path))
    }

    /// Number of dead letters written.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn flush(&mut self) -> Result<(), ConnectorError> {
        self.out.flush().map_err(ConnectorError::io(&self.path))
    }
}
