//! Limits, breaches and automated responses (DESIGN.md §4).
//!
//! ```text
//!   live ScopeChange (per record and scope) ─── exchange(scope) ─┐
//!   live Rate ─────────────────────────────────── own worker ────┤
//!   Limit definitions ──────────────────────────── exchange(scope) ┼─> Limits ─> LimitEvent (breach, action)
//!   MetricUpdate (VaR, ES, stress per scope) ───── exchange(scope) ┘
//! ```
//!
//! Each worker owns the scopes routed to it: it keeps their exact exposure sums per currency,
//! and re-evaluates the scope's limits after every input record that changed it (and, on an fx
//! rate move, those of every scope holding that currency). A limit that reads a tally has it
//! kept for its scope: the nets per underlying for a concentration limit, the quantity of its
//! instrument for a position_qty limit. Each book sends its part of the tally when the first
//! such limit is defined (a [`Seed`]) and marks the changes it takes after it; the limit is
//! first evaluated once every book's seed is in. No other scope or instrument pays for tallies.
//!
//! Utilisation u = |metric| / limit; the state is BREACH at u ≥ 1, WARN at u ≥ warn_at, else
//! OK, except that leaving BREACH needs u < 1 − hysteresis. An event is
//! emitted only when the state changes. A BREACH of a hard limit moves the scope's trading
//! state to REDUCING (or HALTED); when no hard limit of the scope is in BREACH any more, it
//! returns to ACTIVE. Event times never go backwards for a limit: an event carries the largest
//! event time that limit has seen.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::book::BookConfig;
use crate::event::{LiveUpdate, ScopeChange, Seed, Tally};
use crate::exposure::{Ccy, Nanos};
use crate::formulas::from_nanos;
use crate::growing::GrowingMap;
use crate::model::{Limit, Scope, TradingState, Ts};

/// Defaults for limits that do not set their own.
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    pub warn_at: f64,
    pub hysteresis: f64,
    pub breach_action: TradingState,
    /// A restart's horizon (Kafka): once every input is past this time, each worker reports
    /// where its limits and scopes stand ([`LimitEvent::Standing`]), at the time just after and
    /// before any later input, so that the sink can bring the output topics to those states.
    pub standing_at: Option<Ts>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { warn_at: 0.8, hysteresis: 0.05, breach_action: TradingState::Reducing, standing_at: None }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LimitState {
    Ok,
    Warn,
    Breach,
}

impl LimitState {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitState::Ok => "OK",
            LimitState::Warn => "WARN",
            LimitState::Breach => "BREACH",
        }
    }

    /// The state at utilisation `u`, coming from `prev` (DESIGN.md §4).
    pub fn next(prev: LimitState, u: f64, warn_at: f64, hysteresis: f64) -> LimitState {
        if u >= 1.0 || (prev == LimitState::Breach && u >= 1.0 - hysteresis) {
            LimitState::Breach
        } else if u >= warn_at {
            LimitState::Warn
        } else {
            LimitState::Ok
        }
    }
}

/// What a limit measures.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Metric {
    Gross,
    Net,
    Var,
    Es,
    Stress,
    Concentration,
    /// Quantity of one instrument (its route key).
    PositionQty(u64),
}

impl Metric {
    /// The tally of its scope the metric reads, which the books seed at the first such limit.
    pub fn tally(&self) -> Option<Tally> {
        match self {
            Metric::Concentration => Some(Tally::Nets),
            Metric::PositionQty(instrument) => Some(Tally::Qty(*instrument)),
            _ => None,
        }
    }

    /// Parses a limit's `metric` field; `None` if unknown.
    pub fn parse(s: &str) -> Option<Metric> {
        Some(match s {
            "gross" => Metric::Gross,
            "net" => Metric::Net,
            "var" => Metric::Var,
            "es" => Metric::Es,
            "stress" => Metric::Stress,
            "concentration" => Metric::Concentration,
            other => {
                Metric::PositionQty(crate::route_hash(other.strip_prefix("position_qty:").filter(|i| !i.is_empty())?))
            }
        })
    }
}

/// A state change of one limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BreachEvent {
    pub ts: Ts,
    pub limit_id: String,
    pub scope: Scope,
    pub scope_id: String,
    pub metric: String,
    pub value: f64,
    pub limit: f64,
    pub utilisation: f64,
    pub state: LimitState,
    pub prev_state: LimitState,
    /// When the record that caused it entered the dataflow (latency; not in published events).
    pub ingest_ns: u64,
}

/// A change of one scope's trading state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionEvent {
    pub ts: Ts,
    pub scope: Scope,
    pub scope_id: String,
    pub state: TradingState,
    pub prev_state: TradingState,
    /// The limit whose breach (or clearing) caused it.
    pub limit_id: String,
    pub ingest_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LimitEvent {
    Breach(BreachEvent),
    Action(ActionEvent),
    /// Not a change: where a limit (a `Breach` with `prev_state == state`) or a scope's trading
    /// state (an `Action`) stands at a restart's horizon ([`LimitsConfig::standing_at`]).
    Standing(Box<LimitEvent>),
}

impl LimitEvent {
    pub fn ingest_ns(&self) -> u64 {
        match self {
            LimitEvent::Breach(b) => b.ingest_ns,
            LimitEvent::Action(a) => a.ingest_ns,
            LimitEvent::Standing(e) => e.ingest_ns(),
        }
    }
}

/// A figure another measure computed for a scope (VaR, ES, worst stress loss).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricUpdate {
    pub scope: Scope,
    pub scope_id: String,
    pub metric: Metric,
    pub value: f64,
    pub ts: Ts,
    pub ingest_ns: u64,
}

/// What reaches the limits operator, from its three inputs.
#[derive(Debug)]
enum Input {
    /// A scope change, with the index of its scope's state (found as the input is taken in).
    Change(usize, ScopeChange),
    /// A rate move or a seed.
    Live(LiveUpdate),
    Define(Box<Limit>),
    Metric(Box<MetricUpdate>),
}

/// The current state of every limit a worker owns, for summaries and tests.
pub type LimitStates = std::rc::Rc<std::cell::RefCell<Vec<(String, LimitState, f64)>>>;

