//! Limits, breaches and automated responses (DESIGN.md §4).
//!
//! ```text
//!   live PositionChange ─ fan out to account, desk, firm ─ exchange(scope) ─┐
//!   live Rate ───────────────────────────────────────────── broadcast ─────┤
//!   Limit definitions ───────────────────────────────────── exchange(scope) ┼─> Limits ─> LimitEvent (breach, action)
//!   MetricUpdate (VaR, ES, stress per scope) ────────────── exchange(scope) ┘
//! ```
//!
//! Each worker owns the scopes routed to it: it keeps their exact exposure sums per currency,
//! net per underlying and quantity per instrument, and re-evaluates the scope's limits on
//! every change (and every limit on a rate move). Utilisation u = |metric| / limit; the state
//! is BREACH at u ≥ 1, WARN at u ≥ warn_at, else OK, except that leaving BREACH needs
//! u < 1 − hysteresis. An event is emitted only when the state changes. A BREACH of a hard
//! limit moves the scope's trading state to REDUCING (or HALTED); when no hard limit of the
//! scope is in BREACH any more, it returns to ACTIVE. Event times never go backwards for a
//! limit: an event carries the largest event time that limit has seen.

use std::rc::Rc;

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concat;
use timely::dataflow::StreamVec;

use crate::event::{LiveUpdate, PositionChange};
use crate::exposure::{Ccy, Nanos, Sums, NANOS};
use crate::model::{Limit, Scope, TradingState, Ts};

/// Defaults for limits that do not set their own.
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    pub warn_at: f64,
    pub hysteresis: f64,
    pub breach_action: TradingState,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { warn_at: 0.8, hysteresis: 0.05, breach_action: TradingState::Reducing }
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
}

