//! riskflow's sources and sinks. Transports (replay files, Kafka, Parquet files) are kept apart from
//! the format ([`decode`]): every source turns bytes into [`riskflow_dataflows::event::Event`]s
//! or [`riskflow_dataflows::event::DeadLetter`]s the same way.

pub mod dead_letter;
pub mod decode;
pub mod jsonl;
pub mod kafka;
pub mod output;
pub mod parquet;
pub mod replay;

/// Errors of the sinks and sources.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("parquet {path}: {source}")]
    Parquet { path: String, source: ::parquet::errors::ParquetError },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("{0}")]
    Kafka(String),
}

impl ConnectorError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ConnectorError + '_ {
        move |source| ConnectorError::Io { path: path.display().to_string(), source }
    }
}