/// Evaluates limits against live exposures and other measures' figures; emits an event on
/// every limit state change and every trading state change. `states` is refreshed with each
/// limit's state and utilisation.
pub fn limits<'scope>(
    live: StreamVec<'scope, Ts, LiveUpdate>,
    definitions: StreamVec<'scope, Ts, Limit>,
    metrics: StreamVec<'scope, Ts, MetricUpdate>,
    config: LimitsConfig,
    boundaries: BookConfig,
    base_ccy: Ccy,
    states: LimitStates,
) -> StreamVec<'scope, Ts, LimitEvent> {
    let (index, peers) = (live.scope().index() as u64, live.scope().peers());
    let mut builder = OperatorBuilder::new("Limits".to_owned(), live.scope());
    // Every worker's book sends its own rate moves to its own limits, down the same channel
    // as its position changes, so that a limit sees a rate move before the changes that follow it.
    let route_live = move |u: &LiveUpdate| match u {
        LiveUpdate::Scope(c) => c.key,
        LiveUpdate::Rate { .. } => index,
        LiveUpdate::Seed(s) => s.key,
    };
    let mut live = builder.new_input(live, Exchange::new(route_live));
    let mut definitions = builder.new_input(definitions, Exchange::new(|l: &Limit| crate::route_hash(&l.scope_id)));
    let mut metrics = builder.new_input(metrics, Exchange::new(|m: &MetricUpdate| crate::route_hash(&m.scope_id)));
    let (out, events) = builder.new_output();
    let mut out = OutputBuilder::from(out);
    builder.build(move |caps| {
        // A restart's horizon, and the capability its standing report goes out under.
        let mut standing = config.standing_at.map(|h| (h, caps[0].delayed(&(h + 1))));
        let mut state = State::new(config, base_ccy, peers);
        let mut buf = Vec::new();
        // An activation's inputs and their messages' capabilities, kept at their size (a tick
        // brings ~50 changes): emptied, never freed.
        let (mut inputs, mut caps) = (Vec::new(), Vec::new());
        // Inputs that wait for a figure or for the changes before one (see below), in order,
        // and a capability of each time they hold.
        let mut held: Vec<Pending> = Vec::new();
        let mut held_caps: BTreeMap<Ts, Capability<Ts>> = BTreeMap::new();
        move |frontiers| {
            let mut out = out.activate();
            // Processed in event-time order, each event emitted under the capability of the
            // message that caused it.
            live.for_each(|cap, data| {
                let time = crate::time_of(&cap);
                // Each change's scope is looked up: the slots are loaded all at once, first.
                for u in data.iter() {
                    if let LiveUpdate::Scope(c) = u {
                        state.scope_ids.prefetch((c.scope, c.key));
                    }
                }
                inputs.extend(data.drain(..).map(|u| {
                    let ts = u.ts();
                    let input = match u {
                        LiveUpdate::Scope(c) => Input::Change(state.scope((c.scope, c.key)), c),
                        u => Input::Live(u),
                    };
                    (time, ts, caps.len(), input)
                }));
                caps.push(cap);
            });
            definitions.for_each(|cap, data| {
                let time = crate::time_of(&cap);
                inputs.extend(data.drain(..).map(|l| (time, time, caps.len(), Input::Define(Box::new(l)))));
                caps.push(cap);
            });
            let mut figures = false;
            metrics.for_each(|cap, data| {
                let time = crate::time_of(&cap);
                figures = true;
                inputs.extend(data.drain(..).map(|m| (time, m.ts, caps.len(), Input::Metric(Box::new(m)))));
                caps.push(cap);
            });
            if !inputs.is_sorted_by_key(key) {
                inputs.sort_by_key(key);
            }
            // A bar end's figures (VaR, ES, stress) come from the analytics' thread after the
            // records of that time, while later records are already flowing. So that every
            // limit and trading state sees them in event-time order however the threads run,
            // a figure waits until every change of its time is in, and a change (or definition)
            // of a later time until the figures of the boundary before it are. Nothing after a
            // restart's horizon goes before the standing report.
            let (live_frontier, figure_frontier) = (&frontiers[0], &frontiers[2]);
            let horizon = standing.as_ref().map(|(h, _)| *h);
            let passed = horizon.is_some_and(|h| frontiers.iter().all(|f| !f.less_equal(&h)));
            let waits = |(time, _, _, input): &Pending| {
                horizon.is_some_and(|h| *time > h && !passed)
                    || match input {
                        Input::Metric(_) => live_frontier.less_equal(time),
                        _ => {
                            let boundary = boundaries.boundary_before(*time);
                            boundary > 0 && figure_frontier.less_equal(&boundary)
                        }
                    }
            };
            let ready = match held.first() {
                // Still waiting: only what comes before it may go.
                Some(first) if waits(first) => {
                    let first = key(first);
                    inputs.iter().position(|p| key(p) >= first || waits(p)).unwrap_or(inputs.len())
                }
                // The wait is over: the new inputs join the held ones, which came first (every
                // change since the bar end), rather than the held being moved behind them.
                Some(_) => {
                    join(&mut held, &mut inputs);
                    std::mem::swap(&mut inputs, &mut held);
                    inputs.iter().position(waits).unwrap_or(inputs.len())
                }
                // A figure can wait; a change waits only if the last (latest) one does.
                None => match inputs.last() {
                    Some(last) if figures || waits(last) => inputs.iter().position(waits).unwrap_or(inputs.len()),
                    _ => inputs.len(),
                },
            };
            // Loaded ahead a slice at a time: a replay's activation can hold thousands of
            // changes, whose states would push one another out of the cache before use. The
            // standing report goes between those up to the horizon and those after.
            let before = horizon.map_or(ready, |h| inputs[..ready].partition_point(|p| p.0 <= h));
            for (pass, n) in [before, ready - before].into_iter().enumerate() {
                if pass == 1 && passed {
                    let (_, cap) = standing.take().expect("a horizon is pending");
                    state.standing(&mut buf);
                    out.session(&cap).give_iterator(buf.drain(..));
                }
                let mut todo = inputs.drain(..n);
                while !todo.as_slice().is_empty() {
                    state.prefetch(&todo.as_slice()[..todo.len().min(PREFETCH_SLICE)]);
                    for (time, _, c, input) in todo.by_ref().take(PREFETCH_SLICE) {
                        state.on_input(input, time, &mut buf);
                        if !buf.is_empty() {
                            match caps.get(c) {
                                Some(cap) => out.session(cap).give_iterator(buf.drain(..)),
                                None => out.session(&held_caps[&time]).give_iterator(buf.drain(..)),
                            }
                        }
                    }
                }
            }
            // What waits keeps a capability of its time.
            if !inputs.is_empty() {
                // Sorted by time: one lookup per time, not one per input.
                let mut kept = None;
                for (time, _, c, _) in &mut inputs {
                    if let Some(cap) = caps.get(*c) {
                        if kept != Some(*time) {
                            held_caps.entry(*time).or_insert_with(|| cap.delayed(time, 0));
                            kept = Some(*time);
                        }
                        *c = HELD;
                    }
                }
                join(&mut held, &mut inputs);
            }
            held_caps = match held.first() {
                Some(first) => held_caps.split_off(&first.0),
                None => BTreeMap::new(),
            };
            // Holding a message's capability past the activation would hold back the frontier.
            caps.clear();
            // Published once the input is exhausted, for the run's summary.
            if frontiers.iter().all(|f| f.is_empty()) {
                let mut snapshot: Vec<_> =
                    state.limits.iter().flatten().map(|l| (l.def.id.clone(), l.state, l.utilisation())).collect();
                snapshot.sort_by(|a, b| a.0.cmp(&b.0));
                *states.borrow_mut() = snapshot;
            }
        }
    });
    events
}

/// An input with its time, event time and the index of its message's capability (`HELD`
/// while it waits: then its time's kept capability).
type Pending = (Ts, Ts, usize, Input);
const HELD: usize = usize::MAX;

/// The order inputs are evaluated in: time, then event time (ties keep their arrival order).
fn key(p: &Pending) -> (Ts, Ts) {
    (p.0, p.1)
}

/// Moves `more` behind `held`, both in [`key`] order, keeping that order: sorted again only
/// if `more` starts before `held` ends.
fn join(held: &mut Vec<Pending>, more: &mut Vec<Pending>) {
    let sorted = held.last().zip(more.first()).is_none_or(|(last, next)| key(last) <= key(next));
    held.append(more);
    if !sorted {
        held.sort_by_key(key);
    }
}

/// How many scopes ahead a rate move starts loading a scope's state and limits.
const AHEAD: usize = 8;

/// A concentration over at most this many underlyings finds one by reading their keys.
const SCAN: usize = 64;

/// How many inputs of an activation are loaded ahead at once (a tick brings ~50 changes).
const PREFETCH_SLICE: usize = 64;

/// A limit as its evaluations read and write it, in one cache line: each change of a scope
/// loads its limits ahead, and a slot that held the definition too took three or four lines.
/// The definition, read only to make an event, lies apart.
#[repr(align(64))]
struct LimitSlot {
    metric: Metric,
    /// The definition's limit, and its warn_at or else the configured one.
    limit: f64,
    warn_at: f64,
    state: LimitState,
    /// The metric's value at the last evaluation.
    value: f64,
    last_ts: Ts,
    def: Box<Limit>,
}

const _: () = assert!(std::mem::size_of::<Option<LimitSlot>>() == 64, "a limit's slot is one cache line");

impl LimitSlot {
    /// A limit defined by `def`, measuring `metric`, in `old`'s state if it was defined before.
    fn new(def: Limit, metric: Metric, warn_at: f64, old: Option<LimitSlot>) -> LimitSlot {
        let (state, value, last_ts) = old.map_or((LimitState::Ok, 0.0, 0), |o| (o.state, o.value, o.last_ts));
        let (limit, warn_at) = (def.limit, def.warn_at.unwrap_or(warn_at));
        LimitSlot { metric, limit, warn_at, state, value, last_ts, def: Box::new(def) }
    }

    /// |value| / limit at the last evaluation.
    fn utilisation(&self) -> f64 {
        self.value.abs() / self.limit
    }
}

