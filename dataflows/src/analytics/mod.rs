//! Risk analytics (docs/analytics.md): bars and returns, EWMA and windowed volatility, EWMA
//! covariance and correlation, VaR/ES, stress and regime signals.
//!
//! ```text
//!   Book (every worker) ── BarPart @ boundaries, and ahead ───exchange(→0)──> Analytics ─┬─> MetricUpdate (var, es, stress) → limits
//!     definitions, settled prices, rates (worker 0); settled quantity changes (all)      ├─> RegimeEvent → risk-regimes
//!                                                                                        └─> AnalyticsTables @ as_of → snapshot
//! ```
//!
//! Work happens once per bar end (1 s of event time by default), not per update: the factor
//! model advances one bar, and the scopes with a `var`, `es` or `stress` limit are revalued
//! from the settled positions at the bar end. At a snapshot every scope is. The work runs on a
//! thread of its own, off worker 0's live path ([`analytics`]).

pub mod config;
pub mod factors;
pub mod regimes;
pub mod risk;

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;

use rustc_hash::FxHashSet as HashSet;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

pub use config::{AnalyticsConfig, LimitMethod, RegimeConfig, Scenario, Shock};
pub use regimes::{RegimeEvent, RegimeRow};
pub use risk::RiskRow;

use crate::clock::now_ns;
use crate::exposure::Ccy;
use crate::limits::{Metric, MetricUpdate};
use crate::model::{Account, AssetClass, Fixed, Instrument, Scope, Ts};
use factors::FactorModel;
use regimes::Regimes;
use risk::Positions;

/// What the book tells the analytics, at the time it happened (definitions) or at a
/// boundary (the rest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BarPart {
    /// Boxed, as definitions are rare and large: a part is copied several times on its way to
    /// the analytics (~77k of them at a bar end of a 200k-position book), at the size of the
    /// largest variant.
    Instrument(Box<Instrument>),
    Account(Box<Account>),
    /// A scope has a `var`, `es` or `stress` limit: revalue it at every bar end.
    Watch(Scope, String),
    /// A name a book (one per worker) numbers `number`, sent once, before any part that uses
    /// the number: a bar's ~77k parts (on a 200k-position book) then carry numbers, not names,
    /// and the analytics look a position up by number.
    Name {
        book: u32,
        number: u32,
        name: Arc<str>,
    },
    /// A settled price that changed since the book's previous parts (the instrument by its
    /// number in `book`). A book sends its changes at each boundary, and ahead of it once it
    /// has a few thousand (`book.rs`, `EARLY_PARTS`).
    Price {
        book: u32,
        instrument: u32,
        price: Fixed,
        iv: Option<f64>,
    },
    Rate(Ccy, f64),
    /// A settled quantity change since the book's previous parts (account and instrument by
    /// their numbers in `book`).
    Qty {
        book: u32,
        account: u32,
        instrument: u32,
        qty: Fixed,
    },
    /// The boundary itself: a bar end, a snapshot, or both.
    Boundary {
        bar: bool,
        snapshot: bool,
    },
}

// Kept small: see `BarPart::Instrument`.
const _: () = assert!(std::mem::size_of::<BarPart>() == 40);

/// One factor's row of the `volatility` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolRow {
    pub factor: String,
    pub close: f64,
    pub last_return: Option<f64>,
    pub returns: u64,
    pub ewma_var: Option<f64>,
    pub ewma_vol_annual: Option<f64>,
    pub window_returns: u64,
    pub window_var: Option<f64>,
    pub window_vol_annual: Option<f64>,
}

/// One pair's row of the `correlation` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrRow {
    pub factor_a: String,
    pub factor_b: String,
    pub covariance: f64,
    pub correlation: Option<f64>,
}

/// The analytics tables of one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsTables {
    /// The bar end the factor figures are from.
    pub bar_end: Option<Ts>,
    pub volatility: Vec<VolRow>,
    pub correlation: Vec<CorrRow>,
    pub risk: Vec<RiskRow>,
    /// Scenario names, in the order of [`RiskRow::stress`].
    pub scenarios: Vec<String>,
    pub regimes: Vec<RegimeRow>,
}

