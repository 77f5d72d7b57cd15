//! A JSON Lines file sink: replay mode's stand-in for an output topic
//! (`dead-letter.jsonl`, `risk-breaches.jsonl`, `risk-actions.jsonl`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::ConnectorError;

/// Appends lines to a file that is created empty when the sink opens.
pub struct JsonlFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlFile {
    pub fn create(path: &Path) -> Result<JsonlFile, ConnectorError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(ConnectorError::io(dir))?;
        }
        let file = File::create(path).map_err(ConnectorError::io(path))?;
        Ok(JsonlFile { path: path.to_owned(), out: BufWriter::new(file) })
    }

    /// Appends one line (a JSON object without its newline).
    pub fn write_line(&mut self, json: &str) -> Result<(), ConnectorError> {
        writeln!(self.out, "{json}").map_err(ConnectorError::io(&self.path))
    }

    /// Appends one value as JSON.
    pub fn write<T: serde::Serialize>(&mut self, value: &T) -> Result<(), ConnectorError> {
        let json = serde_json::to_string(value).expect("records serialise");
        self.write_line(&json)
    }

    pub fn flush(&mut self) -> Result<(), ConnectorError> {
        self.out.flush().map_err(ConnectorError::io(&self.path))
    }
}