struct ScopeState {
    key: (Scope, u64),
    id: Option<String>,
    /// Σ E and Σ |E| per currency (inline for up to four: most accounts of a multi-currency
    /// book hold three or four, and every evaluation reads them).
    sums: SmallVec<[(Ccy, Nanos, Nanos); 4]>,
    figures: HashMap<Metric, f64>,
    trading: Option<TradingState>,
    /// The limits on this scope (indices into `State::limits`), inline for the usual few:
    /// one cache miss fewer per change.
    limits: SmallVec<[usize; 3]>,
    /// The largest event time applied to this scope.
    last_ts: Ts,
    /// Kept only while the scope has a concentration limit.
    concentration: Option<Box<Concentration>>,
    /// Books whose [`Seed`] of the nets has arrived: a concentration limit is evaluated once
    /// every book's is in.
    nets_seeds: usize,
}

/// Where each scope's state lies in `State::scopes`: open addressing over slots of one key
/// each, probed from a slot known before the probe, so that an activation's lookups are
/// started all at once ([`prefetch`](Self::prefetch)) and their cache misses overlap. The hash
/// table this replaces gave no address to load ahead: with ~50 changes a tick, each a miss
/// after the one before, its probe was ~6% of the worker's time in the day replay
/// (docs/performance.md). At most half full, probing slot after slot.
struct ScopeIndex {
    slots: Vec<ScopeSlot>,
    len: usize,
}

#[derive(Clone, Copy)]
struct ScopeSlot {
    key: u64,
    scope: Scope,
    /// The state's index in `State::scopes`; `EMPTY` for a free slot.
    at: u32,
}

impl ScopeIndex {
    const EMPTY: u32 = u32::MAX;
    const FREE: ScopeSlot = ScopeSlot { key: 0, scope: Scope::Account, at: ScopeIndex::EMPTY };

    fn new() -> ScopeIndex {
        ScopeIndex { slots: vec![ScopeIndex::FREE; 64], len: 0 }
    }

    /// The first slot probed for a key. Scope ids are hashed already, but the same id may
    /// name an account and a desk: the scope is mixed in, and the product's top bits chosen.
    fn home(&self, (scope, key): (Scope, u64)) -> usize {
        let mixed = (key ^ (scope as u64 + 1).wrapping_mul(0xd6e8_feb8_6659_fd93)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    /// Starts loading the slot a lookup of `key` reads first.
    fn prefetch(&self, key: (Scope, u64)) {
        crate::prefetch(&self.slots[self.home(key)]);
    }

    /// The index kept for `key`; on first sight, the one `fresh` returns, kept from then on.
    fn get_or_insert(&mut self, key: (Scope, u64), fresh: impl FnOnce() -> usize) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let slot = self.slots[i];
            if slot.at == ScopeIndex::EMPTY {
                break;
            }
            if (slot.scope, slot.key) == key {
                return slot.at as usize;
            }
            i = (i + 1) & mask;
        }
        let at = fresh();
        let at32 = u32::try_from(at).ok().filter(|a| *a != ScopeIndex::EMPTY).expect("fewer than 2³² − 1 scopes");
        self.slots[i] = ScopeSlot { key: key.1, scope: key.0, at: at32 };
        self.len += 1;
        if 2 * self.len > self.slots.len() {
            self.grow();
        }
        at
    }

    /// Moves every key to a table twice as large. Scopes are few (accounts, desks, firms): the
    /// copy is rare and short.
    fn grow(&mut self) {
        let larger = vec![ScopeIndex::FREE; 2 * self.slots.len()];
        let old = std::mem::replace(&mut self.slots, larger);
        let mask = self.slots.len() - 1;
        for slot in old.into_iter().filter(|s| s.at != ScopeIndex::EMPTY) {
            let mut i = self.home((slot.scope, slot.key));
            while self.slots[i].at != ScopeIndex::EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }
}

/// The largest single-underlying |net| of a scope in the base currency, kept so that neither
/// a change nor a rate move reads every underlying (a desk or the firm holds thousands, and
/// every fx tick moves a rate).
///
/// An underlying held in one currency is worth |net| · rate, and every step of that sum in f64
/// (the conversion, the division by 10⁹, the product) is monotone: the largest in a currency
/// is the one with the largest exact |net|, whatever the rate. So the largest |net| is kept
/// per currency in exact integers, and a rate move only prices it anew. An underlying held in
/// more than one currency is valued at each read.
#[derive(Default)]
struct Concentration {
    /// Per currency, the largest |net| of the underlyings held in it alone.
    largest: SmallVec<[Largest; 4]>,
    /// The underlyings (places in `nets`) held in more than one currency.
    mixed: Vec<usize>,
    /// The scope's net per underlying and currency, kept here in one dense array rather than
    /// in the tally table once the scope has a concentration limit.
    nets: Vec<ByCcy>,
    /// The underlying of each place in `nets`.
    keys: Vec<u64>,
    /// Where each underlying lies in `nets`; a scope with few underlyings finds one in `keys`.
    index: HashMap<u64, usize>,
    /// How many times a largest |net| was recomputed from every underlying.
    scans: u64,
}

/// The largest |net| of one currency's underlyings, maintained incrementally: recomputed from
/// every underlying only when it shrinks below what another may hold (`others`, at least
/// every other underlying's), or its underlying comes to be held in a second currency.
struct Largest {
    ccy: Ccy,
    stale: bool,
    /// The underlying's place in `nets` (`NONE` while there is none), and its |net|.
    at: u32,
    max: u128,
    others: u128,
}

impl Largest {
    const NONE: u32 = u32::MAX;

    fn new(ccy: Ccy) -> Largest {
        Largest { ccy, stale: false, at: Largest::NONE, max: 0, others: 0 }
    }

    /// Takes the |net| `v` of the underlying at `at` in; marks the largest stale if it must be
    /// recomputed.
    fn update(&mut self, at: u32, v: u128) {
        if self.at == at {
            // Still the largest unless it fell below what another may hold.
            if v < self.max && v < self.others {
                self.stale = true;
            } else {
                self.max = v;
            }
        } else if self.at == Largest::NONE {
            (self.at, self.max) = (at, v);
        } else if v <= self.max {
            self.others = self.others.max(v);
        } else {
            self.others = self.others.max(self.max);
            (self.at, self.max) = (at, v);
        }
    }
}

impl Concentration {
    /// A concentration over the scope's current nets.
    fn new(held: Vec<(u64, ByCcy)>) -> Concentration {
        let index = held.iter().enumerate().map(|(i, (u, _))| (*u, i)).collect();
        let (keys, nets): (Vec<u64>, Vec<ByCcy>) = held.into_iter().unzip();
        let mixed = (0..nets.len()).filter(|&i| nets[i].len() > 1).collect();
        let mut conc = Concentration { nets, keys, index, mixed, ..Concentration::default() };
        for i in 0..conc.nets.len() {
            if let [(ccy, net)] = conc.nets[i][..] {
                conc.largest_of(ccy).update(i as u32, net.unsigned_abs());
            }
        }
        conc
    }

    /// Whether a largest |net| must be recomputed before it is read.
    fn stale(&self) -> bool {
        self.largest.iter().any(|l| l.stale)
    }

    /// Where an underlying lies in `nets`: a scope with at most [`SCAN`] underlyings (an
    /// account) reads its few keys, which [`prefetch_keys`](Self::prefetch_keys) started
    /// loading, rather than probe a table: one cache miss fewer per change.
    fn place(&self, underlying: u64) -> Option<usize> {
        if self.keys.len() <= SCAN {
            self.keys.iter().position(|k| *k == underlying)
        } else {
            self.index.get(&underlying).copied()
        }
    }

    /// Starts loading the keys of a scope with few underlyings.
    fn prefetch_keys(&self) {
        if self.keys.len() <= SCAN {
            self.keys.chunks(8).for_each(|k| crate::prefetch(&k[0]));
        }
    }

    /// Starts loading an underlying's nets.
    fn prefetch_net(&self, underlying: u64) {
        if let Some(i) = self.place(underlying) {
            crate::prefetch_all(&self.nets[i]);
        }
    }

    fn largest_of(&mut self, ccy: Ccy) -> &mut Largest {
        let at = match self.largest.iter().position(|l| l.ccy == ccy) {
            Some(at) => at,
            None => {
                self.largest.push(Largest::new(ccy));
                self.largest.len() - 1
            }
        };
        &mut self.largest[at]
    }