impl LimitEvent {
    pub fn ingest_ns(&self) -> u64 {
        match self {
            LimitEvent::Breach(b) => b.ingest_ns,
            LimitEvent::Action(a) => a.ingest_ns,
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

/// What reaches the limits operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Input {
    Change(Scope, PositionChange),
    Rate { ccy: Ccy, rate: f64, ts: Ts, ingest_ns: u64 },
    Define(Limit),
    Metric(MetricUpdate),
}

impl Input {
    /// Event time, for the inputs that carry one.
    fn ts(&self) -> Option<Ts> {
        match self {
            Input::Change(_, c) => Some(c.ts),
            Input::Rate { ts, .. } => Some(*ts),
            Input::Metric(m) => Some(m.ts),
            Input::Define(_) => None,
        }
    }

    /// The worker that owns the scope; none for a rate move, which stays on its worker.
    fn route(&self) -> Option<u64> {
        Some(match self {
            Input::Change(Scope::Account, c) => c.account,
            Input::Change(Scope::Desk, c) => c.desk,
            Input::Change(Scope::Firm, c) => c.firm,
            Input::Define(l) => crate::route_hash(&l.scope_id),
            Input::Metric(m) => crate::route_hash(&m.scope_id),
            Input::Rate { .. } => return None,
        })
    }
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
    base_ccy: Ccy,
    states: LimitStates,
) -> StreamVec<'scope, Ts, LimitEvent> {
    // Every worker's book sends its own rate moves to its own limits, down the same channel
    // as its position changes, so that a limit sees a rate move before the changes that follow it.
    let inputs = live.flat_map(|u| {
        let inputs = match u {
            LiveUpdate::Position(c) => Scope::ALL.map(|scope| Some(Input::Change(scope, c))),
            LiveUpdate::Rate { ccy, rate, ts, ingest_ns } => {
                [Some(Input::Rate { ccy, rate, ts, ingest_ns }), None, None]
            }
        };
        inputs.into_iter().flatten()
    });
    let inputs = inputs.concat(definitions.map(Input::Define)).concat(metrics.map(Input::Metric));

    let index = inputs.scope().index() as u64;
    let mut builder = OperatorBuilder::new("Limits".to_owned(), inputs.scope());
    let mut input = builder.new_input(inputs, Exchange::new(move |i: &Input| i.route().unwrap_or(index)));
    let (out, events) = builder.new_output();
    let mut out = OutputBuilder::from(out);
    builder.build(move |_caps| {
        let mut state = State {
            config,
            base_ccy,
            rates: HashMap::default(),
            limits: HashMap::default(),
            scopes: HashMap::default(),
        };
        let mut buf = Vec::new();
        move |frontiers| {
            let mut out = out.activate();
            // Processed in event-time order, each event emitted under the capability of the
            // message that caused it.
            let mut caps = Vec::new();
            let mut inputs = Vec::new();
            input.for_each(|cap, data| {
                let time = crate::time_of(&cap);
                for input in data.drain(..) {
                    inputs.push((time, input.ts().unwrap_or(time), caps.len(), input));
                }
                caps.push(cap);
            });
            if !inputs.is_sorted_by_key(|(time, ts, _, _)| (*time, *ts)) {
                inputs.sort_by_key(|(time, ts, _, _)| (*time, *ts));
            }
            for (time, _, c, input) in inputs {
                match input {
                    Input::Define(def) => state.define(def, time, &mut buf),
                    input => state.on_input(input, &mut buf),
                }
                if !buf.is_empty() {
                    out.session(&caps[c]).give_iterator(buf.drain(..));
                }
            }
            // Published once the input is exhausted, for the run's summary.
            if frontiers.iter().all(|f| f.is_empty()) {
                let mut snapshot: Vec<_> =
                    state.limits.values().map(|l| (l.def.id.clone(), l.state, l.utilisation)).collect();
                snapshot.sort_by(|a, b| a.0.cmp(&b.0));
                *states.borrow_mut() = snapshot;
            }
        }
    });
    events
}

struct LimitSlot {
    def: Limit,
    metric: Metric,
    state: LimitState,
    utilisation: f64,
    last_ts: Ts,
}

#[derive(Default)]
struct ScopeState {
    id: Option<String>,
    sums: Vec<(Ccy, Sums)>,
    underlying: HashMap<u64, Vec<(Ccy, Nanos)>>,
    qty: HashMap<u64, i64>,
    figures: HashMap<Metric, f64>,
    trading: Option<TradingState>,
    /// Ids of the limits on this scope.
    limits: Vec<Rc<str>>,
    /// The largest event time applied to this scope.
    last_ts: Ts,
    /// Kept only while the scope has a concentration limit.
    concentration: Option<Concentration>,
}

/// The largest single-underlying |net| of a scope, maintained incrementally: each change
/// recomputes that underlying's base-currency value from its exact sums; the maximum is
/// rescanned only when it shrinks or a rate moves.
#[derive(Default)]
struct Concentration {
    max: Option<(u64, f64)>,
    stale: bool,
}

impl Concentration {
    fn update(&mut self, underlying: u64, value: Option<f64>) {
        let Some(v) = value else {
            self.stale = true;
            return;
        };
        match self.max {
            Some((u, m)) if u == underlying && v < m => self.stale = true,
            Some((_, m)) if v <= m => {}
            _ => self.max = Some((underlying, v)),
        }
    }
}

struct State {
    config: LimitsConfig,
    base_ccy: Ccy,
    rates: HashMap<Ccy, f64>,
    limits: HashMap<String, LimitSlot>,
    scopes: HashMap<(Scope, u64), ScopeState>,
}

impl State {
    fn on_input(&mut self, input: Input, out: &mut Vec<LimitEvent>) {
        match input {
            Input::Change(scope, c) => {
                let key = input_key(scope, &c);
                let s = self.scopes.entry((scope, key)).or_default();
                match s.sums.iter_mut().find(|(ccy, _)| *ccy == c.ccy) {
                    Some((_, sums)) => sums.add(&c.change),
                    None => s.sums.push((c.ccy, c.change)),
                }
                let by_ccy = s.underlying.entry(c.underlying).or_default();
                match by_ccy.iter_mut().find(|(ccy, _)| *ccy == c.ccy) {
                    Some((_, n)) => *n += c.change.net,
                    None => by_ccy.push((c.ccy, c.change.net)),
                }
                if let Some(conc) = s.concentration.as_mut() {
                    let value = underlying_value(by_ccy, &self.rates, self.base_ccy);
                    conc.update(c.underlying, value);
                }
                if c.qty != 0 {
                    *s.qty.entry(c.instrument).or_default() += c.qty;
                }
                s.last_ts = s.last_ts.max(c.ts);
                if !s.limits.is_empty() {
                    self.evaluate_scope((scope, key), None, c.ts, c.ingest_ns, out);
                }
            }
            Input::Rate { ccy, rate, ts, ingest_ns } => {
                self.rates.insert(ccy, rate);
                for s in self.scopes.values_mut() {
                    if let Some(conc) = s.concentration.as_mut() {
                        conc.stale = true;
                    }
                }
                let keys: Vec<_> = self.scopes.iter().filter(|(_, s)| !s.limits.is_empty()).map(|(k, _)| *k).collect();
                for key in keys {
                    self.evaluate_scope(key, None, ts, ingest_ns, out);
                }
            }
            Input::Metric(m) => {
                let key = (m.scope, crate::route_hash(&m.scope_id));
                self.scopes.entry(key).or_default().figures.insert(m.metric.clone(), m.value);
                self.evaluate_scope(key, Some(m.metric), m.ts, m.ingest_ns, out);
            }
            Input::Define(def) => self.define(def, 0, out),
        }
    }