/// The analytics' outputs.
pub struct AnalyticsStreams<'scope> {
    pub metrics: StreamVec<'scope, Ts, MetricUpdate>,
    pub regimes: StreamVec<'scope, Ts, RegimeEvent>,
    pub tables: StreamVec<'scope, Ts, AnalyticsTables>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Out {
    Metric(MetricUpdate),
    Regime(RegimeEvent),
    Tables(Box<AnalyticsTables>),
}

/// All the analytics state, on worker 0.
struct State {
    config: AnalyticsConfig,
    base: Ccy,
    rate: f64,
    positions: Positions,
    model: FactorModel,
    regimes: Regimes,
    /// Scope ids with a `var`, `es` or `stress` limit, by scope.
    watched: [HashSet<String>; 3],
    /// Whether any instrument ticked since the last bar closed.
    ticked: bool,
    books: Books,
}

/// Each book's names by number ([`BarPart::Name`]), each with the numbers [`Positions`] gives
/// it as an account and as an instrument, once looked up.
#[derive(Default)]
struct Books(Vec<Vec<Named>>);

/// A book's name, and its numbers in [`Positions`] by [`Role`].
type Named = (Option<Arc<str>>, [Option<u32>; 2]);

#[derive(Clone, Copy)]
enum Role {
    Account = 0,
    Instrument = 1,
}

impl Books {
    fn name(&mut self, book: u32, number: u32, name: Arc<str>) {
        let (book, n) = (book as usize, number as usize);
        if self.0.len() <= book {
            self.0.resize_with(book + 1, Vec::new);
        }
        let names = &mut self.0[book];
        if names.len() <= n {
            names.resize(n + 1, (None, [None; 2]));
        }
        names[n] = (Some(name), [None; 2]);
    }

    /// The number in `p` of the name `book` numbers `number`, in `role`.
    fn number(&mut self, p: &mut Positions, book: u32, number: u32, role: Role) -> u32 {
        let entry = self.0.get_mut(book as usize).and_then(|names| names.get_mut(number as usize));
        let Some((Some(name), numbers)) = entry else { panic!("book {book} used number {number} before naming it") };
        *numbers[role as usize].get_or_insert_with(|| match role {
            Role::Account => p.account_number(name),
            Role::Instrument => p.instrument_number(name),
        })
    }
}

impl State {
    fn new(config: AnalyticsConfig, base: Ccy, rate: f64) -> State {
        let regimes = Regimes::new(config.regimes.clone(), config.lambda, config.bars_per_year);
        let model = FactorModel::new(config.lambda, config.window, config.history);
        State {
            config,
            base,
            rate,
            positions: Positions::default(),
            model,
            regimes,
            watched: Default::default(),
            ticked: false,
            books: Books::default(),
        }
    }

    /// Applies one time's parts and, at a boundary, computes what it emits.
    fn run(&mut self, time: Ts, parts: Vec<BarPart>) -> Vec<Out> {
        let (mut bar, mut snapshot) = (false, false);
        for part in parts {
            if let BarPart::Boundary { bar: b, snapshot: s } = part {
                bar |= b;
                snapshot |= s;
            }
            self.apply(part);
        }
        let mut out = Vec::new();
        if bar || snapshot {
            self.boundary(time, bar, snapshot, &mut out);
        }
        out
    }

    fn apply(&mut self, part: BarPart) {
        let p = &mut self.positions;
        match part {
            BarPart::Instrument(def) => p.define_instrument(*def),
            BarPart::Account(def) => p.define_account(*def),
            BarPart::Watch(scope, id) => {
                self.watched[scope as usize].insert(id);
            }
            BarPart::Name { book, number, name } => self.books.name(book, number, name),
            BarPart::Price { book, instrument, price, iv } => {
                // The book's settled price keeps the last implied vol any tick carried.
                self.ticked = true;
                let i = self.books.number(p, book, instrument, Role::Instrument);
                p.set_price_of(i, price, iv);
            }
            BarPart::Rate(ccy, rate) => p.set_rate(ccy, rate),
            BarPart::Qty { book, account, instrument, qty } => {
                let a = self.books.number(p, book, account, Role::Account);
                let i = self.books.number(p, book, instrument, Role::Instrument);
                p.add_qty_of(a, i, qty);
            }
            BarPart::Boundary { .. } => {}
        }
    }