    /// Adds a change to its underlying's nets and takes its new |net| into its currency's
    /// largest.
    fn add(&mut self, c: &ScopeChange) {
        let i = self.place(c.underlying).unwrap_or_else(|| {
            self.index.insert(c.underlying, self.nets.len());
            self.keys.push(c.underlying);
            self.nets.push(ByCcy::new());
            self.nets.len() - 1
        });
        let held = &mut self.nets[i];
        let before = held.len();
        add_net(held, c);
        match held[..] {
            [(ccy, net)] => self.largest_of(ccy).update(i as u32, net.unsigned_abs()),
            [(first, _), _] if before == 1 => {
                // Now held in a second currency: valued at each read from here on.
                self.mixed.push(i);
                let largest = self.largest_of(first);
                if largest.at == i as u32 {
                    largest.stale = true;
                }
            }
            _ => {}
        }
    }

    /// Recomputes each largest |net| that may be out of date from every underlying.
    fn rescan(&mut self) {
        if !self.stale() {
            return;
        }
        self.scans += 1;
        for l in self.largest.iter_mut().filter(|l| l.stale) {
            *l = Largest { stale: true, ..Largest::new(l.ccy) };
        }
        for (i, held) in self.nets.iter().enumerate() {
            if let [(ccy, net)] = held[..] {
                if let Some(l) = self.largest.iter_mut().find(|l| l.ccy == ccy && l.stale) {
                    l.update(i as u32, net.unsigned_abs());
                }
            }
        }
        self.largest.iter_mut().for_each(|l| l.stale = false);
    }

    /// The largest underlying's value in the base currency (0 with none); `None` while a
    /// currency it holds has no rate, or before a [`rescan`](Self::rescan) of a stale largest.
    fn value(&self, rates: &Rates) -> Option<f64> {
        if self.stale() {
            return None;
        }
        let mut max = 0.0f64;
        for l in self.largest.iter().filter(|l| l.at != Largest::NONE) {
            max = max.max(underlying_value(&[(l.ccy, l.max as Nanos)], rates)?);
        }
        for &i in &self.mixed {
            max = max.max(underlying_value(&self.nets[i], rates)?);
        }
        Some(max)
    }
}

/// Exact amounts per currency, inline for the usual one or two currencies.
type ByCcy = SmallVec<[(Ccy, Nanos); 2]>;

struct State {
    config: LimitsConfig,
    /// Workers, each with a book that seeds tallies.
    peers: usize,
    rates: Rates,
    /// Every limit ever defined, by index; `None` once removed.
    limits: Vec<Option<LimitSlot>>,
    limit_ids: HashMap<String, usize>,
    /// Where each scope lies in `scopes`: one probe per change, then the scope and its limits
    /// are reached by index.
    scope_ids: ScopeIndex,
    scopes: Vec<ScopeState>,
    /// Per currency, the scopes with limits that hold exposure in it, in key order: a rate
    /// move re-evaluates these and reads no other scope.
    holders: Vec<(Ccy, Vec<usize>)>,
    /// Σ E per (scope, underlying) and currency, of scopes whose nets are seeded but that have
    /// no [`Concentration`] (yet: a book's seed can arrive before the limit's definition).
    nets: GrowingMap<(Scope, u64, u64), ByCcy>,
    /// Quantity per (scope, instrument) with a position_qty limit, and the books whose seed
    /// of it has arrived.
    qty: HashMap<(Scope, u64, u64), QtyTally>,
}

/// A scope's quantity of one instrument, for its position_qty limits.
#[derive(Default)]
struct QtyTally {
    qty: i64,
    seeds: usize,
}

impl State {
    /// No limits and no scopes yet; `peers` books will each seed the tallies.
    fn new(config: LimitsConfig, base_ccy: Ccy, peers: usize) -> State {
        State {
            config,
            peers,
            rates: Rates::new(base_ccy),
            limits: Vec::new(),
            limit_ids: HashMap::default(),
            scope_ids: ScopeIndex::new(),
            scopes: Vec::new(),
            holders: Vec::new(),
            nets: Default::default(),
            qty: HashMap::default(),
        }
    }

    /// A change of the scope at `si`: its sums, its tallies (if the book marked it), and its
    /// limits re-evaluated.
    fn on_change(&mut self, si: usize, c: ScopeChange, out: &mut Vec<LimitEvent>) {
        let s = &mut self.scopes[si];
        match s.sums.iter_mut().find(|(ccy, ..)| *ccy == c.ccy) {
            Some((_, net, gross)) => {
                *net += c.net;
                *gross += c.gross;
            }
            None => {
                s.sums.push((c.ccy, c.net, c.gross));
                if !s.limits.is_empty() {
                    self.hold(si, c.ccy);
                }
            }
        }
        let s = &mut self.scopes[si];
        if c.tally || c.tally_qty {
            add_tally(s, &mut self.nets, &mut self.qty, &c);
        }
        s.last_ts = s.last_ts.max(c.ts);
        if !s.limits.is_empty() {
            self.evaluate_scope(si, None, c.ts, c.ingest_ns, out);
        }
    }

    /// Starts loading the states and limits of the scopes an activation's changes reach, all
    /// at once. A tick's ~50 changes reach ~50 scopes that lie scattered in memory, each state
    /// and each limit a cache miss; loaded one change at a time, those misses followed one
    /// another and made most of a tick's time in this operator (docs/performance.md).
    fn prefetch(&self, inputs: &[(Ts, Ts, usize, Input)]) {
        let scopes = || {
            inputs.iter().filter_map(|(.., input)| match input {
                Input::Change(si, _) => Some(&self.scopes[*si]),
                _ => None,
            })
        };
        for s in scopes() {
            crate::prefetch_all(s);
        }
        // Each scope's limit list is inline in its state: read once the states are on their way.
        for s in scopes() {
            self.prefetch_limits(s);
        }
        // Then the nets a change adds to in a concentration: the keys that find them, and them.
        let tallies = || {
            inputs.iter().filter_map(|(.., input)| match input {
                Input::Change(si, c) if c.tally => Some((self.scopes[*si].concentration.as_deref()?, c.underlying)),
                _ => None,
            })
        };
        tallies().for_each(|(conc, _)| conc.prefetch_keys());
        tallies().for_each(|(conc, underlying)| conc.prefetch_net(underlying));
    }

    /// Starts loading a scope's limits and its concentration's largest |nets|.
    fn prefetch_limits(&self, s: &ScopeState) {
        for &slot in &s.limits {
            crate::prefetch_all(&self.limits[slot]);
        }
        if let Some(conc) = &s.concentration {
            crate::prefetch_all(&**conc);
        }
    }

    /// The index of a scope's state, made empty on first sight.
    fn scope(&mut self, key: (Scope, u64)) -> usize {
        let scopes = &mut self.scopes;
        self.scope_ids.get_or_insert(key, || {
            scopes.push(ScopeState {
                key,
                id: None,
                sums: SmallVec::new(),
                figures: HashMap::default(),
                trading: None,
                limits: SmallVec::new(),
                last_ts: 0,
                concentration: None,
                nets_seeds: 0,
            });
            scopes.len() - 1
        })
    }

    /// One book's part of a tally of a scope; once every book's is in, the scope's limits that
    /// read it are evaluated for the first time.
    fn on_seed(&mut self, seed: Seed, out: &mut Vec<LimitEvent>) {
        let si = self.scope((seed.scope, seed.key));
        let s = &mut self.scopes[si];
        for part in &seed.parts {
            add_tally(s, &mut self.nets, &mut self.qty, part);
        }
        let seeds = match seed.tally {
            Tally::Nets => &mut s.nets_seeds,
            Tally::Qty(instrument) => &mut self.qty.entry((seed.scope, seed.key, instrument)).or_default().seeds,
        };
        *seeds += 1;
        if *seeds < self.peers {
            return;
        }
        let ts = seed.time.max(s.last_ts);
        let limits = &self.limits;
        let reading: Vec<usize> = s
            .limits
            .iter()
            .copied()
            .filter(|l| limits[*l].as_ref().is_some_and(|l| l.metric.tally() == Some(seed.tally)))
            .collect();
        for slot in reading {
            if self.evaluate_limit(si, slot, ts, seed.ingest_ns, out) {
                let (last_ts, id) = (self.slot(slot).last_ts, self.slot(slot).def.id.clone());
                self.update_trading(si, last_ts, seed.ingest_ns, &id, out);
            }
        }
    }

