//! The hot path: positions, prices and live exposures, owned by one timely operator per
//! worker (DESIGN.md §9: per-update work in an operator that owns flat state).
//!
//! ```text
//!   events ─> Route: a delta to its account's worker, ─ exchange ─> Book ──> live: LiveUpdate per record and scope it changed, or fx rate, on arrival
//!             anything else to every worker                          │  ──> limits: each definition once (worker 0)
//!                                                                    │  ──> snapshot parts at each boundary, from the settled state
//!                                                                    │  ──> bars: the analytics' view of the settled book
//!                                                                    └───> dead letters: records never resolved
//! ```
//!
//! Each record is applied twice. On arrival it updates the *live* state and emits the exact
//! change it made to each scope (account, desk, firm) per underlying and currency, summed
//! over the positions it revalued: the latency path, which never waits for the frontier.
//! It is also stashed and applied to the *settled* state once the frontier passes its time,
//! so that a snapshot at `as_of` holds exactly the records with event time ≤ `as_of`.
//! A delta whose id was seen before is a duplicate and is counted, not applied. A record
//! naming an instrument or account not yet known is held until that reference arrives; what
//! is still held when input ends becomes a dead letter.

use std::cell::Cell;
use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashMap as HashMap, FxHashSet as HashSet};
use smallvec::SmallVec;

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::analytics::BarPart;
use crate::event::{DeadLetter, Envelope, Event, LiveUpdate, ScopeChange, Seed, Tally};
use crate::exposure::{position_exposure_with, Ccy, Exposure, Leg, Nanos, OptionMarket, Sums};
use crate::formulas::{black_scholes, rate_from_pair, Greeks};
use crate::growing::{Chunked, GrowingMap, IdSet};
use crate::model::{Account, AssetClass, Delta, Fixed, Instrument, Limit, OptionType, Scope, Tick, Ts};
use crate::prefetch;
use crate::snapshot::{AggKey, Dim, PositionRow, SnapshotPart};

/// Settings of the book.
#[derive(Clone, Debug)]
pub struct BookConfig {
    /// Event time between snapshots (ns); snapshots fall on its multiples.
    pub snapshot_interval: Ts,
    /// Bar length (ns): the analytics get the settled book at its multiples.
    pub bar_interval: Ts,
    /// The currency figures are reported in.
    pub base_ccy: Ccy,
    /// Continuously-compounded rate r for Black-Scholes.
    pub rate: f64,
}

impl BookConfig {
    /// The latest boundary (a multiple of the snapshot or of the bar interval) before `t`; 0
    /// if none. The analytics' figures at it come before any record of a later time
    /// ([`crate::limits::limits`] holds those until they have).
    pub fn boundary_before(&self, t: Ts) -> Ts {
        let before = |interval: Ts| t.saturating_sub(1) / interval * interval;
        before(self.snapshot_interval).max(before(self.bar_interval))
    }
}

/// Counters of one worker's book.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BookStats {
    pub deltas_applied: u64,
    pub ticks_applied: u64,
    pub duplicates: u64,
    pub held: u64,
    pub released: u64,
}

/// The book's output streams.
pub struct BookStreams<'scope> {
    pub live: StreamVec<'scope, Ts, LiveUpdate>,
    pub snapshots: StreamVec<'scope, Ts, SnapshotPart>,
    pub dead: StreamVec<'scope, Ts, DeadLetter>,
    /// The analytics' view: definitions, and the settled changes at every bar end and snapshot
    /// (and ahead of it, once there are thousands).
    pub bars: StreamVec<'scope, Ts, BarPart>,
    /// Limit definitions, each once, as they arrived: for the limits operator.
    pub limits: StreamVec<'scope, Ts, Limit>,
}