    fn is_benchmark(&self, factor: &str) -> bool {
        if !self.config.benchmarks.is_empty() {
            return self.config.benchmarks.iter().any(|b| b == factor);
        }
        let def = self.positions.instrument(factor);
        def.is_some_and(|d| d.asset_class == AssetClass::Equity && d.sector.as_deref() == Some("index"))
    }

    /// Closes the bar ending at `t`: every equity with a price and every currency with a rate.
    /// A bar in which nothing ticked is skipped (the market was closed): it has no returns.
    /// Σ's step is left to the pass that revalues the scopes ([`Positions::risk`]).
    fn close_bar(&mut self, t: Ts) -> Option<Vec<(usize, f64)>> {
        if !std::mem::take(&mut self.ticked) {
            return None;
        }
        let closes = self.positions.closes(self.base);
        Some(self.model.close_bar_but_sigma(t, closes))
    }

    /// The regime signals of the bar just closed, once Σ has taken its step.
    fn regimes(&mut self, t: Ts, returns: &[(usize, f64)], out: &mut Vec<Out>) {
        for i in 0..self.model.factors.len() {
            if self.is_benchmark(&self.model.factors[i].name) {
                self.regimes.add_benchmark(i);
            }
        }
        let mut events = Vec::new();
        self.regimes.on_bar(t, returns, &self.model, &mut events);
        out.extend(events.into_iter().map(Out::Regime));
    }

    fn boundary(&mut self, t: Ts, bar: bool, snapshot: bool, out: &mut Vec<Out>) {
        let returns = if bar { self.close_bar(t) } else { None };
        let watched = &self.watched;
        let all = |_: Scope, _: &str| true;
        let some = |s: Scope, id: &str| watched[s as usize].contains(id);
        let wanted: &dyn Fn(Scope, &str) -> bool = if snapshot { &all } else { &some };
        let rows = (snapshot || watched.iter().any(|w| !w.is_empty()))
            .then(|| self.positions.risk(t, self.base, self.rate, &self.config, &mut self.model, wanted));
        // Σ's step, if `risk` did not take it.
        self.model.settle();
        if let Some(returns) = returns {
            self.regimes(t, &returns, out);
        }
        let Some(rows) = rows else { return };
        let watched = &self.watched;
        let ingest_ns = now_ns();
        for row in rows.iter().filter(|r| watched[r.scope as usize].contains(&r.scope_id)) {
            let (var, es) = match self.config.limit_method {
                LimitMethod::Parametric => (row.var_parametric, row.es_parametric),
                LimitMethod::Historical => (row.var_historical, row.es_historical),
            };
            let values = [(Metric::Var, var), (Metric::Es, es), (Metric::Stress, Some(row.stress_worst))];
            for (metric, value) in values {
                let Some(value) = value else { continue };
                let (scope, scope_id) = (row.scope, row.scope_id.clone());
                out.push(Out::Metric(MetricUpdate { scope, scope_id, metric, value, ts: t, ingest_ns }));
            }
        }
        if snapshot {
            out.push(Out::Tables(Box::new(self.tables(rows))));
        }
    }