    /// Applies one input at message time `time`.
    fn on_input(&mut self, input: Input, time: Ts, out: &mut Vec<LimitEvent>) {
        match input {
            Input::Change(si, c) => self.on_change(si, c, out),
            Input::Live(LiveUpdate::Scope(c)) => {
                let si = self.scope((c.scope, c.key));
                self.on_change(si, c, out)
            }
            Input::Live(LiveUpdate::Seed(seed)) => self.on_seed(*seed, out),
            Input::Live(LiveUpdate::Rate { ccy, rate, ts, ingest_ns }) => {
                self.rates.set(ccy, rate);
                // Only a scope that holds exposure in `ccy` has a value that moved. Evaluating
                // the others could change no state; it would only raise their limits' last
                // event time, which a later change in event-time order raises anyway.
                // Visited in key order, not in the order scopes were first seen, which varies
                // with how the workers' records interleave. The states lie in an order
                // unrelated to that: each is loaded a few scopes ahead, its limits fewer.
                let Some(at) = self.holders.iter().position(|(c, _)| *c == ccy) else { return };
                let holders = std::mem::take(&mut self.holders[at].1);
                for (n, &si) in holders.iter().enumerate() {
                    if let Some(&far) = holders.get(n + 2 * AHEAD) {
                        crate::prefetch_all(&self.scopes[far]);
                    }
                    if let Some(&near) = holders.get(n + AHEAD) {
                        self.prefetch_limits(&self.scopes[near]);
                    }
                    // A scope stays listed when its last limit is removed.
                    if !self.scopes[si].limits.is_empty() {
                        self.evaluate_scope(si, None, ts, ingest_ns, out);
                    }
                }
                self.holders[at].1 = holders;
            }
            Input::Metric(m) => {
                let MetricUpdate { scope, scope_id, metric, value, ts, ingest_ns } = *m;
                let si = self.scope((scope, crate::route_hash(&scope_id)));
                self.scopes[si].figures.insert(metric.clone(), value);
                self.evaluate_scope(si, Some(metric), ts, ingest_ns, out);
            }
            Input::Define(def) => self.define(*def, time, out),
        }
    }

    /// Adds, changes or (with `enabled: false`) removes a limit at event time `time`.
    fn define(&mut self, def: Limit, time: Ts, out: &mut Vec<LimitEvent>) {
        let key = (def.scope, crate::route_hash(&def.scope_id));
        let Some(metric) = Metric::parse(&def.metric) else { return };
        let n = self.limits.len();
        let slot = *self.limit_ids.entry(def.id.clone()).or_insert(n);
        if slot == n {
            self.limits.push(None);
        }
        let is_concentration = metric == Metric::Concentration;
        let scope_id = def.scope_id.clone();
        if let Some(old) = self.limits[slot].take() {
            let old_si = self.scope((old.def.scope, crate::route_hash(&old.def.scope_id)));
            self.scopes[old_si].limits.retain(|l| *l != slot);
            if def.enabled == Some(false) {
                // A removed limit stops; the scope's trading state follows its remaining limits.
                self.update_trading(old_si, old.last_ts.max(time), 0, &old.def.id, out);
                return;
            }
            self.limits[slot] = Some(LimitSlot::new(def, metric, self.config.warn_at, Some(old)));
        } else if def.enabled == Some(false) {
            return;
        } else {
            self.limits[slot] = Some(LimitSlot::new(def, metric, self.config.warn_at, None));
        }
        let si = self.scope(key);
        let s = &mut self.scopes[si];
        if is_concentration && s.concentration.is_none() {
            // The scope's nets move out of the tally table into the concentration.
            let held: Vec<u64> = self.nets.keys().filter(|(sc, k, _)| (*sc, *k) == key).map(|(.., u)| *u).collect();
            let nets = held.into_iter().filter_map(|u| Some((u, self.nets.remove(&(key.0, key.1, u))?)));
            s.concentration = Some(Box::new(Concentration::new(nets.collect())));
        }
        s.id = Some(scope_id);
        if s.limits.is_empty() {
            let held: SmallVec<[Ccy; 4]> = s.sums.iter().map(|(ccy, ..)| *ccy).collect();
            held.into_iter().for_each(|ccy| self.hold(si, ccy));
        }
        let s = &mut self.scopes[si];
        s.limits.push(slot);
        let time = time.max(s.last_ts);
        self.evaluate_limit(si, slot, time, 0, out);
        self.update_trading(si, self.slot(slot).last_ts, 0, &self.slot(slot).def.id.clone(), out);
    }

    /// Lists the scope at `si` among the holders of `ccy` (once).
    fn hold(&mut self, si: usize, ccy: Ccy) {
        let at = match self.holders.iter().position(|(c, _)| *c == ccy) {
            Some(at) => at,
            None => {
                self.holders.push((ccy, Vec::new()));
                self.holders.len() - 1
            }
        };
        let (scopes, list) = (&self.scopes, &mut self.holders[at].1);
        let key = scopes[si].key;
        if let Err(place) = list.binary_search_by_key(&key, |&other| scopes[other].key) {
            list.insert(place, si);
        }
    }

    /// A limit that is defined (scopes list only those).
    fn slot(&self, slot: usize) -> &LimitSlot {
        self.limits[slot].as_ref().expect("a scope's limits are defined")
    }

    /// Re-evaluates a scope's limits after an exposure change (`figure` none: every limit but
    /// var/es/stress) or a new var/es/stress figure (only that metric's limits), so that each
    /// limit's events carry the event time of what moved its own metric.
    fn evaluate_scope(&mut self, si: usize, figure: Option<Metric>, ts: Ts, ingest_ns: u64, out: &mut Vec<LimitEvent>) {
        for i in 0..self.scopes[si].limits.len() {
            let slot = self.scopes[si].limits[i];
            let metric = &self.slot(slot).metric;
            let is_figure = matches!(metric, Metric::Var | Metric::Es | Metric::Stress);
            if figure.as_ref().map_or(is_figure, |f| f != metric) {
                continue;
            }
            if self.evaluate_limit(si, slot, ts, ingest_ns, out) {
                let (last_ts, id) = (self.slot(slot).last_ts, self.slot(slot).def.id.clone());
                self.update_trading(si, last_ts, ingest_ns, &id, out);
            }
        }
    }

    /// The value of `metric` for a scope, in the base currency (quantity for position_qty);
    /// `None` while unknown: a rate or a figure missing, or a tally that not every book has
    /// seeded yet.
    fn value(&self, scope: &ScopeState, metric: &Metric) -> Option<f64> {
        let rate = |ccy: &Ccy| self.rates.get(*ccy);
        let base = |gross: bool| -> Option<f64> {
            scope.sums.iter().map(|(c, net, g)| rate(c).map(|r| from_nanos(*if gross { g } else { net }) * r)).sum()
        };
        match metric {
            Metric::Gross => base(true),
            Metric::Net => base(false),
            Metric::Concentration => {
                if scope.nets_seeds < self.peers {
                    return None;
                }
                let gross = base(true)?;
                if gross <= 0.0 {
                    return Some(0.0);
                }
                Some(scope.concentration.as_ref()?.value(&self.rates)? / gross)
            }
            Metric::PositionQty(instrument) => {
                let (kind, key) = scope.key;
                let tally = self.qty.get(&(kind, key, *instrument)).filter(|t| t.seeds >= self.peers)?;
                Some(tally.qty as f64 / 1e8)
            }
            Metric::Var | Metric::Es | Metric::Stress => scope.figures.get(metric).copied(),
        }
    }

