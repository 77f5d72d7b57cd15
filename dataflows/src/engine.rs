//! The whole risk graph from one stream of input events: the book, and limits over its live
//! output. The binary, the benches and the tests all build it through [`engine`].

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::operators::vec::{Map, ToStream};
use timely::dataflow::StreamVec;

use crate::book::{book, BookConfig, BookStats, BookStreams};
use crate::event::{Envelope, Event};
use crate::exposure::Ccy;
use crate::limits::{limits, LimitEvent, LimitStates, LimitsConfig, MetricUpdate};
use crate::model::Ts;

/// Settings of the graph.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub book: BookConfig,
    pub limits: LimitsConfig,
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
    pub stats: Rc<RefCell<BookStats>>,
    pub limit_states: LimitStates,
}

/// Builds the book and the limits over `events` (limit definitions among them).
pub fn engine<'scope>(events: StreamVec<'scope, Ts, Envelope>, config: &EngineConfig) -> Engine<'scope> {
    let stats = Rc::new(RefCell::new(BookStats::default()));
    let limit_states = LimitStates::default();
    let definitions = events.clone().flat_map(|env| match env.event {
        Event::Limit(limit) => Some(limit),
        _ => None,
    });
    let scope = events.scope();
    let book = book(events, config.book.clone(), stats.clone());
    // VaR, ES and stress figures join here once the analytics produce them.
    let metrics = Vec::<MetricUpdate>::new().to_stream(scope);
    let limit_events =
        limits(book.live.clone(), definitions, metrics, config.limits.clone(), config.base_ccy(), limit_states.clone());
    Engine { book, limit_events, stats, limit_states }
}
