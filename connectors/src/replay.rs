//! Replay mode's source: a dataset directory of JSON Lines files (DESIGN.md §2), read in
//! event-time order.
//!
//! Reference files (`instruments`, `accounts`, `limits`) are read whole by worker 0 and
//! broadcast by the dataflow. `market.jsonl` and `positions.jsonl` are shared out by line:
//! worker `w` of `n` decodes lines `w, w+n, w+2n, …`, so every line is read by exactly one
//! worker; each worker merges its two shares by `ts`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use riskflow_dataflows::event::{DeadLetter, Event, Origin};
use riskflow_dataflows::model::{Kind, Ts};

use crate::decode::decode;
use crate::ConnectorError;

/// A decoded record or the dead letter it became.
pub type Record = Result<(Event, Origin), DeadLetter>;

/// The lines of one file that belong to one worker.
struct Lines {
    kind: Kind,
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
    worker: u64,
    peers: u64,
    buf: Vec<u8>,
}

impl Lines {
    fn open(dir: &Path, kind: Kind, worker: usize, peers: usize) -> Result<Option<Lines>, ConnectorError> {
        let path = dir.join(kind.file_name());
        if !path.exists() {
            return Ok(None);
        }
        let file = File::open(&path).map_err(ConnectorError::io(&path))?;
        Ok(Some(Lines {
            kind,
            path,
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
            worker: worker as u64,
            peers: peers as u64,
            buf: Vec::new(),
        }))
    }

    /// The next of this worker's non-blank lines, decoded.
    fn next(&mut self) -> Result<Option<Record>, ConnectorError> {
        loop {
            self.buf.clear();
            let n = self.reader.read_until(b'\n', &mut self.buf).map_err(ConnectorError::io(&self.path))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if (self.line - 1) % self.peers != self.worker {
                continue;
            }
            let raw = self.buf.trim_ascii();
            if raw.is_empty() {
                continue;
            }
            let origin = Origin::File { kind: self.kind, line: self.line };
            return Ok(Some(match decode(self.kind, raw) {
                Ok(event) => Ok((event, origin)),
                Err(reason) => Err(DeadLetter { origin, payload: String::from_utf8_lossy(raw).into_owned(), reason }),
            }));
        }
    }
}

/// One worker's view of a dataset directory.
pub struct Replay {
    reference: Vec<Lines>,
    streams: Vec<(Lines, Option<Record>)>,
    max_ts: Ts,
}

impl Replay {
    /// Opens `dir` for worker `worker` of `peers`. Fails if the directory or its
    /// `instruments.jsonl` is missing; other files are optional.
    pub fn open(dir: &Path, worker: usize, peers: usize) -> Result<Replay, ConnectorError> {
        let must = dir.join(Kind::Instrument.file_name());
        if !must.exists() {
            return Err(ConnectorError::Io {
                path: must.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a dataset directory"),
            });
        }
        let mut reference = Vec::new();
        if worker == 0 {
            for kind in [Kind::Instrument, Kind::Account, Kind::Limit] {
                reference.extend(Lines::open(dir, kind, 0, 1)?);
            }
        }
        let mut streams = Vec::new();
        for kind in [Kind::Tick, Kind::Delta] {
            if let Some(mut lines) = Lines::open(dir, kind, worker, peers)? {
                let head = lines.next()?;
                streams.push((lines, head));
            }
        }
        Ok(Replay { reference, streams, max_ts: 0 })
    }

    /// Every reference record (instruments, accounts, limits) of this worker, in file order.
    pub fn reference(&mut self) -> Result<Vec<Record>, ConnectorError> {
        let mut out = Vec::new();
        for lines in &mut self.reference {
            while let Some(r) = lines.next()? {
                out.push(r);
            }
        }
        self.reference.clear();
        Ok(out)
    }

    /// The next market or position record in event-time order (dead letters as soon as met);
    /// `None` at the end of both files.
    pub fn next_record(&mut self) -> Result<Option<Record>, ConnectorError> {
        let key = |head: &Option<Record>| match head {
            Some(Ok((event, _))) => Some(event.ts().unwrap_or(0)),
            Some(Err(_)) => Some(0),
            None => None,
        };
        let pick = self.streams.iter().enumerate().filter_map(|(i, (_, head))| key(head).map(|k| (k, i))).min();
        let Some((_, i)) = pick else { return Ok(None) };
        let (lines, head) = &mut self.streams[i];
        let next = lines.next()?;
        let record = std::mem::replace(head, next).expect("picked a head");
        if let Ok((event, _)) = &record {
            self.max_ts = self.max_ts.max(event.ts().unwrap_or(0));
        }
        Ok(Some(record))
    }

    /// The largest event time read so far.
    pub fn max_ts(&self) -> Ts {
        self.max_ts
    }
}

/// The bar length a dataset declares (`bar_ns` in its `dataset.toml`), if any.
pub fn dataset_bar_ns(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("dataset.toml")).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "bar_ns").then(|| value.trim().parse().ok()).flatten()
    })
}