    /// Re-evaluates one limit; true if its state changed.
    fn evaluate_limit(&mut self, si: usize, slot: usize, ts: Ts, ingest_ns: u64, out: &mut Vec<LimitEvent>) -> bool {
        if self.slot(slot).metric == Metric::Concentration {
            // Only a concentration limit reads the largest |nets|: brought up to date here.
            if let Some(conc) = self.scopes[si].concentration.as_mut() {
                conc.rescan();
            }
        }
        let scope = &self.scopes[si];
        let limit = self.slot(slot);
        let Some(value) = self.value(scope, &limit.metric) else { return false };
        let hysteresis = self.config.hysteresis;
        let limit = self.limits[slot].as_mut().expect("a scope's limits are defined");
        limit.value = value;
        let utilisation = limit.utilisation();
        limit.last_ts = limit.last_ts.max(ts);
        let next = LimitState::next(limit.state, utilisation, limit.warn_at, hysteresis);
        if next == limit.state {
            return false;
        }
        let prev = std::mem::replace(&mut limit.state, next);
        out.push(LimitEvent::Breach(BreachEvent {
            ts: limit.last_ts,
            limit_id: limit.def.id.clone(),
            scope: limit.def.scope,
            scope_id: limit.def.scope_id.clone(),
            metric: limit.def.metric.clone(),
            value,
            limit: limit.limit,
            utilisation,
            state: next,
            prev_state: prev,
            ingest_ns,
        }));
        true
    }

    /// Where every limit and every scope with limits stands: a `Standing` breach per limit and
    /// action per scope, with `prev_state` equal to `state`. A scope that is not ACTIVE names
    /// the hard limit in BREACH that sets its state; an ACTIVE one names none.
    fn standing(&self, out: &mut Vec<LimitEvent>) {
        let now = |e: LimitEvent| LimitEvent::Standing(Box::new(e));
        for limit in self.limits.iter().flatten() {
            out.push(now(LimitEvent::Breach(BreachEvent {
                ts: limit.last_ts,
                limit_id: limit.def.id.clone(),
                scope: limit.def.scope,
                scope_id: limit.def.scope_id.clone(),
                metric: limit.def.metric.clone(),
                value: limit.value,
                limit: limit.limit,
                utilisation: limit.utilisation(),
                state: limit.state,
                prev_state: limit.state,
                ingest_ns: 0,
            })));
        }
        for scope in self.scopes.iter().filter(|s| !s.limits.is_empty() || s.trading.is_some()) {
            let state = scope.trading.unwrap_or(TradingState::Active);
            let limits = || scope.limits.iter().map(|slot| self.slot(*slot));
            let cause = limits()
                .filter(|l| l.def.hard != Some(false) && l.state == LimitState::Breach)
                .find(|l| l.def.action.unwrap_or(self.config.breach_action) == state);
            out.push(now(LimitEvent::Action(ActionEvent {
                ts: limits().map(|l| l.last_ts).max().unwrap_or(scope.last_ts),
                scope: scope.key.0,
                scope_id: scope.id.clone().unwrap_or_default(),
                state,
                prev_state: state,
                limit_id: cause.map(|l| l.def.id.clone()).unwrap_or_default(),
                ingest_ns: 0,
            })));
        }
    }

    /// Sets a scope's trading state from its hard limits in BREACH; emits an action on change.
    fn update_trading(&mut self, si: usize, ts: Ts, ingest_ns: u64, cause: &str, out: &mut Vec<LimitEvent>) {
        let scope = &self.scopes[si];
        let breached = scope
            .limits
            .iter()
            .map(|slot| self.slot(*slot))
            .filter(|l| l.def.hard != Some(false) && l.state == LimitState::Breach)
            .map(|l| l.def.action.unwrap_or(self.config.breach_action))
            .max();
        let next = breached.unwrap_or(TradingState::Active);
        let scope = &mut self.scopes[si];
        let prev = scope.trading.unwrap_or(TradingState::Active);
        if next == prev {
            return;
        }
        scope.trading = Some(next);
        out.push(LimitEvent::Action(ActionEvent {
            ts,
            scope: scope.key.0,
            scope_id: scope.id.clone().unwrap_or_default(),
            state: next,
            prev_state: prev,
            limit_id: cause.to_owned(),
            ingest_ns,
        }));
    }
}

/// Adds a change to the tallies the book marked it for: its scope's quantity of its
/// instrument, and its net per underlying (in the scope's concentration once it has one).
fn add_tally(
    s: &mut ScopeState,
    nets: &mut GrowingMap<(Scope, u64, u64), ByCcy>,
    qty: &mut HashMap<(Scope, u64, u64), QtyTally>,
    c: &ScopeChange,
) {
    if c.tally_qty && c.qty != 0 {
        qty.entry((c.scope, c.key, c.instrument)).or_default().qty += c.qty;
    }
    if c.tally {
        match s.concentration.as_mut() {
            Some(conc) => conc.add(c),
            None => add_net(nets.entry((c.scope, c.key, c.underlying)).or_default(), c),
        }
    }
}

/// Adds a change's net to its currency's amount.
fn add_net(by_ccy: &mut ByCcy, c: &ScopeChange) {
    match by_ccy.iter_mut().find(|(ccy, _)| *ccy == c.ccy) {
        Some((_, n)) => *n += c.net,
        None => by_ccy.push((c.ccy, c.net)),
    }
}

/// Base-currency units per unit of each currency: the base's own 1, the others' as their
/// rates arrive. Every evaluation reads a rate per currency its scope holds, and a book holds
/// a handful: an inline list read in order finds one sooner than a hash probe.
#[derive(Clone, Debug)]
struct Rates {
    known: SmallVec<[(Ccy, f64); 8]>,
}

impl Rates {
    fn new(base: Ccy) -> Rates {
        Rates { known: SmallVec::from_slice(&[(base, 1.0)]) }
    }

    /// `None` while the rate of `ccy` is missing.
    fn get(&self, ccy: Ccy) -> Option<f64> {
        self.known.iter().find(|(c, _)| *c == ccy).map(|(_, r)| *r)
    }

