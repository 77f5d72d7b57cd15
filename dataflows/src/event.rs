//! What flows through the dataflow: decoded input events with their source position, the
//! dead letters that bad input becomes, and the live exposure updates of the hot path.

use serde::{Deserialize, Serialize};

use crate::exposure::{Ccy, Nanos};
use crate::model::{Account, Delta, Instrument, Kind, Limit, Scope, Tick, Ts};

/// Where a record came from, so a dead letter can point back at it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// A line (1-based) of a replay file.
    File { kind: Kind, line: u64 },
    /// A Kafka message.
    Kafka { kind: Kind, partition: i32, offset: i64 },
    /// Made by the engine itself (e.g. an end-of-input marker).
    Engine,
}

/// One decoded and validated input record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    Instrument(Instrument),
    Account(Account),
    Limit(Limit),
    Tick(Tick),
    Delta(Delta),
    /// A source has no more input; `max_ts` is the largest event time it read.
    End {
        max_ts: Ts,
    },
}

impl Event {
    /// Event time, for the kinds that carry one.
    pub fn ts(&self) -> Option<Ts> {
        match self {
            Event::Tick(t) => Some(t.ts),
            Event::Delta(d) => Some(d.ts),
            Event::End { max_ts } => Some(*max_ts),
            _ => None,
        }
    }

    pub fn kind(&self) -> Option<Kind> {
        match self {
            Event::Instrument(_) => Some(Kind::Instrument),
            Event::Account(_) => Some(Kind::Account),
            Event::Limit(_) => Some(Kind::Limit),
            Event::Tick(_) => Some(Kind::Tick),
            Event::Delta(_) => Some(Kind::Delta),
            Event::End { .. } => None,
        }
    }
}

/// An event on its way through the dataflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event: Event,
    pub origin: Origin,
    /// When the record entered the dataflow, in nanoseconds of [`crate::clock::now_ns`].
    pub ingest_ns: u64,
}

/// A record the engine could not use, with the reason; never silently dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub origin: Origin,
    /// The raw payload, or for a record that decoded but could not be resolved, the record
    /// re-encoded as JSON.
    pub payload: String,
    pub reason: String,
}

/// The hot path's output, emitted as records arrive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LiveUpdate {
    /// The exact change one input record made to one scope's exposure.
    Scope(ScopeChange),
    /// A currency's rate against the base currency moved (every worker's book sends its own).
    Rate { ccy: Ccy, rate: f64, ts: Ts, ingest_ns: u64 },
    /// A book's part of a scope's tallies, sent once, when the first limit that reads them
    /// is defined (every worker's book sends its own).
    Seed(Box<Seed>),
}

/// What a limit that reads tallies needs kept for its scope: the nets per underlying and
/// currency (a concentration limit), or the quantity of one instrument, by its route key (a
/// position_qty limit on it).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Tally {
    Nets,
    Qty(u64),
}

/// One book's part of a tally of a scope, at the definition of the first limit that reads it:
/// its positions in the scope as changes from nothing. The book marks the scope's changes
/// after it ([`ScopeChange::tally`], [`ScopeChange::tally_qty`]), so that the seeds and the
/// marked changes count every change of the scope exactly once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Seed {
    pub scope: Scope,
    pub key: u64,
    pub tally: Tally,
    /// Message time of the definition.
    pub time: Ts,
    pub ingest_ns: u64,
    /// Nets: one per (underlying, currency) the book holds in the scope. Qty: the book's
    /// quantity of the instrument in the scope, summed over the parts.
    pub parts: Vec<ScopeChange>,
}

impl LiveUpdate {
    /// [`Envelope::ingest_ns`] of the record that caused it: output time minus this is the latency.
    pub fn ingest_ns(&self) -> u64 {
        match self {
            LiveUpdate::Scope(c) => c.ingest_ns,
            LiveUpdate::Rate { ingest_ns, .. } => *ingest_ns,
            LiveUpdate::Seed(s) => s.ingest_ns,
        }
    }

    /// Event time of the record that caused it; 0 for a seed, which holds the book's state
    /// before any record of its message time.
    pub fn ts(&self) -> Ts {
        match self {
            LiveUpdate::Scope(c) => c.ts,
            LiveUpdate::Rate { ts, .. } => *ts,
            LiveUpdate::Seed(_) => 0,
        }
    }
}

/// The change one input record made to the positions of one scope (account, desk or firm)
/// in one underlying and currency: what its limits need, summed over the positions the record
/// revalued. Names are [`crate::route_hash`] keys, the same in every process, so that
/// downstream operators need no strings.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeChange {
    pub scope: Scope,
    /// Route key of the account, desk or firm.
    pub key: u64,
    pub underlying: u64,
    /// Currency of the delta legs.
    pub ccy: Ccy,
    /// Change of Σ E and of Σ |E| (nanos, exact).
    pub net: Nanos,
    pub gross: Nanos,
    /// The instrument whose quantity changed by `qty` (1e-8 units): a delta changes one.
    pub instrument: u64,
    pub qty: i64,
    /// Event time of the record that caused the change.
    pub ts: Ts,
    pub ingest_ns: u64,
    /// The scope has a concentration limit, and the book sent the [`Seed`] of its nets
    /// before this change: the nets take it.
    pub tally: bool,
    /// The scope has a position_qty limit on `instrument`, and the book sent the [`Seed`] of
    /// that quantity before this change: the quantity takes `qty`.
    pub tally_qty: bool,
}