/// Builds the book: routes deltas by account and everything else to every worker, and
/// maintains positions and exposures. `stats` is updated as records are applied.
pub fn book<'scope>(
    events: StreamVec<'scope, Ts, Envelope>,
    config: BookConfig,
    stats: std::rc::Rc<std::cell::RefCell<BookStats>>,
) -> BookStreams<'scope> {
    // One operator in front routes each record: a delta to its account's worker, anything else
    // to every worker (a copy for each but the last). Limit definitions come out of worker 0's
    // book, each once, for the limits operator: a stream with two consumers would copy every
    // record for one of them.
    let peers = events.scope().peers() as u64;
    let worker = events.scope().index();
    let routed = events.unary(Pipeline, "Route", move |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for env in data.drain(..) {
                    match &env.event {
                        Event::Delta(d) => session.give((crate::route_hash(&d.account), env)),
                        _ => {
                            for w in 1..peers {
                                session.give((w, env.clone()));
                            }
                            session.give((0, env));
                        }
                    }
                }
            });
        }
    });

    let mut builder = OperatorBuilder::new("Book".to_owned(), routed.scope());
    let activator = routed.scope().activator_for(builder.operator_info().address);
    let mut input = builder.new_input(routed, Exchange::new(|(w, _): &(u64, Envelope)| *w));
    let (live_out, live) = builder.new_output();
    let (limits_out, limits) = builder.new_output();
    let (snap_out, snapshots) = builder.new_output();
    let (dead_out, dead) = builder.new_output();
    let (bars_out, bars) = builder.new_output();
    let mut limits_out = OutputBuilder::from(limits_out);
    let mut live_out = OutputBuilder::from(live_out);
    let mut bars_out = OutputBuilder::from(bars_out);
    let mut snap_out = OutputBuilder::from(snap_out);
    let mut dead_out = OutputBuilder::from(dead_out);

    builder.build(move |caps| {
        // One capability per output, in the order they were made. Held until the end: the
        // snapshot, dead-letter and bar outputs emit after the input is done; live updates and
        // limit definitions go out under their message's capability.
        let Ok::<[Capability<Ts>; 5], _>([_live, _limits, snap, dead, bars]) = caps.try_into() else {
            unreachable!("the book has five outputs")
        };
        let (mut snap_cap, mut dead_cap, mut bars_cap) = (Some(snap), Some(dead), Some(bars));
        let mut state = State::new(config, worker);
        let mut live_buf = Vec::new();
        let mut dead_buf = Vec::new();
        // A snapshot's parts (a row per position, and the partial aggregates), kept at their
        // size between snapshots: growing it anew each time copied every part into freshly
        // page-faulted memory (docs/performance.md).
        let mut parts = Vec::new();
        // This activation's records with their application order and message capability.
        let mut pending: Vec<(ApplyOrder, usize, Envelope)> = Vec::new();
        move |frontiers| {
            let mut live_handle = live_out.activate();
            let mut snap_handle = snap_out.activate();
            let mut dead_handle = dead_out.activate();
            let mut bars_handle = bars_out.activate();
            let mut limits_handle = limits_out.activate();
            // The messages' records, applied in event-time order: per time, reference data
            // first, then ticks and deltas by `ts` (a tick before a delta of the same `ts`), so
            // that a delta is valued at the prices of its own time, not at later ticks that
            // arrived in the same batch.
            let mut caps = Vec::new();
            input.for_each(|cap, data| {
                let time = crate::time_of(&cap);
                pending.extend(data.drain(..).map(|(_, env)| (apply_order(time, &env), caps.len(), env)));
                caps.push(cap);
            });
            let arrived = pending.len();
            // Stable: records of equal order keep their arrival order.
            pending.sort_by_key(|(order, _, _)| *order);
            let mut records = pending.drain(..);
            // Records are taken a slice at a time: the slice's deltas are checked for repeats
            // together, and what they read starts loading (`State::prepare`).
            let (mut n, mut repeats) = (0, 0u64);
            loop {
                if n % PREFETCH_SLICE == 0 {
                    repeats = state.prepare(&records.as_slice()[..records.len().min(PREFETCH_SLICE)]);
                }
                let Some(((time, ..), c, env)) = records.next() else { break };
                let repeat = repeats >> (n % PREFETCH_SLICE) & 1 == 1;
                n += 1;
                if let (Event::Limit(limit), 0) = (&env.event, worker) {
                    limits_handle.session(&caps[c]).give(limit.clone());
                }
                state.on_event(time, env, repeat, &mut live_buf, &mut dead_buf);
                if records.as_slice().first().is_none_or(|next| next.0 .0 != time) {
                    let cap = &caps[c];
                    if !live_buf.is_empty() {
                        live_handle.session(cap).give_iterator(live_buf.drain(..));
                    }
                    if !dead_buf.is_empty() {
                        dead_handle.session(cap).give_iterator(dead_buf.drain(..));
                    }
                    if !state.definitions.is_empty() {
                        bars_handle.session(cap).give_iterator(state.definitions.drain(..));
                    }
                }
            }
            *stats.borrow_mut() = state.stats.clone();

            let least = frontiers.iter().filter_map(|f| f.frontier().iter().min().copied()).min();
            let (Some(cap), Some(bcap)) = (snap_cap.as_mut(), bars_cap.as_mut()) else { return };
            // Settling is sliced, so that a record arriving behind it waits for one slice at
            // most: an activation settles a slice plus two changes per record that arrived,
            // and activates itself again while changes the frontier has passed remain.
            let mut budget = if least.is_some() { SETTLE_PER_RECORD * arrived + SETTLE_SLICE } else { usize::MAX };
            // Take every boundary (snapshot or bar end) the frontier has passed, in order; at
            // the end only those up to the last event time.
            while let Some(boundary) = state.next_boundary.into_iter().chain(state.next_bar).min() {
                let passed = least.is_none_or(|t| t > boundary);
                if !passed || (least.is_none() && boundary > state.end()) {
                    break;
                }
                if !state.settle_until(boundary, &mut budget) {
                    return activator.activate();
                }
                // A bar end at the end of input's time is the closing snapshot's boundary too:
                // both at that time, and no capability could go back to it after.
                let closing = least.is_none() && boundary == state.end() && state.next_boundary.is_some();
                let snapshot = state.next_boundary == Some(boundary) || closing;
                let bar = state.next_bar == Some(boundary);
                bars_handle.session(&bcap.delayed(&boundary)).give_iterator(state.bar_parts(bar, snapshot).into_iter());
                if snapshot {
                    state.snapshot(boundary, &mut parts);
                    snap_handle.session(&cap.delayed(&boundary)).give_iterator(parts.drain(..));
                    state.last_snapshot = Some(boundary);
                    state.next_boundary = Some(boundary + state.config.snapshot_interval);
                }
                if bar {
                    state.next_bar = Some(boundary + state.config.bar_interval);
                }
                cap.downgrade(&(boundary + 1));
                bcap.downgrade(&(boundary + 1));
            }
            if let Some(least) = least {
                // The bars come next at the next boundary (or the end, after every record):
                // no earlier than the first boundary after the latest one before the frontier,
                // which the frontier has passed. Saying so lets the analytics' frontier, and
                // the limits waiting on it, pass the times up to there, before the first
                // boundary as between two.
                let next = state.next_boundary.into_iter().chain(state.next_bar).min();
                let floor = (state.config.boundary_before(least) + 1).min(next.unwrap_or(Ts::MAX));
                if floor > *bcap.time() {
                    bcap.downgrade(&floor);
                }
                if !state.settle_until(least.saturating_sub(1), &mut budget) {
                    activator.activate();
                    return;
                }
                // Everything before the frontier is settled: the changes so far may go ahead of
                // the boundary, at the frontier's last time (no boundary lies before it now).
                // A slice at a time, as settling is: several slices go at the same time, which the
                // analytics take once the frontier passes it.
                if let Some(early) = least.checked_sub(1).filter(|early| early >= bcap.time()) {
                    if let Some(changes) = state.early_parts(EARLY_SLICE + arrived) {
                        bars_handle.session(&bcap.delayed(&early)).give_iterator(changes.into_iter());
                        bcap.downgrade(&early);
                    }
                }
                return;
            }
            // Input is exhausted: settle everything, take the closing snapshot, dead-letter the held.
            state.settle_until(Ts::MAX, &mut budget);
            let end = state.end();
            if state.next_boundary.is_some() && state.last_snapshot.is_none_or(|last| end > last) {
                state.snapshot(end, &mut parts);
                snap_handle.session(&cap.delayed(&end)).give_iterator(parts.drain(..));
                bars_handle.session(&bcap.delayed(&end)).give_iterator(state.bar_parts(false, true).into_iter());
            }
            if let Some(dcap) = dead_cap.as_ref() {
                let mut session = dead_handle.session(dcap);
                for (_, held) in state.held.drain() {
                    for (_, env, reason) in held {
                        session.give(DeadLetter { origin: env.origin, payload: payload_of(&env.event), reason });
                    }
                }
            }
            snap_cap = None;
            dead_cap = None;
            bars_cap = None;
        }
    });

    BookStreams { live, snapshots, dead, bars, limits }
}

/// Stashed changes an activation settles: a slice, and two per record that arrived. A record
/// stashes at most one change, so settling keeps up with any input rate and works a backlog
/// off at least as fast as records arrive; a larger factor lets one long activation make the
/// next one longer still (more records arrive meanwhile), which the latency tail showed.
/// The slice is small (~1 µs of settling) because an epoch boundary lets a whole epoch's
/// changes settle at once (~10k at 100k records/s): with slices of 128 (~8 µs each), records
/// in the first 5 ms after a boundary were 4-6 times as often over 45 µs as at other times
/// (`cargo bench --bench latency`, 100k/s); with 16, about as often.
const SETTLE_SLICE: usize = 16;
const SETTLE_PER_RECORD: usize = 2;

/// Settled changes that go to the analytics ahead of the boundary once there are this many
/// (`State::early_parts`): a bar end then waits for the book to build, and the analytics to
/// apply, about as many, not all of the bar's (~77k, measured 8 + 9 ms at 100k records/s with
/// one-second bars on a 200k-position book; 4k at that rate would be ~0.5 ms each, not timed).
const EARLY_PARTS: usize = 4096;
/// Changes an activation sends ahead: a slice (~6 µs to build at that rate, not timed), and one
/// per record that arrived (a record changes at most one position and one price), so that
/// sending keeps up with any input rate.
const EARLY_SLICE: usize = 64;

/// How many records ahead the positions their deltas change are loaded; at most 64, the bits
/// of [`State::prepare`]'s mask.
const PREFETCH_SLICE: usize = 64;
const _: () = assert!(PREFETCH_SLICE <= 64);

/// (time, reference/record/end, ts, is a delta): the order records of one activation are
/// applied in.
type ApplyOrder = (Ts, u8, Ts, bool);