    fn tables(&self, risk: Vec<RiskRow>) -> AnalyticsTables {
        let m = &self.model;
        let annual = |v: f64| (v * self.config.bars_per_year).sqrt();
        let mut order: Vec<usize> = (0..m.factors.len()).collect();
        order.sort_by(|a, b| m.factors[*a].name.cmp(&m.factors[*b].name));
        let volatility = order
            .iter()
            .filter_map(|&i| {
                let f = &m.factors[i];
                let (n, window_var) = f.window_var();
                Some(VolRow {
                    factor: f.name.clone(),
                    close: f.close?,
                    last_return: f.last_return,
                    returns: f.returns,
                    ewma_var: f.ewma_var,
                    ewma_vol_annual: f.ewma_var.map(annual),
                    window_returns: n as u64,
                    window_var,
                    window_vol_annual: window_var.map(annual),
                })
            })
            .collect();
        let mut correlation = Vec::new();
        // Only the pairs of listed factors are written: the others are never visited (5k
        // factors make 12.5M pairs).
        let listed: Vec<usize> =
            order.iter().copied().filter(|&f| self.config.writes_factor(&m.factors[f].name)).collect();
        for (k, &a) in listed.iter().enumerate() {
            for &b in &listed[k..] {
                if let Some(covariance) = m.cov(a, b) {
                    let (factor_a, factor_b) = (m.factors[a].name.clone(), m.factors[b].name.clone());
                    correlation.push(CorrRow { factor_a, factor_b, covariance, correlation: m.correlation(a, b) });
                }
            }
        }
        AnalyticsTables {
            bar_end: m.bar_end,
            volatility,
            correlation,
            risk,
            scenarios: self.config.scenarios.iter().map(|s| s.name.clone()).collect(),
            regimes: self.regimes.rows(),
        }
    }
}

