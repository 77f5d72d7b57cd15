//! Which input is covered by a complete snapshot, per partition, and the file that keeps it.
//!
//! ```text
//!   worker w: PartitionLog per partition ── ProgressMark{boundary S, offset} @ time ≤ S ─exchange(→0)─┐
//!                                                                                                    v
//!   worker 0: OffsetBook ── when snapshot S is complete and its events delivered ──> <out>/_offsets.json, commit
//! ```
//!
//! A record of partition p read at offset o enters the dataflow at some time t. For a snapshot
//! boundary S, the *covered offset* of p is the first offset whose record is not in the
//! snapshot at S: the smallest offset sent at a time after S, or the next offset to read if
//! there is none. Just before a worker's time passes S it sends, at a time not after S, one
//! [`ProgressMark`] per partition; so when worker 0's frontier passes S it holds every
//! partition's covered offset for S. Once the snapshot at S is complete (its `_SUCCESS`
//! marker written) and every output event up to S delivered, `_offsets.json` records S and
//! those offsets, and they are committed to the broker under the consumer group.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use riskflow_dataflows::model::Ts;
use serde::{Deserialize, Serialize};

use crate::ConnectorError;

/// The file, in the output directory, that records the last durable point.
pub const OFFSETS_FILE: &str = "_offsets.json";

/// The boundary of the marks a finite run sends when it has read everything.
pub const ALL_READ: Ts = Ts::MAX;

/// Offsets sent per dataflow time for one partition.
#[derive(Clone, Debug)]
pub struct PartitionLog {
    next: i64,
    /// Dataflow time → the smallest offset sent at it.
    by_time: BTreeMap<Ts, i64>,
    last_time: Option<Ts>,
}

impl PartitionLog {
    /// A partition whose next offset to read is `start`.
    pub fn new(start: i64) -> PartitionLog {
        PartitionLog { next: start, by_time: BTreeMap::new(), last_time: None }
    }

    /// The record at `offset` entered the dataflow at `time`.
    #[inline]
    pub fn sent(&mut self, time: Ts, offset: i64) {
        self.next = self.next.max(offset + 1);
        if self.last_time != Some(time) {
            self.last_time = Some(time);
            self.by_time.entry(time).or_insert(offset);
        }
    }

    /// The first offset whose record is not at a time ≤ `boundary`.
    pub fn covered(&self, boundary: Ts) -> i64 {
        let later = self.by_time.range(boundary.saturating_add(1)..).map(|(_, &o)| o).min();
        later.map_or(self.next, |o| o.min(self.next))
    }

    /// Forgets times ≤ `boundary` (the worker's time has passed it).
    pub fn prune(&mut self, boundary: Ts) {
        self.by_time = self.by_time.split_off(&boundary.saturating_add(1));
        if self.last_time.is_some_and(|t| t <= boundary) {
            self.last_time = None;
        }
    }
}

/// A partition's covered offset for a snapshot boundary, sent to worker 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressMark {
    pub boundary: Ts,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Worker 0's collection of progress marks.
#[derive(Clone, Debug, Default)]
pub struct OffsetBook {
    marks: BTreeMap<(String, i32), BTreeMap<Ts, i64>>,
}

impl OffsetBook {
    pub fn add(&mut self, mark: ProgressMark) {
        let by_boundary = self.marks.entry((mark.topic, mark.partition)).or_default();
        let offset = by_boundary.entry(mark.boundary).or_insert(mark.offset);
        *offset = (*offset).max(mark.offset);
    }

    /// Per partition, the covered offset of the latest boundary ≤ `as_of` (partitions with
    /// none are left out).
    pub fn at(&self, as_of: Ts) -> Vec<CommittedOffset> {
        self.marks
            .iter()
            .filter_map(|((topic, partition), by)| {
                let (_, &offset) = by.range(..=as_of).next_back()?;
                Some(CommittedOffset { topic: topic.clone(), partition: *partition, offset })
            })
            .collect()
    }