fn apply_order(time: Ts, env: &Envelope) -> ApplyOrder {
    match &env.event {
        Event::Tick(t) => (time, 1, t.ts, false),
        Event::Delta(d) => (time, 1, d.ts, true),
        Event::End { .. } => (time, 2, 0, false),
        _ => (time, 0, 0, false),
    }
}

/// Whose aggregate a snapshot sum is: an account (index), a desk or a firm (interned name).
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
enum Owner {
    Account(usize),
    Desk(usize),
    Firm(usize),
}

/// The bucket of a snapshot sum, by integer keys.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Bucket {
    Total,
    Class(AssetClass),
    Underlying(usize),
    Currency(Ccy),
    Factor(usize),
    FxFactor(Ccy),
}

/// A snapshot sum's bucket and currency packed in one word, the key of the tables a snapshot
/// adds its sums into (each position's four or more, each account's again into its desk's and
/// its firm's): hashed and compared as one integer, where the enum and the currency took a
/// step each. Bits 56-58 hold the bucket's kind, 24-55 its name or class or currency, 0-23 the
/// currency.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
struct SumKey(u64);

impl SumKey {
    fn new(bucket: Bucket, ccy: Ccy) -> SumKey {
        let name = |n: usize| u64::try_from(n).ok().filter(|&n| n < 1 << 32).expect("fewer than 2^32 names");
        let (kind, value) = match bucket {
            Bucket::Total => (0, 0),
            Bucket::Class(c) => (1, c as u64),
            Bucket::Underlying(n) => (2, name(n)),
            Bucket::Currency(c) => (3, u64::from(c.to_bits())),
            Bucket::Factor(n) => (4, name(n)),
            Bucket::FxFactor(c) => (5, u64::from(c.to_bits())),
        };
        SumKey(kind << 56 | value << 24 | u64::from(ccy.to_bits()))
    }

    fn bucket(self) -> Bucket {
        let value = self.0 >> 24 & 0xFFFF_FFFF;
        match self.0 >> 56 {
            0 => Bucket::Total,
            1 => Bucket::Class(
                [AssetClass::Equity, AssetClass::Future, AssetClass::Option, AssetClass::Fx][value as usize],
            ),
            2 => Bucket::Underlying(value as usize),
            3 => Bucket::Currency(Ccy::from_bits(value as u32)),
            4 => Bucket::Factor(value as usize),
            _ => Bucket::FxFactor(Ccy::from_bits(value as u32)),
        }
    }

    fn ccy(self) -> Ccy {
        Ccy::from_bits(self.0 as u32 & 0xFF_FFFF)
    }
}

/// Route keys of an account, its desk and its firm.
fn account_keys(def: &Account) -> [u64; 3] {
    [crate::route_hash(&def.id), crate::route_hash(&def.desk), crate::route_hash(def.firm())]
}

/// The record re-encoded, for dead letters of records that decoded but never resolved.
fn payload_of(event: &Event) -> String {
    match event {
        Event::Tick(t) => serde_json::to_string(t),
        Event::Delta(d) => serde_json::to_string(d),
        Event::Instrument(i) => serde_json::to_string(i),
        Event::Account(a) => serde_json::to_string(a),
        Event::Limit(l) => serde_json::to_string(l),
        Event::End { max_ts } => Ok(format!("{{\"end\":{max_ts}}}")),
    }
    .unwrap_or_default()
}

/// 128 bits of a delta id: collisions are negligible at any realistic volume.
fn id_hash(id: &str) -> u128 {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        id.hash(&mut h);
        h.finish() as u128
    };
    (half(0) << 64) | half(1)
}

#[derive(Copy, Clone, Debug, Default)]
struct Price {
    ts: Ts,
    price: Option<Fixed>,
    /// The implied vol of the last tick that carried one.
    iv: Option<f64>,
}

impl Price {
    /// Applies a tick unless a later one was applied already.
    fn apply(&mut self, ts: Ts, price: Fixed, iv: Option<f64>) -> bool {
        if self.price.is_some() && ts < self.ts {
            return false;
        }
        self.ts = ts;
        self.price = Some(price);
        if iv.is_some() {
            self.iv = iv;
        }
        true
    }
}

struct Instr {
    def: Instrument,
    key: u64,
    underlying_key: u64,
    /// The currency whose rate against the base currency this fx pair gives.
    rate_of: Option<Ccy>,
    /// Interned names of itself and of its underlying (itself if none).
    name: usize,
    underlying_name: usize,
    /// Its currency (the base currency if the definition's is not a code).
    ccy: Ccy,
    live: Price,
    settled: Price,
    /// Positions in this instrument on this worker.
    positions: Vec<usize>,
    /// Options whose underlying this is.
    options: Vec<usize>,
    /// This instrument's underlying, once known.
    underlying: Option<usize>,
    /// An option's last Black-Scholes figures, with the arguments they were computed from (as
    /// bits): a tick of its underlying values each of its positions at the same arguments.
    greeks: Cell<Option<(OptionType, [u64; 5], Greeks)>>,
}

struct Acct {
    /// Interned names of itself, its desk and its firm.
    name: usize,
    desk: usize,
    firm: usize,
}

/// Compact (48 bytes, checked below): a tick walks its instrument's positions, each one a
/// cache miss.
struct Pos {
    account: u32,
    instr: u32,
    qty: Fixed,
    settled_qty: Fixed,
    /// The delta exposure last counted in the live sums: its amount and currency (none
    /// while the position has no exposure).
    live_nanos: Nanos,
    live_ccy: Option<Ccy>,
}

const _: () = assert!(std::mem::size_of::<Pos>() == 48);

/// The scope changes of the record being applied, one per (scope, key, underlying, currency):
/// a tick that revalues forty positions of one desk sends that desk one change, not forty.
#[derive(Default)]
struct Changes {
    list: Vec<ScopeChange>,
    index: FxHashMap<(Scope, u64, u64, Ccy), usize>,
}

impl Changes {
    /// Hands the record's changes to the live output, in the order they first occurred.
    fn flush(&mut self, live: &mut Vec<LiveUpdate>) {
        self.index.clear();
        live.extend(self.list.drain(..).map(LiveUpdate::Scope));
    }
}

/// A change waiting for the frontier before it reaches the settled state.
enum Settle {
    Qty { pos: usize, qty: Fixed },
    Price { instr: usize, ts: Ts, price: Fixed, iv: Option<f64> },
}

/// Changes waiting for the frontier, oldest message time first.
#[derive(Default)]
struct Stash {
    changes: VecDeque<(Ts, Settle)>,
    /// A change was pushed behind a later one: sort before taking.
    unsorted: bool,
}

impl Stash {
    fn push(&mut self, time: Ts, change: Settle) {
        self.unsorted |= self.changes.back().is_some_and(|(t, _)| *t > time);
        self.changes.push_back((time, change));
    }

    /// Removes up to `budget` of the changes with time ≤ `upto`, oldest first (stable), and
    /// lowers `budget` by their number. True if none with time ≤ `upto` is left.
    fn take(&mut self, upto: Ts, budget: &mut usize, mut apply: impl FnMut(Settle)) -> bool {
        if self.unsorted {
            self.changes.make_contiguous().sort_by_key(|(t, _)| *t);
            self.unsorted = false;
        }
        let due = self.changes.partition_point(|(t, _)| *t <= upto);
        let n = due.min(*budget);
        *budget -= n;
        for (_, change) in self.changes.drain(..n) {
            apply(change);
        }
        n == due
    }
}

