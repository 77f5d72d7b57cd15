//! The whole risk graph from one stream of input events: the book, and limits over its live
//! output. The binary, the benches and the tests all build it through [`engine`].

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::StreamVec;

use crate::analytics::{analytics, AnalyticsConfig, AnalyticsTables, RegimeEvent};
use crate::book::{book, BookConfig, BookStats, BookStreams};
use crate::event::Envelope;
use crate::exposure::Ccy;
use crate::limits::{limits, LimitEvent, LimitStates, LimitsConfig};
use crate::model::Ts;

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
    pub book: BookStreams<'scope>,
    pub limit_events: StreamVec<'scope, Ts, LimitEvent>,
    pub regime_events: StreamVec<'scope, Ts, RegimeEvent>,
    /// The analytics tables of each snapshot, at its `as_of`.
    pub analytics: StreamVec<'scope, Ts, AnalyticsTables>,
    pub stats: Rc<RefCell<BookStats>>,
    pub limit_states: LimitStates,
}

/// Builds the book, the analytics and the limits over `events` (limit definitions among them).
pub fn engine<'scope>(events: StreamVec<'scope, Ts, Envelope>, config: &EngineConfig) -> Engine<'scope> {
    let stats = Rc::new(RefCell::new(BookStats::default()));
    let limit_states = LimitStates::default();
    let book_config = BookConfig { bar_interval: config.analytics.bar_ns, ..config.book.clone() };
    let book = book(events, book_config, stats.clone());
    let risk = analytics(book.bars.clone(), config.analytics.clone(), config.base_ccy(), config.book.rate);
    let limit_events = limits(
        book.live.clone(),
        book.limits.clone(),
        risk.metrics,
        config.limits.clone(),
        config.base_ccy(),
        limit_states.clone(),
    );
    Engine { book, limit_events, regime_events: risk.regimes, analytics: risk.tables, stats, limit_states }
}