    /// Adds, changes or (with `enabled: false`) removes a limit at event time `time`.
    fn define(&mut self, def: Limit, time: Ts, out: &mut Vec<LimitEvent>) {
        let key = (def.scope, crate::route_hash(&def.scope_id));
        let Some(metric) = Metric::parse(&def.metric) else { return };
        let slot_metric = metric.clone();
        let id = def.id.clone();
        if let Some(old) = self.limits.remove(&id) {
            let old_key = (old.def.scope, crate::route_hash(&old.def.scope_id));
            if let Some(s) = self.scopes.get_mut(&old_key) {
                s.limits.retain(|l| **l != *id);
            }
            if def.enabled == Some(false) {
                // A removed limit stops; the scope's trading state follows its remaining limits.
                self.update_trading(old_key, old.last_ts.max(time), 0, &id, out);
                return;
            }
            let slot = LimitSlot { def, metric: slot_metric, ..old };
            self.limits.insert(id.clone(), slot);
        } else if def.enabled == Some(false) {
            return;
        } else {
            let slot = LimitSlot { def, metric: slot_metric, state: LimitState::Ok, utilisation: 0.0, last_ts: 0 };
            self.limits.insert(id.clone(), slot);
        }
        let s = self.scopes.entry(key).or_default();
        if metric == Metric::Concentration && s.concentration.is_none() {
            s.concentration = Some(Concentration { stale: true, ..Concentration::default() });
        }
        s.id = Some(self.limits[&id].def.scope_id.clone());
        s.limits.push(Rc::from(id.as_str()));
        let time = time.max(s.last_ts);
        self.evaluate_limit(key, &id, time, 0, out);
        self.update_trading(key, self.limits[&id].last_ts, 0, &id, out);
    }

    /// Re-evaluates a scope's limits after an exposure change (`figure` none: every limit but
    /// var/es/stress) or a new var/es/stress figure (only that metric's limits), so that each
    /// limit's events carry the event time of what moved its own metric.
    fn evaluate_scope(
        &mut self,
        key: (Scope, u64),
        figure: Option<Metric>,
        ts: Ts,
        ingest_ns: u64,
        out: &mut Vec<LimitEvent>,
    ) {
        let n = self.scopes.get(&key).map_or(0, |s| s.limits.len());
        for i in 0..n {
            let id = self.scopes[&key].limits[i].clone();
            let metric = &self.limits[&*id].metric;
            let is_figure = matches!(metric, Metric::Var | Metric::Es | Metric::Stress);
            if figure.as_ref().map_or(is_figure, |f| f != metric) {
                continue;
            }
            if self.evaluate_limit(key, &id, ts, ingest_ns, out) {
                self.update_trading(key, self.limits[&*id].last_ts, ingest_ns, &id, out);
            }
        }
    }