struct State {
    config: BookConfig,
    worker: usize,
    instrs: Vec<Instr>,
    instr_ids: HashMap<String, usize>,
    accts: Vec<Acct>,
    /// Route keys of each account, its desk and its firm, by account index: apart from
    /// `accts` so that revaluations read a dense array.
    acct_keys: Vec<[u64; 3]>,
    /// Each account's positions on this worker, by account index: seeding an account's
    /// tallies reads only these.
    acct_positions: Vec<Vec<usize>>,
    acct_ids: HashMap<String, usize>,
    positions: Chunked<Pos>,
    pos_ids: GrowingMap<(usize, usize), usize>,
    /// Currency → the fx instrument that gives its rate against the base currency.
    rate_sources: HashMap<Ccy, usize>,
    /// Options waiting for their underlying's definition, by the underlying's id.
    orphan_options: HashMap<String, Vec<usize>>,
    seen: IdSet,
    /// The positions a tick revalues (kept at its size between ticks).
    touched: Vec<usize>,
    /// Scopes with a concentration limit: this book sent each the [`Seed`] of its nets and
    /// marks their changes since ([`ScopeChange::tally`]).
    seeded: HashSet<(Scope, u64)>,
    /// (Scope, instrument) pairs with a position_qty limit: this book sent each the [`Seed`]
    /// of its quantity and marks its changes since ([`ScopeChange::tally_qty`]).
    seeded_qty: HashSet<(Scope, u64, u64)>,
    /// Interned account, desk, firm, instrument and underlying names: snapshot aggregation
    /// by integer keys, and snapshot rows and aggregates that share them instead of copying
    /// strings (a snapshot of the day dataset has ~185k rows and ~240k partial aggregates).
    names: Vec<Arc<str>>,
    name_ids: FxHashMap<String, usize>,
    /// Each name's place among all of them in lexical order, made again at a snapshot once
    /// new names came: a snapshot's rows go out in the order they are written in.
    name_rank: Vec<u32>,
    /// How many of `names` the analytics were sent: a bar's parts number positions and
    /// instruments by name, each name sent once ([`BarPart::Name`]).
    names_sent: usize,
    /// Records waiting for a reference (by its id), each with its time and the reason it
    /// would fail.
    held: HashMap<String, Vec<(Ts, Envelope, String)>>,
    stash: Stash,
    changes: Changes,
    next_boundary: Option<Ts>,
    next_bar: Option<Ts>,
    last_snapshot: Option<Ts>,
    /// Settled quantity changes and settled prices since the last boundary, for the analytics.
    changed_qty: GrowingMap<usize, i64>,
    changed_price: HashSet<usize>,
    /// Definitions accepted since the last message, for the analytics (worker 0).
    definitions: Vec<BarPart>,
    end_ts: Option<Ts>,
    /// The largest event time of a tick or delta seen here.
    max_seen: Ts,
    /// A snapshot's tables of one account's sums, of one desk's and of the firms' (`rolled`),
    /// emptied but kept at their size: the next snapshot fills them again without growing
    /// them step by step.
    aggs: AccountAggs,
    desk: AccountAggs,
    rolled: Aggs,
    /// The last snapshot's number of partial aggregates: the next one's table is made at
    /// about that size.
    aggregates: usize,
    stats: BookStats,
}

/// The firms' snapshot sums, by firm (interned name).
type Aggs = FxHashMap<(usize, SumKey), Sums>;

/// One account's snapshot sums, made before they are rolled up, or one desk's.
type AccountAggs = FxHashMap<SumKey, Sums>;

impl State {
    fn new(config: BookConfig, worker: usize) -> State {
        State {
            config,
            worker,
            instrs: Vec::new(),
            instr_ids: HashMap::default(),
            accts: Vec::new(),
            acct_keys: Vec::new(),
            acct_positions: Vec::new(),
            acct_ids: HashMap::default(),
            positions: Chunked::default(),
            pos_ids: Default::default(),
            rate_sources: HashMap::default(),
            orphan_options: HashMap::default(),
            seen: Default::default(),
            touched: Vec::new(),
            seeded: HashSet::default(),
            seeded_qty: HashSet::default(),
            names: Vec::new(),
            name_ids: FxHashMap::default(),
            name_rank: Vec::new(),
            names_sent: 0,
            held: HashMap::default(),
            stash: Stash::default(),
            changes: Changes::default(),
            next_boundary: None,
            next_bar: None,
            last_snapshot: None,
            changed_qty: Default::default(),
            changed_price: HashSet::default(),
            definitions: Vec::new(),
            end_ts: None,
            max_seen: 0,
            aggs: AccountAggs::default(),
            desk: AccountAggs::default(),
            rolled: Aggs::default(),
            aggregates: 0,
            stats: BookStats::default(),
        }
    }

    fn intern(&mut self, name: &str) -> usize {
        if let Some(&i) = self.name_ids.get(name) {
            return i;
        }
        self.names.push(name.into());
        self.name_ids.insert(name.to_owned(), self.names.len() - 1);
        self.names.len() - 1
    }

    /// The closing snapshot's time: the largest event time any source read.
    fn end(&self) -> Ts {
        self.end_ts.unwrap_or(0).max(self.max_seen)
    }

    /// Takes a slice of records ahead of applying them: marks which of its deltas repeat an
    /// id seen before (bit k for `records[k]`), in the order they will be applied, and starts
    /// loading what each delta reads. A delta's lookups depend on one another and nearly
    /// every one missed the cache (docs/performance.md); taken for a slice at once, the
    /// misses overlap instead of following one another. First the ids' places in the set of
    /// seen ids; while they load, every delta's account and instrument are found, then every
    /// position's place, then the positions and their accounts' keys start loading; last the
    /// ids are inserted.
    fn prepare(&mut self, records: &[(ApplyOrder, usize, Envelope)]) -> u64 {
        let ids: SmallVec<[(usize, u128); PREFETCH_SLICE]> = (records.iter().enumerate())
            .filter_map(|(k, (.., env))| match &env.event {
                Event::Delta(d) => Some((k, id_hash(&d.id))),
                _ => None,
            })
            .collect();
        for &(_, id) in &ids {
            self.seen.prefetch(id);
        }
        let keys: SmallVec<[(usize, usize); PREFETCH_SLICE]> = (records.iter())
            .filter_map(|(.., env)| match &env.event {
                Event::Delta(d) => Some((*self.acct_ids.get(&d.account)?, *self.instr_ids.get(&d.instrument)?)),
                _ => None,
            })
            .collect();
        let places: SmallVec<[usize; PREFETCH_SLICE]> =
            keys.iter().filter_map(|key| self.pos_ids.get(key).copied()).collect();
        for &p in &places {
            prefetch(&self.positions[p]);
        }
        for &(a, _) in &keys {
            prefetch(&self.acct_keys[a]);
        }
        ids.into_iter().filter(|&(_, id)| !self.seen.insert(id)).fold(0, |repeats, (k, _)| repeats | 1 << k)
    }