    /// Forgets marks that a later durable point than `as_of` cannot need.
    pub fn prune(&mut self, as_of: Ts) {
        for by in self.marks.values_mut() {
            if let Some((&keep, _)) = by.range(..=as_of).next_back() {
                *by = by.split_off(&keep);
            }
        }
    }
}

/// One partition's committed offset: the next offset to read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The content of `_offsets.json`: the last snapshot that is complete with every output event
/// up to it delivered, and the input offsets it covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durable {
    pub as_of: Ts,
    pub offsets: Vec<CommittedOffset>,
}

impl Durable {
    /// The committed offset of a partition, if any.
    pub fn offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets.iter().find(|o| o.topic == topic && o.partition == partition).map(|o| o.offset)
    }

    /// Reads `<out>/_offsets.json`; `None` if there is none (a fresh output directory).
    pub fn read(out: &Path) -> Result<Option<Durable>, ConnectorError> {
        let path = out.join(OFFSETS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| ConnectorError::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ConnectorError::io(&path)(e)),
        }
    }

    /// Writes `<out>/_offsets.json` atomically (temporary file, fsync, rename, directory fsync).
    pub fn write(&self, out: &Path) -> Result<(), ConnectorError> {
        let path = out.join(OFFSETS_FILE);
        let tmp: PathBuf = out.join(format!(".{OFFSETS_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(self).expect("offsets serialise");
        let mut file = File::create(&tmp).map_err(ConnectorError::io(&tmp))?;
        file.write_all(&json).and_then(|_| file.sync_all()).map_err(ConnectorError::io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(ConnectorError::io(&path))?;
        File::open(out).and_then(|d| d.sync_all()).map_err(ConnectorError::io(out))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_offsets_stop_at_the_first_record_after_the_boundary() {
        let mut log = PartitionLog::new(10);
        assert_eq!(log.covered(100), 10, "nothing read");
        log.sent(100, 10);
        log.sent(100, 11);
        log.sent(300, 12); // ahead of the others: not in the snapshot at 200
        log.sent(200, 13); // later offset, earlier time (within lateness)
        assert_eq!(log.covered(100), 12);
        assert_eq!(log.covered(200), 12);
        assert_eq!(log.covered(300), 14);
        log.prune(200);
        assert_eq!(log.covered(200), 12, "pruning keeps what later boundaries need");
        log.sent(400, 14);
        assert_eq!(log.covered(300), 14);
    }

    #[test]
    fn the_book_answers_with_the_latest_boundary_not_after_as_of() {
        let mut book = OffsetBook::default();
        let mark = |boundary, partition, offset| ProgressMark { boundary, topic: "t".into(), partition, offset };
        book.add(mark(60, 0, 5));
        book.add(mark(120, 0, 9));
        book.add(mark(120, 1, 3));
        let at = |b: &OffsetBook, as_of| b.at(as_of).into_iter().map(|o| (o.partition, o.offset)).collect::<Vec<_>>();
        assert_eq!(at(&book, 59), vec![]);
        assert_eq!(at(&book, 90), vec![(0, 5)]);
        assert_eq!(at(&book, 120), vec![(0, 9), (1, 3)]);
        book.prune(120);
        assert_eq!(at(&book, 500), vec![(0, 9), (1, 3)]);
        book.add(mark(ALL_READ, 0, 20));
        assert_eq!(at(&book, ALL_READ), vec![(0, 20), (1, 3)]);
    }

    #[test]
    fn the_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("riskflow-offsets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Durable::read(&dir).unwrap(), None);
        let d = Durable { as_of: 42, offsets: vec![CommittedOffset { topic: "m".into(), partition: 2, offset: 7 }] };
        d.write(&dir).unwrap();
        assert_eq!(Durable::read(&dir).unwrap(), Some(d.clone()));
        assert_eq!(d.offset("m", 2), Some(7));
        assert_eq!(d.offset("m", 1), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