/// The analytics' thread: each time's parts in, that time's outputs back, in order.
struct Helper {
    jobs: Sender<(Ts, Vec<BarPart>)>,
    results: Receiver<(Ts, Vec<Out>)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Helper {
    fn spawn(mut state: State, activator: SyncActivator) -> Helper {
        let (jobs, inbox) = channel::<(Ts, Vec<BarPart>)>();
        let (outbox, results) = channel();
        let handle = std::thread::Builder::new()
            .name("analytics".into())
            .spawn(move || {
                // However the thread ends (a panic too), the operator is woken to see it.
                let _wake = WakeOnExit(activator.clone());
                for (time, parts) in inbox {
                    let out = state.run(time, parts);
                    // The worker is gone when either fails: nothing is waiting for the result.
                    if outbox.send((time, out)).is_err() || activator.activate().is_err() {
                        return;
                    }
                }
            })
            .expect("spawning the analytics thread");
        Helper { jobs, results, handle: Some(handle) }
    }

    /// The thread stopped with work outstanding: it panicked. Its panic becomes the worker's.
    fn failed(&mut self) -> ! {
        match self.handle.take().map(std::thread::JoinHandle::join) {
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            _ => panic!("the analytics thread stopped"),
        }
    }
}

struct WakeOnExit(SyncActivator);

impl Drop for WakeOnExit {
    fn drop(&mut self) {
        let _ = self.0.activate();
    }
}

/// Builds the analytics over the book's [`BarPart`]s; all state lives on worker 0, and the
/// work on a thread of its own (`analytics`), so that a bar end's revaluation does not stop
/// the worker's live path. The operator hands each time's parts to the thread once the
/// frontier passes that time, in time order, and holds the time's capability until the
/// thread's outputs for it come back.
pub fn analytics<'scope>(
    parts: StreamVec<'scope, Ts, BarPart>,
    config: AnalyticsConfig,
    base: Ccy,
    rate: f64,
) -> AnalyticsStreams<'scope> {
    let worker = parts.scope().worker();
    let out = parts.unary_frontier(Exchange::new(|_: &BarPart| 0), "Analytics", move |_cap, info| {
        let activator = worker.sync_activator_for(info.address.to_vec());
        let mut config = Some(config);
        let mut thread: Option<Helper> = None;
        let mut pending: BTreeMap<Ts, (Capability<Ts>, Vec<BarPart>)> = BTreeMap::new();
        let mut outstanding: VecDeque<(Ts, Capability<Ts>)> = VecDeque::new();
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let time = crate::time_of(&cap);
                let entry =
                    pending.entry(time).or_insert_with(|| (cap.delayed(&time, output.output_index()), Vec::new()));
                entry.1.append(data);
            });
            while let Some(entry) = pending.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                let (time, (cap, parts)) = entry.remove_entry();
                let helper = thread.get_or_insert_with(|| {
                    let config = config.take().expect("one thread");
                    Helper::spawn(State::new(config, base, rate), activator.clone())
                });
                helper.jobs.send((time, parts)).unwrap_or_else(|_| helper.failed());
                outstanding.push_back((time, cap));
            }
            let Some(helper) = thread.as_mut() else { return };
            while !outstanding.is_empty() {
                let (time, out) = match helper.results.try_recv() {
                    Ok(done) => done,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => helper.failed(),
                };
                let (at, cap) = outstanding.pop_front().expect("a job per result");
                debug_assert_eq!(at, time);
                output.session(&cap).give_iterator(out.into_iter());
            }
        }
    });
    let metrics = out.clone().flat_map(|o| match o {
        Out::Metric(m) => Some(m),
        _ => None,
    });
    let regimes = out.clone().flat_map(|o| match o {
        Out::Regime(r) => Some(r),
        _ => None,
    });
    let tables = out.flat_map(|o| match o {
        Out::Tables(t) => Some(*t),
        _ => None,
    });
    AnalyticsStreams { metrics, regimes, tables }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_from_books_that_number_names_differently_land_on_their_positions() {
        let mut state = State::new(AnalyticsConfig::default(), Ccy::USD, 0.0);
        let mut by_name = Positions::default();
        by_name.set_rate(Ccy::USD, 1.0);
        let mut parts = vec![BarPart::Rate(Ccy::USD, 1.0)];
        for id in ["A", "B"] {
            parts.push(BarPart::Instrument(Box::new(Instrument::equity(id, "USD"))));
            by_name.define_instrument(Instrument::equity(id, "USD"));
        }
        for id in ["X", "Y"] {
            let account = Account { id: id.into(), desk: "D".into(), firm: None };
            parts.push(BarPart::Account(Box::new(account.clone())));
            by_name.define_account(account);
        }
        // Book 0 numbers X, A, B; book 1 numbers B, Y, A.
        for (book, names) in [(0, ["X", "A", "B"]), (1, ["B", "Y", "A"])] {
            for (number, name) in names.into_iter().enumerate() {
                parts.push(BarPart::Name { book, number: number as u32, name: name.into() });
            }
        }
        let qty = |book, account, instrument, q| BarPart::Qty { book, account, instrument, qty: Fixed::from_int(q) };
        let price = |book, instrument, p| BarPart::Price { book, instrument, price: Fixed::from_int(p), iv: None };
        parts.extend([qty(0, 0, 1, 10), qty(1, 1, 0, 5), qty(1, 1, 2, -3), price(0, 1, 100), price(1, 0, 50)]);
        for (account, instrument, q) in [("X", "A", 10), ("Y", "B", 5), ("Y", "A", -3)] {
            by_name.add_qty(account, instrument, Fixed::from_int(q));
        }
        by_name.set_price("A", Fixed::from_int(100), None);
        by_name.set_price("B", Fixed::from_int(50), None);
        parts.into_iter().for_each(|part| state.apply(part));
        let config = AnalyticsConfig::default();
        let mut model = FactorModel::new(config.lambda, config.window, config.history);
        let mut rows = |p: &Positions| p.risk(1, Ccy::USD, 0.0, &config, &mut model, &|_, _| true);
        let (got, want) = (rows(&state.positions), rows(&by_name));
        // X holds 10 A at 100: it loses in the 2020-03-16 crash (A −11.98%); Y, 5 B at 50 and
        // −3 A at 100, gains in it.
        let ids: Vec<&str> = got.iter().map(|r| r.scope_id.as_str()).collect();
        assert_eq!(ids, ["X", "Y", "D", "FIRM"]);
        assert_eq!((got[0].stress[1], got[0].stress_worst), (-1000.0 * 0.1198, 1000.0 * 0.1198));
        assert!(got[1].stress[1] > 0.0, "{got:?}");
        assert_eq!(got, want);
    }
}