    fn on_event(
        &mut self,
        time: Ts,
        env: Envelope,
        repeat: bool,
        live: &mut Vec<LiveUpdate>,
        dead: &mut Vec<DeadLetter>,
    ) {
        if let (Event::Tick(_) | Event::Delta(_), Some(ts)) = (&env.event, env.event.ts()) {
            self.max_seen = self.max_seen.max(ts);
            let interval = self.config.snapshot_interval;
            let boundary = time.div_ceil(interval) * interval;
            self.next_boundary = Some(self.next_boundary.map_or(boundary, |b| b.min(boundary)));
            let bar = time.div_ceil(self.config.bar_interval) * self.config.bar_interval;
            self.next_bar = Some(self.next_bar.map_or(bar, |b| b.min(bar)));
        }
        match &env.event {
            Event::Instrument(def) => self.define_instrument(time, def.clone(), live, dead),
            Event::Account(def) => self.define_account(time, def.clone(), live, dead),
            Event::Limit(limit) => {
                self.watch(limit);
                self.seed(time, limit, env.ingest_ns, live);
            }
            Event::End { max_ts } => self.end_ts = Some(self.end_ts.map_or(*max_ts, |e| e.max(*max_ts))),
            Event::Tick(_) => self.on_tick(time, env, live, dead),
            // A delta whose id was seen before (`repeat`, from `State::prepare`) is counted,
            // not applied.
            Event::Delta(_) if repeat => self.stats.duplicates += 1,
            Event::Delta(_) => self.apply_delta(time, env, live, dead),
        }
    }

    /// Scopes with a `var`, `es` or `stress` limit are revalued by the analytics at every bar.
    fn watch(&mut self, limit: &crate::model::Limit) {
        if self.worker == 0 && matches!(limit.metric.as_str(), "var" | "es" | "stress") {
            self.definitions.push(BarPart::Watch(limit.scope, limit.scope_id.clone()));
        }
    }

    /// At the first limit on a scope that reads a tally (its nets for a concentration limit,
    /// its quantity of one instrument for a position_qty limit): this book's part of it, from
    /// its positions in the scope (live exposure per underlying and currency, or quantity),
    /// and the scope's changes marked for it from now on. The limits keep these tallies only.
    fn seed(&mut self, time: Ts, limit: &Limit, ingest_ns: u64, live: &mut Vec<LiveUpdate>) {
        let (scope, key) = (limit.scope, crate::route_hash(&limit.scope_id));
        let Some(tally) = crate::limits::Metric::parse(&limit.metric).and_then(|m| m.tally()) else { return };
        let first = match tally {
            Tally::Nets => self.seeded.insert((scope, key)),
            Tally::Qty(instrument) => self.seeded_qty.insert((scope, key, instrument)),
        };
        if !first {
            return;
        }
        let level = Scope::ALL.iter().position(|s| *s == scope).expect("a scope is one of ALL");
        let accounts: Vec<usize> = match scope {
            Scope::Account => self.acct_ids.get(&limit.scope_id).copied().into_iter().collect(),
            Scope::Desk | Scope::Firm => (0..self.accts.len()).filter(|&a| self.acct_keys[a][level] == key).collect(),
        };
        let mut parts: FxHashMap<(u64, Ccy), ScopeChange> = FxHashMap::default();
        for &p in accounts.iter().flat_map(|&a| &self.acct_positions[a]) {
            let pos = &self.positions[p];
            let instr = &self.instrs[pos.instr as usize];
            // A flat position has no exposure either.
            if pos.qty == Fixed::ZERO || matches!(tally, Tally::Qty(i) if i != instr.key) {
                continue;
            }
            let ccy = pos.live_ccy.unwrap_or(instr.ccy);
            let part = parts.entry((instr.underlying_key, ccy)).or_insert(ScopeChange {
                scope,
                key,
                underlying: instr.underlying_key,
                ccy,
                net: 0,
                gross: 0,
                instrument: instr.key,
                qty: 0,
                ts: time,
                ingest_ns,
                tally: tally == Tally::Nets,
                tally_qty: tally != Tally::Nets,
            });
            match tally {
                Tally::Nets => part.net += pos.live_nanos,
                Tally::Qty(_) => part.qty += pos.qty.0,
            }
        }
        let parts = parts.into_values().collect();
        live.push(LiveUpdate::Seed(Box::new(Seed { scope, key, tally, time, ingest_ns, parts })));
    }

    /// What changed in the settled book since the last parts, and the boundary.
    fn bar_parts(&mut self, bar: bool, snapshot: bool) -> Vec<BarPart> {
        let mut parts = self.changed_parts(usize::MAX);
        if self.worker == 0 {
            for ccy in self.rate_sources.keys().copied().chain([self.config.base_ccy]) {
                if let Some(r) = self.rate(ccy, true) {
                    parts.push(BarPart::Rate(ccy, r));
                }
            }
        }
        parts.push(BarPart::Boundary { bar, snapshot });
        parts
    }

    /// Up to `slice` of the settled quantity changes and prices since the last parts, if there
    /// are at least [`EARLY_PARTS`] of them: sent ahead of the boundary, so that at the
    /// boundary the book builds, and the analytics apply, only about as many.
    fn early_parts(&mut self, slice: usize) -> Option<Vec<BarPart>> {
        (self.changed_qty.len() + self.changed_price.len() >= EARLY_PARTS).then(|| self.changed_parts(slice))
    }

    /// Up to `limit` of the settled quantity changes and prices since the last parts, after the
    /// names they use.
    fn changed_parts(&mut self, limit: usize) -> Vec<BarPart> {
        let new_names = self.names.len() - self.names_sent;
        let changes = (self.changed_qty.len() + self.changed_price.len()).min(limit);
        let mut parts = Vec::with_capacity(new_names + changes + 1);
        // Names by their numbers in this book, each once, before the parts that use them.
        let book = self.worker as u32;
        for (number, name) in self.names.iter().enumerate().skip(self.names_sent) {
            parts.push(BarPart::Name { book, number: number as u32, name: name.clone() });
        }
        self.names_sent = self.names.len();
        // In the tables' order, as a drain takes them; listed first, as the parts read the book.
        let qty: Vec<usize> = self.changed_qty.keys().take(changes).copied().collect();
        let prices: Vec<usize> = self.changed_price.iter().take(changes - qty.len()).copied().collect();
        for pos in qty {
            let qty = self.changed_qty.remove(&pos).expect("a key just listed");
            parts.push(self.qty_part(pos, qty));
        }
        for instr in prices {
            self.changed_price.remove(&instr);
            parts.extend(self.price_part(instr));
        }
        parts
    }

    /// A position's settled quantity change, by the numbers of its account and instrument.
    fn qty_part(&self, pos: usize, qty: i64) -> BarPart {
        let p = &self.positions[pos];
        let (account, instrument) = (self.accts[p.account as usize].name, self.instrs[p.instr as usize].name);
        BarPart::Qty {
            book: self.worker as u32,
            account: account as u32,
            instrument: instrument as u32,
            qty: Fixed(qty),
        }
    }

    /// An instrument's settled price, if it has one.
    fn price_part(&self, instr: usize) -> Option<BarPart> {
        let i = &self.instrs[instr];
        let price = i.settled.price?;
        Some(BarPart::Price { book: self.worker as u32, instrument: i.name as u32, price, iv: i.settled.iv })
    }

    fn hold(&mut self, missing: &str, time: Ts, env: Envelope, reason: String) {
        self.stats.held += 1;
        self.held.entry(missing.to_owned()).or_default().push((time, env, reason));
    }