    /// The value of `metric` for a scope, in the base currency (quantity for position_qty).
    fn value(&self, scope: &ScopeState, metric: &Metric) -> Option<f64> {
        let rate = |ccy: &Ccy| if *ccy == self.base_ccy { Some(1.0) } else { self.rates.get(ccy).copied() };
        let base = |pick: fn(&Sums) -> Nanos| -> Option<f64> {
            scope.sums.iter().map(|(c, s)| rate(c).map(|r| pick(s) as f64 / NANOS * r)).sum()
        };
        match metric {
            Metric::Gross => base(|s| s.gross),
            Metric::Net => base(|s| s.net),
            Metric::Concentration => {
                let gross = base(|s| s.gross)?;
                if gross <= 0.0 {
                    return Some(0.0);
                }
                let conc = scope.concentration.as_ref()?;
                Some(conc.max.map_or(0.0, |(_, m)| m) / gross)
            }
            Metric::PositionQty(instrument) => Some(scope.qty.get(instrument).copied().unwrap_or(0) as f64 / 1e8),
            Metric::Var | Metric::Es | Metric::Stress => scope.figures.get(metric).copied(),
        }
    }

    /// Re-evaluates one limit; true if its state changed.
    fn evaluate_limit(
        &mut self,
        key: (Scope, u64),
        id: &str,
        ts: Ts,
        ingest_ns: u64,
        out: &mut Vec<LimitEvent>,
    ) -> bool {
        let Some(scope) = self.scopes.get_mut(&key) else { return false };
        if let Some(conc) = scope.concentration.as_mut().filter(|c| c.stale) {
            conc.max = None;
            conc.stale = false;
            for (u, by_ccy) in &scope.underlying {
                conc.update(*u, underlying_value(by_ccy, &self.rates, self.base_ccy));
            }
        }
        let scope = &self.scopes[&key];
        let slot = &self.limits[id];
        let Some(value) = self.value(scope, &slot.metric) else { return false };
        let (warn_at, hysteresis) = (slot.def.warn_at.unwrap_or(self.config.warn_at), self.config.hysteresis);
        let utilisation = value.abs() / slot.def.limit;
        let slot = self.limits.get_mut(id).expect("limit exists");
        slot.utilisation = utilisation;
        slot.last_ts = slot.last_ts.max(ts);
        let next = LimitState::next(slot.state, utilisation, warn_at, hysteresis);
        if next == slot.state {
            return false;
        }
        let prev = std::mem::replace(&mut slot.state, next);
        out.push(LimitEvent::Breach(BreachEvent {
            ts: slot.last_ts,
            limit_id: slot.def.id.clone(),
            scope: slot.def.scope,
            scope_id: slot.def.scope_id.clone(),
            metric: slot.def.metric.clone(),
            value,
            limit: slot.def.limit,
            utilisation,
            state: next,
            prev_state: prev,
            ingest_ns,
        }));
        true
    }

    /// Sets a scope's trading state from its hard limits in BREACH; emits an action on change.
    fn update_trading(&mut self, key: (Scope, u64), ts: Ts, ingest_ns: u64, cause: &str, out: &mut Vec<LimitEvent>) {
        let Some(scope) = self.scopes.get(&key) else { return };
        let breached = scope
            .limits
            .iter()
            .map(|id| &self.limits[&**id])
            .filter(|l| l.def.hard != Some(false) && l.state == LimitState::Breach)
            .map(|l| l.def.action.unwrap_or(self.config.breach_action))
            .max();
        let next = breached.unwrap_or(TradingState::Active);
        let scope = self.scopes.get_mut(&key).expect("scope exists");
        let prev = scope.trading.unwrap_or(TradingState::Active);
        if next == prev {
            return;
        }
        scope.trading = Some(next);
        out.push(LimitEvent::Action(ActionEvent {
            ts,
            scope: key.0,
            scope_id: scope.id.clone().unwrap_or_default(),
            state: next,
            prev_state: prev,
            limit_id: cause.to_owned(),
            ingest_ns,
        }));
    }
}

/// |Σ_ccy rate · net| of one underlying, in the base currency; `None` while a rate is missing.
fn underlying_value(by_ccy: &[(Ccy, Nanos)], rates: &HashMap<Ccy, f64>, base: Ccy) -> Option<f64> {
    let rate = |c: &Ccy| if *c == base { Some(1.0) } else { rates.get(c).copied() };
    let net: Option<f64> = by_ccy.iter().map(|(c, n)| rate(c).map(|r| *n as f64 / NANOS * r)).sum();
    net.map(f64::abs)
}

fn input_key(scope: Scope, c: &PositionChange) -> u64 {
    match scope {
        Scope::Account => c.account,
        Scope::Desk => c.desk,
        Scope::Firm => c.firm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