    /// A rate move; the base currency's stays 1.
    fn set(&mut self, ccy: Ccy, rate: f64) {
        match self.known.iter_mut().position(|(c, _)| *c == ccy) {
            Some(0) => {}
            Some(at) => self.known[at].1 = rate,
            None => self.known.push((ccy, rate)),
        }
    }
}

/// |Σ_ccy rate · net| of one underlying, in the base currency; `None` while a rate is missing.
fn underlying_value(by_ccy: &[(Ccy, Nanos)], rates: &Rates) -> Option<f64> {
    let net: Option<f64> = by_ccy.iter().map(|(c, n)| rates.get(*c).map(|r| from_nanos(*n) * r)).sum();
    net.map(f64::abs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn state_machine_has_hysteresis_only_out_of_breach() {
        use LimitState::*;
        let next = |prev, u| LimitState::next(prev, u, 0.8, 0.05);
        assert_eq!(next(Ok, 0.79), Ok);
        assert_eq!(next(Ok, 0.8), Warn);
        assert_eq!(next(Warn, 1.0), Breach);
        assert_eq!(next(Breach, 0.96), Breach);
        assert_eq!(next(Breach, 0.95), Breach);
        assert_eq!(next(Breach, 0.9499), Warn);
        assert_eq!(next(Breach, 0.1), Ok);
        assert_eq!(next(Warn, 0.5), Ok);
    }

    #[test]
    fn metrics_parse() {
        assert_eq!(Metric::parse("gross"), Some(Metric::Gross));
        assert_eq!(Metric::parse("position_qty:AAPL"), Some(Metric::PositionQty(crate::route_hash("AAPL"))));
        assert_eq!(Metric::parse("position_qty:"), None);
        assert_eq!(Metric::parse("vol"), None);
    }

    /// A limits state with one worker's book and `defs` defined at time 1, each tally seeded.
    fn state_with(defs: &[Limit]) -> (State, Vec<LimitEvent>) {
        let mut state = State::new(LimitsConfig::default(), Ccy::USD, 1);
        let mut out = Vec::new();
        for def in defs {
            state.on_input(Input::Define(Box::new(def.clone())), 1, &mut out);
            let (scope, key) = (def.scope, crate::route_hash(&def.scope_id));
            let Some(tally) = Metric::parse(&def.metric).and_then(|m| m.tally()) else { continue };
            let seed = Seed { scope, key, tally, time: 1, ingest_ns: 0, parts: Vec::new() };
            state.on_input(Input::Live(LiveUpdate::Seed(Box::new(seed))), 1, &mut out);
        }
        (state, out)
    }

    fn concentration(scope_id: &str, limit: f64) -> Limit {
        Limit {
            id: format!("C-{scope_id}"),
            scope: Scope::Firm,
            scope_id: scope_id.to_owned(),
            metric: "concentration".to_owned(),
            limit,
            warn_at: None,
            hard: None,
            action: None,
            enabled: None,
        }
    }

    /// A change of the firm's net and gross in `underlying` by `nanos` of `ccy`.
    fn change(underlying: u64, ccy: &str, nanos: Nanos, ts: Ts) -> Input {
        let c = ScopeChange {
            scope: Scope::Firm,
            key: crate::route_hash("F"),
            underlying,
            ccy: Ccy::parse(ccy).expect("a currency code"),
            net: nanos,
            gross: nanos.abs(),
            instrument: underlying,
            qty: 0,
            ts,
            ingest_ns: 0,
            tally: true,
            tally_qty: false,
        };
        Input::Live(LiveUpdate::Scope(c))
    }

    fn scans(state: &State) -> u64 {
        state.scopes.iter().filter_map(|s| s.concentration.as_ref()).map(|c| c.scans).sum()
    }

    /// A gross limit `L-{id}` on account `id`.
    fn account_gross(id: &str, limit: f64, enabled: Option<bool>) -> Limit {
        Limit {
            id: format!("L-{id}"),
            scope: Scope::Account,
            scope_id: id.to_owned(),
            metric: "gross".to_owned(),
            limit,
            warn_at: None,
            hard: None,
            action: None,
            enabled,
        }
    }

    /// A change of account `id`'s net and gross by `units` of `ccy`.
    fn account_change(id: &str, ccy: Ccy, units: i128, ts: Ts) -> Input {
        let c = ScopeChange {
            scope: Scope::Account,
            key: crate::route_hash(id),
            underlying: 1,
            ccy,
            net: units * 1_000_000_000,
            gross: units * 1_000_000_000,
            instrument: 1,
            qty: 0,
            ts,
            ingest_ns: 0,
            tally: false,
            tally_qty: false,
        };
        Input::Live(LiveUpdate::Scope(c))
    }

    #[test]
    fn a_concentration_is_not_rescanned_by_changes_or_rate_moves() {
        let (mut state, mut out) = state_with(&[concentration("F", 0.9)]);
        // 1,000 underlyings in USD, then 1,000 changes in EUR before EUR has a rate: each change
        // once found a value missing and rescanned every underlying (~1M values in all).
        for u in 0..1_000 {
            state.on_input(change(u, "USD", 1_000_000_000, 10), 10, &mut out);
        }
        let before = scans(&state);
        for u in 0..1_000 {
            state.on_input(change(10_000 + u, "EUR", 2_000_000_000, 20), 20, &mut out);
        }
        assert_eq!(scans(&state), before, "no rescan while EUR has no rate");
        let limit = state.slot(0);
        assert_eq!((limit.state, limit.utilisation()), (LimitState::Ok, 1.0 / 1_000.0 / 0.9), "the last known value");
        // The rate's arrival prices the largest EUR underlying: EUR 2 × 1.5 = 3 of 1,000 + 3,000.
        let rate = |rate, ts| Input::Live(LiveUpdate::Rate { ccy: Ccy::parse("EUR").unwrap(), rate, ts, ingest_ns: 0 });
        state.on_input(rate(1.5, 30), 30, &mut out);
        assert_eq!(state.slot(0).utilisation(), 3.0 / 4_000.0 / 0.9);
        // A change in a currency with a rate is taken in without a rescan.
        state.on_input(change(10_000, "EUR", 2_000_000_000, 40), 40, &mut out);
        assert_eq!(state.slot(0).utilisation(), 6.0 / 4_003.0 / 0.9);
        // A rate move every underlying's value moves with (each rescanned them all before):
        // EUR 4 × 2 = 8 of 1,000 + 2,002 × 2.
        state.on_input(rate(2.0, 50), 50, &mut out);
        assert_eq!(state.slot(0).utilisation(), 8.0 / 5_004.0 / 0.9);
        assert_eq!(scans(&state), before, "no rescan at all");
        // The largest shrinking below another: one rescan finds the next largest, EUR 2 × 2 = 4
        // (of a gross of 1,000 + 2,006 × 2: these changes add their |net| to the gross).
        state.on_input(change(10_000, "EUR", -4_000_000_000, 60), 60, &mut out);
        assert_eq!(scans(&state), before + 1);
        assert_eq!(state.slot(0).utilisation(), 4.0 / 5_012.0 / 0.9);
    }

    #[test]
    fn a_stale_concentration_reads_as_unknown() {
        let (mut state, mut out) = state_with(&[concentration("F", 0.5)]);
        state.on_input(change(1, "USD", 1_000_000_000, 10), 10, &mut out);
        let si = state.scope((Scope::Firm, crate::route_hash("F")));
        let metric = Metric::Concentration;
        assert_eq!(state.value(&state.scopes[si], &metric), Some(1.0));
        state.scopes[si].concentration.as_mut().unwrap().largest[0].stale = true;
        assert_eq!(state.value(&state.scopes[si], &metric), None);
    }

    #[test]
    fn an_underlying_held_in_a_second_currency_leaves_its_currency_s_largest() {
        let change = |underlying, ccy: &str, net: Nanos| ScopeChange {
            scope: Scope::Firm,
            key: 1,
            underlying,
            ccy: Ccy::parse(ccy).unwrap(),
            net,
            gross: net.abs(),
            instrument: underlying,
            qty: 0,
            ts: 0,
            ingest_ns: 0,
            tally: true,
            tally_qty: false,
        };
        let mut rates = Rates::new(Ccy::USD);
        rates.set(Ccy::parse("EUR").unwrap(), 2.0);
        let mut conc = Concentration::new(Vec::new());
        conc.add(&change(1, "USD", 5_000_000_000));
        conc.add(&change(2, "USD", 3_000_000_000));
        conc.rescan();
        assert_eq!(conc.value(&rates), Some(5.0));
        // Underlying 1: USD 5 and EUR -2 × 2 = 1; the largest is now underlying 2's 3.
        conc.add(&change(1, "EUR", -2_000_000_000));
        conc.rescan();
        assert_eq!(conc.value(&rates), Some(3.0));
        // Its value, read at each rate: EUR -4 × 2 = -8, |5 - 8| = 3; at 2.5, |5 - 10| = 5.
        conc.add(&change(1, "EUR", -2_000_000_000));
        rates.set(Ccy::parse("EUR").unwrap(), 2.5);
        conc.rescan();
        assert_eq!(conc.value(&rates), Some(5.0));
    }

    #[test]
    fn concentration_equals_the_largest_value_after_every_change_and_rate_move() {
        // 40 underlyings in four currencies, a few of them in two or three, shrinking, growing
        // and crossing zero, under rate moves; each step compared, bit for bit, with the largest
        // |Σ_ccy rate · net| over every underlying, from the changes kept apart.
        let ccys = ["USD", "EUR", "GBP", "JPY"].map(|c| Ccy::parse(c).unwrap());
        let mut rates = Rates::new(Ccy::USD);
        // Each underlying's currencies in the order first held: the order its value adds them.
        let mut held: BTreeMap<u64, Vec<(Ccy, Nanos)>> = BTreeMap::new();
        let mut conc = Concentration::new(Vec::new());
        let mut x = 3u64;
        let mut next = |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        for step in 0..50_000 {
            if next(50) == 0 {
                let ccy = ccys[1 + next(3) as usize];
                rates.set(ccy, 0.005 + next(2_000) as f64 / 997.0);
                continue;
            }
            let underlying = next(40);
            // Each underlying is held in one currency, until, halfway, every ninth may take any.
            let any = underlying % 9 == 0 && step > 25_000;
            let ccy = ccys[if any { next(4) as usize } else { underlying as usize % 4 }];
            let net = (next(2_001) as Nanos - 1_000) * 1_000_003 * if step % 7 == 0 { 50 } else { 1 };
            let amounts = held.entry(underlying).or_default();
            match amounts.iter_mut().find(|(c, _)| *c == ccy) {
                Some((_, n)) => *n += net,
                None => amounts.push((ccy, net)),
            }
            let c = ScopeChange {
                scope: Scope::Firm,
                key: 1,
                underlying,
                ccy,
                net,
                gross: net.abs(),
                instrument: underlying,
                qty: 0,
                ts: step,
                ingest_ns: 0,
                tally: true,
                tally_qty: false,
            };
            conc.add(&c);
            conc.rescan();
            let values: Option<Vec<f64>> = held.values().map(|h| underlying_value(h, &rates)).collect();
            let largest = values.map(|v| v.into_iter().fold(0.0, f64::max));
            let got = conc.value(&rates);
            assert_eq!(got.map(f64::to_bits), largest.map(f64::to_bits), "step {step}: {got:?} against {largest:?}");
        }
        assert!(!conc.mixed.is_empty(), "some underlyings are held in several currencies");
        assert!(conc.scans > 0 && conc.scans < 5_000, "rescans only when the largest shrinks: {}", conc.scans);
    }

    #[test]
    fn a_rate_move_re_evaluates_the_scopes_holding_its_currency_in_key_order() {
        let eur = Ccy::parse("EUR").unwrap();
        let (gross, change) = (account_gross, account_change);
        let rate = |rate, ts| Input::Live(LiveUpdate::Rate { ccy: eur, rate, ts, ingest_ns: 0 });
        let (mut state, mut out) = state_with(&[]);
        state.on_input(rate(1.0, 5), 5, &mut out);
        // A holds EUR before its limit is defined; B has its limit before it holds EUR; C holds
        // only USD; D holds EUR and has no limit.
        state.on_input(change("A", eur, 10, 10), 10, &mut out);
        state.on_input(Input::Define(Box::new(gross("A", 15.0, None))), 20, &mut out);
        state.on_input(Input::Define(Box::new(gross("B", 15.0, None))), 20, &mut out);
        state.on_input(change("B", eur, 10, 30), 30, &mut out);
        state.on_input(Input::Define(Box::new(gross("C", 15.0, None))), 20, &mut out);
        state.on_input(change("C", Ccy::USD, 10, 30), 30, &mut out);
        state.on_input(change("D", eur, 10, 30), 30, &mut out);
        assert!(out.is_empty(), "all within their limits: {out:?}");
        // EUR doubles: A and B breach (and their trading stops), in key order; C does not move.
        state.on_input(rate(2.0, 40), 40, &mut out);
        let mut ids = ["L-A", "L-B"];
        ids.sort_by_key(|id| crate::route_hash(&id[2..]));
        let breached: Vec<&str> = out
            .iter()
            .filter_map(|e| match e {
                LimitEvent::Breach(b) => Some(b.limit_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(breached, ids);
        assert_eq!(out.len(), 4, "a breach and an action each: {out:?}");
        // B's limit removed and defined anew: B is listed once, C only for USD, D nowhere.
        state.on_input(Input::Define(Box::new(gross("B", 15.0, Some(false)))), 50, &mut out);
        state.on_input(Input::Define(Box::new(gross("B", 100.0, None))), 50, &mut out);
        let listed = |ccy: Ccy| -> Vec<(Scope, u64)> {
            let (_, list) = state.holders.iter().find(|(c, _)| *c == ccy).expect("listed");
            list.iter().map(|&si| state.scopes[si].key).collect()
        };
        let mut keys: Vec<_> = ["A", "B"].map(|id| (Scope::Account, crate::route_hash(id))).into();
        keys.sort();
        assert_eq!(listed(eur), keys);
        assert_eq!(listed(Ccy::USD), [(Scope::Account, crate::route_hash("C"))]);
    }

    #[test]
    fn a_tally_limit_waits_for_every_book_s_seed() {
        let mut state = State::new(LimitsConfig::default(), Ccy::USD, 2);
        let mut out = Vec::new();
        let qty = Limit {
            id: "Q-F".to_owned(),
            metric: "position_qty:AAPL".to_owned(),
            limit: 10.0,
            ..concentration("F", 0.5)
        };
        state.on_input(Input::Define(Box::new(qty)), 1, &mut out);
        state.on_input(Input::Define(Box::new(concentration("F", 0.5))), 1, &mut out);
        let (key, aapl) = (crate::route_hash("F"), crate::route_hash("AAPL"));
        // The firm's one holding: 20 AAPL (twice the limit), all of its gross (concentration 1).
        let holding = |ts, nets: bool, qty: bool| ScopeChange {
            scope: Scope::Firm,
            key,
            underlying: aapl,
            ccy: Ccy::USD,
            net: 1_000_000_000,
            gross: 1_000_000_000,
            instrument: aapl,
            qty: 20 * 100_000_000,
            ts,
            ingest_ns: 0,
            tally: nets,
            tally_qty: qty,
        };
        let seed = |tally, parts| {
            let seed = Seed { scope: Scope::Firm, key, tally, time: 2, ingest_ns: 0, parts };
            Input::Live(LiveUpdate::Seed(Box::new(seed)))
        };
        state.on_input(Input::Live(LiveUpdate::Scope(holding(2, false, false))), 2, &mut out);
        // The first book's seeds hold the holding; a later change re-evaluates the scope.
        state.on_input(seed(Tally::Nets, vec![holding(2, true, false)]), 2, &mut out);
        state.on_input(seed(Tally::Qty(aapl), vec![holding(2, false, true)]), 2, &mut out);
        let nothing = ScopeChange { net: 0, gross: 0, qty: 0, ..holding(3, true, true) };
        state.on_input(Input::Live(LiveUpdate::Scope(nothing)), 3, &mut out);
        assert!(out.is_empty(), "neither tally is whole before the second book's seed: {out:?}");
        // The second book holds none of it: its seeds complete both tallies.
        state.on_input(seed(Tally::Nets, Vec::new()), 4, &mut out);
        state.on_input(seed(Tally::Qty(aapl), Vec::new()), 4, &mut out);
        let breached: Vec<(&str, f64)> = out
            .iter()
            .filter_map(|e| match e {
                LimitEvent::Breach(b) => Some((b.limit_id.as_str(), b.utilisation)),
                _ => None,
            })
            .collect();
        assert_eq!(breached, [("C-F", 2.0), ("Q-F", 2.0)]);
    }

    #[test]
    fn a_redefined_limit_reports_its_last_value_against_its_new_limit() {
        let (eur, jpy) = (Ccy::parse("EUR").unwrap(), Ccy::parse("JPY").unwrap());
        let gross = |limit| Input::Define(Box::new(account_gross("A", limit, None)));
        let change = |ccy, units, ts| account_change("A", ccy, units, ts);
        let (mut state, mut out) = state_with(&[]);
        state.on_input(Input::Live(LiveUpdate::Rate { ccy: eur, rate: 1.5, ts: 5, ingest_ns: 0 }), 5, &mut out);
        state.on_input(gross(20.0), 10, &mut out);
        state.on_input(change(eur, 10, 10), 10, &mut out);
        assert_eq!((state.slot(0).value, state.slot(0).utilisation()), (15.0, 0.75));
        // JPY has no rate: the value is unknown, and stays unknown through the new definition.
        state.on_input(change(jpy, 1, 20), 20, &mut out);
        state.on_input(gross(60.0), 30, &mut out);
        out.clear();
        state.standing(&mut out);
        let LimitEvent::Standing(standing) = &out[0] else { panic!("a standing report: {out:?}") };
        let LimitEvent::Breach(b) = &**standing else { panic!("the limit's standing: {standing:?}") };
        // The last known value against the limit now defined, as the event's value and limit say.
        assert_eq!((b.value, b.limit, b.utilisation, b.state), (15.0, 60.0, 0.25, LimitState::Ok));
    }

    proptest::proptest! {
        /// The index gives each key the index it was first given, whatever the keys and their
        /// order, across its growths: compared with a hash map. Keys are drawn from 400 ids
        /// under each scope, so the same id under two scopes and repeated keys are frequent,
        /// and up to 600 of them take the table through four growths.
        #[test]
        fn scope_index_keeps_each_key_its_first_index(
            keys in proptest::collection::vec((0..3usize, 0..400u64), 1..600),
        ) {
            let (mut index, mut expected) = (ScopeIndex::new(), std::collections::HashMap::new());
            for (n, (scope, id)) in keys.into_iter().enumerate() {
                let key = (Scope::ALL[scope], id);
                let kept = *expected.entry(key).or_insert(n);
                proptest::prop_assert_eq!(index.get_or_insert(key, || n), kept);
            }
            proptest::prop_assert_eq!(index.len, expected.len());
        }
    }
}