    fn release(&mut self, id: &str, time: Ts, live: &mut Vec<LiveUpdate>, dead: &mut Vec<DeadLetter>) {
        if let Some(waiting) = self.held.remove(id) {
            for (held_time, env, _) in waiting {
                self.stats.released += 1;
                self.stats.held -= 1;
                // Never earlier than the record's own time: a reference that arrives at an
                // earlier time must not pull a later record into an earlier snapshot.
                let time = time.max(held_time);
                match env.event {
                    Event::Tick(_) => self.on_tick(time, env, live, dead),
                    _ => self.apply_delta(time, env, live, dead),
                }
            }
        }
    }

    fn define_instrument(&mut self, time: Ts, def: Instrument, live: &mut Vec<LiveUpdate>, dead: &mut Vec<DeadLetter>) {
        let id = def.id.clone();
        let idx = match self.instr_ids.get(&id) {
            Some(&idx) => {
                self.instrs[idx].underlying_key = crate::route_hash(def.underlying_id());
                self.instrs[idx].underlying_name = self.intern(def.underlying_id());
                self.instrs[idx].ccy = Ccy::parse(&def.currency).unwrap_or(self.config.base_ccy);
                self.instrs[idx].def = def;
                idx
            }
            None => {
                let idx = self.instrs.len();
                let (name, underlying_name) = (self.intern(&def.id), self.intern(def.underlying_id()));
                self.instrs.push(Instr {
                    name,
                    underlying_name,
                    key: crate::route_hash(&def.id),
                    underlying_key: crate::route_hash(def.underlying_id()),
                    rate_of: None,
                    ccy: Ccy::parse(&def.currency).unwrap_or(self.config.base_ccy),
                    def,
                    live: Price::default(),
                    settled: Price::default(),
                    positions: Vec::new(),
                    options: Vec::new(),
                    underlying: None,
                    greeks: Cell::new(None),
                });
                self.instr_ids.insert(id.clone(), idx);
                idx
            }
        };
        let def = self.instrs[idx].def.clone();
        if self.worker == 0 {
            self.definitions.push(BarPart::Instrument(Box::new(def.clone())));
        }
        if def.asset_class == AssetClass::Fx {
            let base = self.config.base_ccy;
            let (b, q) = (def.base.as_deref().and_then(Ccy::parse), def.quote.as_deref().and_then(Ccy::parse));
            match (b, q) {
                (Some(b), Some(q)) if q == base => {
                    self.rate_sources.insert(b, idx);
                    self.instrs[idx].rate_of = Some(b);
                }
                (Some(b), Some(q)) if b == base => {
                    self.rate_sources.insert(q, idx);
                    self.instrs[idx].rate_of = Some(q);
                }
                _ => {}
            }
        }
        if def.asset_class == AssetClass::Option {
            let und = def.underlying_id().to_owned();
            match self.instr_ids.get(&und) {
                Some(&u) => {
                    self.instrs[u].options.push(idx);
                    self.instrs[idx].underlying = Some(u);
                }
                None => self.orphan_options.entry(und).or_default().push(idx),
            }
        }
        if let Some(options) = self.orphan_options.remove(&id) {
            for o in &options {
                self.instrs[*o].underlying = Some(idx);
            }
            self.instrs[idx].options.extend(options);
        }
        self.release(&id, time, live, dead);
    }

    fn define_account(&mut self, time: Ts, def: Account, live: &mut Vec<LiveUpdate>, dead: &mut Vec<DeadLetter>) {
        let id = def.id.clone();
        let (name, desk, firm) = (self.intern(&def.id), self.intern(&def.desk), self.intern(def.firm()));
        if self.worker == 0 {
            self.definitions.push(BarPart::Account(Box::new(def.clone())));
        }
        match self.acct_ids.entry(id.clone()) {
            Entry::Occupied(e) => {
                self.acct_keys[*e.get()] = account_keys(&def);
                self.accts[*e.get()] = Acct { name, desk, firm };
            }
            Entry::Vacant(e) => {
                e.insert(self.accts.len());
                self.acct_keys.push(account_keys(&def));
                self.acct_positions.push(Vec::new());
                self.accts.push(Acct { name, desk, firm });
            }
        }
        self.release(&id, time, live, dead);
    }

    fn on_tick(&mut self, time: Ts, env: Envelope, live: &mut Vec<LiveUpdate>, _dead: &mut Vec<DeadLetter>) {
        let Event::Tick(Tick { ts, ref instrument, price, iv, .. }) = env.event else { return };
        let Some(&idx) = self.instr_ids.get(instrument) else {
            let reason = format!("unknown instrument {instrument}");
            let missing = instrument.clone();
            return self.hold(&missing, time, env, reason);
        };
        self.stats.ticks_applied += 1;
        self.stash.push(time, Settle::Price { instr: idx, ts, price, iv });
        if !self.instrs[idx].live.apply(ts, price, iv) {
            return;
        }
        let ingest_ns = env.ingest_ns;
        if let Some(ccy) = self.instrs[idx].rate_of {
            if let Some(rate) = self.rate(ccy, false) {
                live.push(LiveUpdate::Rate { ccy, rate, ts, ingest_ns });
            }
        }
        // The instrument's positions and its options': they lie scattered in memory, so start
        // loading them all at once, so that their cache misses overlap instead of following one
        // another; then their accounts' route keys, once each position's account is in.
        let mut touched = std::mem::take(&mut self.touched);
        let instr = &self.instrs[idx];
        touched.extend(instr.positions.iter().chain(instr.options.iter().flat_map(|&o| &self.instrs[o].positions)));
        for &p in &touched {
            prefetch(&self.positions[p]);
        }
        for &p in &touched {
            prefetch(&self.acct_keys[self.positions[p].account as usize]);
        }
        for &p in &touched {
            self.revalue(p, 0, ts, ingest_ns);
        }
        touched.clear();
        self.touched = touched;
        self.changes.flush(live);
    }

    fn apply_delta(&mut self, time: Ts, env: Envelope, live: &mut Vec<LiveUpdate>, dead: &mut Vec<DeadLetter>) {
        let Event::Delta(Delta { ts, ref account, ref instrument, qty, .. }) = env.event else { return };
        let Some(&a) = self.acct_ids.get(account) else {
            let (missing, reason) = (account.clone(), format!("unknown account {account}"));
            return self.hold(&missing, time, env, reason);
        };
        let Some(&i) = self.instr_ids.get(instrument) else {
            let (missing, reason) = (instrument.clone(), format!("unknown instrument {instrument}"));
            return self.hold(&missing, time, env, reason);
        };
        let p = *self.pos_ids.entry((a, i)).or_insert_with(|| {
            self.positions.push(Pos {
                account: a as u32,
                instr: i as u32,
                qty: Fixed::ZERO,
                settled_qty: Fixed::ZERO,
                live_nanos: 0,
                live_ccy: None,
            });
            self.instrs[i].positions.push(self.positions.len() - 1);
            self.acct_positions[a].push(self.positions.len() - 1);
            self.positions.len() - 1
        });
        let Some(new_qty) = self.positions[p].qty.checked_add(qty) else {
            let reason = format!("position {account}/{instrument} would overflow");
            dead.push(DeadLetter { origin: env.origin, payload: payload_of(&env.event), reason });
            return;
        };
        self.stats.deltas_applied += 1;
        self.positions[p].qty = new_qty;
        self.stash.push(time, Settle::Qty { pos: p, qty });
        self.revalue(p, qty.0, ts, env.ingest_ns);
        self.changes.flush(live);
    }

