//! The whole risk graph from one stream of input events: the book, and limits over its live
//! output. The binary, the benches and the tests all build it through [`engine`].

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::StreamVec;

use crate::analytics::{analytics, AnalyticsConfig, AnalyticsTables, RegimeEvent};
use crate::book::{book, BookConfig, BookStats};
use crate::event::{DeadLetter, Envelope, LiveUpdate};
use crate::exposure::Ccy;
use crate::limits::{limits, LimitEvent, LimitStates, LimitsConfig};
use crate::model::Ts;
use crate::snapshot::SnapshotPart;

/// Settings of the graph.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The book's `bar_interval` is taken from `analytics.bar_ns`.
    pub book: BookConfig,
    pub limits: LimitsConfig,
    pub analytics: AnalyticsConfig,
}

impl EngineConfig {
    pub fn base_ccy(&self) -> Ccy {
        self.book.base_ccy
    }
}

/// What the graph produces, and the state it exposes for summaries.
pub struct Engine<'scope> {
    /// The book's snapshot parts and its dead letters.
    pub snapshots: StreamVec<'scope, Ts, SnapshotPart>,
    pub dead: StreamVec<'scope, Ts, DeadLetter>,
    pub limit_events: StreamVec<'scope, Ts, LimitEvent>,
    pub regime_events: StreamVec<'scope, Ts, RegimeEvent>,
    /// The analytics tables of each snapshot, at its `as_of`.
    pub analytics: StreamVec<'scope, Ts, AnalyticsTables>,
    pub stats: Rc<RefCell<BookStats>>,
    pub limit_states: LimitStates,
}

/// Builds the book, the analytics and the limits over `events` (limit definitions among them).
///
/// The book's live updates reach the limits through `observe`, which returns them as they
/// came: a caller watches the live output there (its latency, its frontier) and the updates
/// pass on by move. A second reader of the stream would get a copy of every update.
pub fn engine<'scope>(
    events: StreamVec<'scope, Ts, Envelope>,
    config: &EngineConfig,
    observe: impl FnOnce(StreamVec<'scope, Ts, LiveUpdate>) -> StreamVec<'scope, Ts, LiveUpdate>,
) -> Engine<'scope> {
    let stats = Rc::new(RefCell::new(BookStats::default()));
    let limit_states = LimitStates::default();
    let book_config = BookConfig { bar_interval: config.analytics.bar_ns, ..config.book.clone() };
    let book = book(events, book_config.clone(), stats.clone());
    let risk = analytics(book.bars, config.analytics.clone(), config.base_ccy(), config.book.rate);
    let limit_events = limits(
        observe(book.live),
        book.limits,
        risk.metrics,
        config.limits.clone(),
        book_config,
        config.base_ccy(),
        limit_states.clone(),
    );
    Engine {
        snapshots: book.snapshots,
        dead: book.dead,
        limit_events,
        regime_events: risk.regimes,
        analytics: risk.tables,
        stats,
        limit_states,
    }
}