    /// The exposure of a position from either the live or the settled state, at `now`.
    fn exposure_of(&self, p: usize, settled: bool, now: Ts) -> Option<Exposure> {
        let pos = &self.positions[p];
        let instr = &self.instrs[pos.instr as usize];
        let (qty, price) = if settled { (pos.settled_qty, instr.settled) } else { (pos.qty, instr.live) };
        if qty == Fixed::ZERO {
            return None;
        }
        let option = instr.underlying.and_then(|u| {
            let und = if settled { self.instrs[u].settled } else { self.instrs[u].live };
            Some(OptionMarket { spot: und.price?, vol: price.iv? })
        });
        let greeks = |kind, s: f64, k: f64, t: f64, r: f64, sigma: f64| {
            let args = [s, k, t, r, sigma].map(f64::to_bits);
            match instr.greeks.get() {
                Some((was, at, g)) if (was, at) == (kind, args) => g,
                _ => {
                    let g = black_scholes(kind, s, k, t, r, sigma);
                    instr.greeks.set(Some((kind, args, g)));
                    g
                }
            }
        };
        position_exposure_with(&instr.def, qty, price.price?, option, now, self.config.rate, greeks).ok()
    }

    /// Recomputes a position's live exposure and adds its change (with a quantity change
    /// `dqty`) to the current record's scope changes, if its delta exposure or quantity
    /// changed (what limits measure; the batch replay in `riskflow recon --limits` agrees).
    fn revalue(&mut self, p: usize, dqty: i64, ts: Ts, ingest_ns: u64) {
        let new = self.exposure_of(p, false, ts).map(|e| e.delta);
        let pos = &mut self.positions[p];
        let old = pos.live_ccy.map(|ccy| Leg { ccy, nanos: pos.live_nanos });
        if old == new && dqty == 0 {
            return;
        }
        (pos.live_nanos, pos.live_ccy) = new.map_or((0, None), |l| (l.nanos, Some(l.ccy)));
        let keys = self.acct_keys[pos.account as usize];
        let instr = &self.instrs[pos.instr as usize];
        let ccy_of = |e: &Option<Leg>| e.map(|e| e.ccy);
        let base = instr.ccy;
        let (instrument, underlying) = (instr.key, instr.underlying_key);
        let (changes, seeded, seeded_qty) = (&mut self.changes, &self.seeded, &self.seeded_qty);
        let mut add = |ccy: Ccy, net: Nanos, gross: Nanos, qty: i64| {
            for (scope, key) in Scope::ALL.into_iter().zip(keys) {
                let slot = *changes.index.entry((scope, key, underlying, ccy)).or_insert_with(|| {
                    changes.list.push(ScopeChange {
                        scope,
                        key,
                        underlying,
                        ccy,
                        net: 0,
                        gross: 0,
                        instrument,
                        qty: 0,
                        ts,
                        ingest_ns,
                        tally: !seeded.is_empty() && seeded.contains(&(scope, key)),
                        tally_qty: false,
                    });
                    changes.list.len() - 1
                });
                let c = &mut changes.list[slot];
                c.net += net;
                c.gross += gross;
                c.qty += qty;
                // Only a delta changes a quantity, and it changes one position's.
                if qty != 0 && !seeded_qty.is_empty() {
                    c.tally_qty = seeded_qty.contains(&(scope, key, instrument));
                }
            }
        };
        let leg = |e: &Option<Leg>| e.map_or((0, 0), |e| (e.nanos, e.nanos.abs()));
        let ((old_net, old_gross), (new_net, new_gross)) = (leg(&old), leg(&new));
        if ccy_of(&old) == ccy_of(&new) || old.is_none() || new.is_none() {
            add(ccy_of(&new).or(ccy_of(&old)).unwrap_or(base), new_net - old_net, new_gross - old_gross, dqty);
        } else {
            add(ccy_of(&old).unwrap_or(base), -old_net, -old_gross, 0);
            add(ccy_of(&new).unwrap_or(base), new_net, new_gross, dqty);
        }
    }

    /// Applies stashed changes with time ≤ `upto` to the settled state, in time order, at most
    /// `budget` of them (lowered by their number). True if all of them are applied.
    fn settle_until(&mut self, upto: Ts, budget: &mut usize) -> bool {
        let (positions, instrs, worker) = (&mut self.positions, &mut self.instrs, self.worker);
        let (changed_qty, changed_price) = (&mut self.changed_qty, &mut self.changed_price);
        self.stash.take(upto, budget, |change| match change {
            Settle::Qty { pos, qty } => {
                let p = &mut positions[pos];
                p.settled_qty = Fixed(p.settled_qty.0 + qty.0);
                *changed_qty.entry(pos).or_default() += qty.0;
            }
            Settle::Price { instr, ts, price, iv } => {
                if instrs[instr].settled.apply(ts, price, iv) && worker == 0 {
                    changed_price.insert(instr);
                }
            }
        })
    }

    /// Base-currency units per unit of `ccy`, in the live or the settled state.
    fn rate(&self, ccy: Ccy, settled: bool) -> Option<f64> {
        if ccy == self.config.base_ccy {
            return Some(1.0);
        }
        let def = &self.instrs[*self.rate_sources.get(&ccy)?];
        let price = if settled { def.settled.price } else { def.live.price }?.to_f64();
        rate_from_pair(
            def.def.base.as_deref()?,
            def.def.quote.as_deref()?,
            price,
            ccy.as_str(),
            self.config.base_ccy.as_str(),
        )
    }

    /// Makes `name_rank` again if names came since it was made.
    fn rank_names(&mut self) {
        if self.name_rank.len() == self.names.len() {
            return;
        }
        self.name_rank = crate::snapshot::lexical_ranks(&self.names);
    }

    /// This worker's part of the snapshot at `as_of`, from the settled state.
    fn snapshot(&mut self, as_of: Ts, parts: &mut Vec<SnapshotPart>) {
        self.rank_names();
        let (mut aggs, mut desk, mut rolled) =
            (std::mem::take(&mut self.aggs), std::mem::take(&mut self.desk), std::mem::take(&mut self.rolled));
        let mut rates: HashMap<Ccy, f64> = HashMap::default();
        for ccy in self.rate_sources.keys().copied().chain([self.config.base_ccy]) {
            if let Some(r) = self.rate(ccy, true) {
                rates.insert(ccy, r);
            }
        }
        let base = |n: i128, c: Ccy| rates.get(&c).map(|r| crate::formulas::from_nanos(n) * r);
        let mut unpriced = 0;
        // The labels that are not interned names (asset class, currency, fx factor, none for
        // totals), made once a snapshot.
        let mut labels: HashMap<Bucket, Arc<str>> = HashMap::default();
        let (names, accts) = (&self.names, &self.accts);
        let mut row_of = |owner: Owner, key: SumKey, sums: Sums| {
            let (bucket, ccy) = (key.bucket(), key.ccy());
            let (scope, scope_id) = match owner {
                Owner::Account(a) => (Scope::Account, names[accts[a].name].clone()),
                Owner::Desk(n) => (Scope::Desk, names[n].clone()),
                Owner::Firm(n) => (Scope::Firm, names[n].clone()),
            };
            let dim = match bucket {
                Bucket::Total => Dim::Total,
                Bucket::Class(_) => Dim::AssetClass,
                Bucket::Underlying(_) => Dim::Underlying,
                Bucket::Currency(_) => Dim::Currency,
                Bucket::Factor(_) | Bucket::FxFactor(_) => Dim::Factor,
            };
            let bucket = match bucket {
                Bucket::Underlying(n) | Bucket::Factor(n) => names[n].clone(),
                other => (labels.entry(other))
                    .or_insert_with(|| match other {
                        Bucket::Class(c) => c.as_str().into(),
                        Bucket::Currency(c) => c.to_string().into(),
                        Bucket::FxFactor(c) => format!("FX:{c}").into(),
                        _ => "".into(),
                    })
                    .clone(),
            };
            (AggKey { scope, scope_id, dim, bucket, ccy }, sums)
        };
        // Each table is made at its size once and sent whole: row by row, a snapshot's ~200k
        // rows were copied into a growing table, into the output's buffers and into the
        // collector's tables in turn (docs/performance.md). The positions' has room for a row
        // per position; the aggregates' an eighth more than the last snapshot's, as the book
        // grows through the day: made at the last one's size, it was often outgrown and copied
        // whole into one twice as large.
        let mut positions = Vec::with_capacity(self.positions.len());
        let mut aggregates = Vec::with_capacity(self.aggregates + self.aggregates / 8);
        // Account by account, a desk's accounts one after another: an account's sums are made
        // in a small table that stays in the cache, then each is rolled into its desk's (a
        // table of that desk alone, also small) and its firm's and kept once. Added into one
        // table of every account's sums, nearly every position's five sums were cache misses;
        // into one table of every desk's, most of the roll-up's. Within a desk, accounts by
        // name and an account's positions by instrument: the rows go out in the order the
        // table is written in, a run per desk, which the snapshot's writer merges instead of
        // sorting ~185k rows.
        let rank = &self.name_rank;
        let mut order: Vec<usize> = (0..self.accts.len()).collect();
        order.sort_unstable_by_key(|&a| (self.accts[a].desk, rank[self.accts[a].name]));
        // An account's positions with their instruments' ranks, each read once: sorting by a
        // key read through the position and its instrument at every comparison was ~8% of a
        // snapshot.
        let mut held: Vec<(u32, usize)> = Vec::new();
        for (k, &a) in order.iter().enumerate() {
            let acct = &self.accts[a];
            held.clear();
            held.extend(
                self.acct_positions[a].iter().map(|&p| (rank[self.instrs[self.positions[p].instr as usize].name], p)),
            );
            held.sort_unstable();
            for &(_, p) in &held {
                let pos = &self.positions[p];
                if pos.settled_qty == Fixed::ZERO {
                    continue;
                }
                let instr = &self.instrs[pos.instr as usize];
                let def = &instr.def;
                let ccy = instr.ccy;
                let exposure = self.exposure_of(p, true, as_of);
                let row = PositionRow {
                    account: self.names[acct.name].clone(),
                    desk: self.names[acct.desk].clone(),
                    firm: self.names[acct.firm].clone(),
                    instrument: self.names[instr.name].clone(),
                    asset_class: def.asset_class,
                    underlying: self.names[instr.underlying_name].clone(),
                    currency: ccy,
                    qty: pos.settled_qty,
                    price: instr.settled.price,
                    exposure_currency: exposure.map_or(ccy, |e| e.delta.ccy),
                    exposure_local: exposure.map(|e| e.delta.nanos),
                    exposure: exposure.and_then(|e| base(e.delta.nanos, e.delta.ccy)),
                    gamma: exposure.and_then(|e| base(e.gamma, e.delta.ccy)),
                    vega: exposure.and_then(|e| base(e.vega, e.delta.ccy)),
                    quote_exposure: exposure.and_then(|e| e.quote).and_then(|q| base(q.nanos, q.ccy)),
                };
                let Some(e) = exposure.filter(|_| row.exposure.is_some()) else {
                    unpriced += 1;
                    positions.push(row);
                    continue;
                };
                let delta = Sums::of_exposure(&e);
                let d = e.delta.ccy;
                let underlying = instr.underlying_name;
                let mut add =
                    |bucket: Bucket, ccy: Ccy, sums: &Sums| aggs.entry(SumKey::new(bucket, ccy)).or_default().add(sums);
                add(Bucket::Total, d, &delta);
                add(Bucket::Class(def.asset_class), d, &delta);
                add(Bucket::Underlying(underlying), d, &delta);
                add(Bucket::Currency(d), d, &delta);
                match def.asset_class {
                    AssetClass::Fx if d == self.config.base_ccy => {}
                    AssetClass::Fx => add(Bucket::FxFactor(d), d, &delta),
                    _ => add(Bucket::Factor(underlying), d, &delta),
                }
                if let Some(q) = e.quote {
                    let leg = Sums::of_leg(q.nanos, 0, 0);
                    add(Bucket::Currency(q.ccy), q.ccy, &leg);
                    if q.ccy != self.config.base_ccy {
                        add(Bucket::FxFactor(q.ccy), q.ccy, &leg);
                    }
                }
                positions.push(row);
            }
            // A desk's and the firm's sums are their accounts' (exact integers, so the order of
            // addition cannot show): rolled up from the account sums, three times fewer updates
            // than adding every position to all three.
            for (key, sums) in aggs.drain() {
                desk.entry(key).or_default().add(&sums);
                rolled.entry((acct.firm, key)).or_default().add(&sums);
                aggregates.push(row_of(Owner::Account(a), key, sums));
            }
            if order.get(k + 1).is_none_or(|&next| self.accts[next].desk != acct.desk) {
                aggregates.extend(desk.drain().map(|(key, sums)| row_of(Owner::Desk(acct.desk), key, sums)));
            }
        }
        aggregates.extend(rolled.drain().map(|((firm, key), sums)| row_of(Owner::Firm(firm), key, sums)));
        self.aggregates = aggregates.len();
        parts.push(SnapshotPart::Positions(positions));
        parts.push(SnapshotPart::Aggregates(aggregates));
        if self.worker == 0 {
            parts.extend(rates.into_iter().map(|(ccy, r)| SnapshotPart::Rate(ccy, r)));
        }
        parts.push(SnapshotPart::Marker { unpriced });
        (self.aggs, self.desk, self.rolled) = (aggs, desk, rolled);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bucket() -> impl Strategy<Value = Bucket> {
        let class =
            prop::sample::select(vec![AssetClass::Equity, AssetClass::Future, AssetClass::Option, AssetClass::Fx]);
        let name = 0..(1usize << 32);
        prop_oneof![
            Just(Bucket::Total),
            class.prop_map(Bucket::Class),
            name.clone().prop_map(Bucket::Underlying),
            ccy().prop_map(Bucket::Currency),
            name.prop_map(Bucket::Factor),
            ccy().prop_map(Bucket::FxFactor),
        ]
    }

    fn ccy() -> impl Strategy<Value = Ccy> {
        any::<[u8; 3]>().prop_map(Ccy)
    }

    proptest! {
        /// A packed key gives back its bucket and currency: two keys are equal exactly when
        /// their buckets and currencies are.
        #[test]
        fn sum_key_keeps_its_bucket_and_currency(bucket in bucket(), ccy in ccy()) {
            let key = SumKey::new(bucket, ccy);
            prop_assert_eq!((key.bucket(), key.ccy()), (bucket, ccy));
        }
    }
}
