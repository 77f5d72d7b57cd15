//! The `breaches` and `actions` tables recomputed in batch: a replay of the limit state machine
//! of DESIGN.md §4 over the raw inputs, with independent code.
//!
//! ```text
//!   ticks + deltas (ts order, ticks first on a tie) ─> live positions and rates ─┐
//!   bar ends and snapshot times ─> book at t ─> VaR / ES / stress (analytics) ──┼─> limits ─> breach and action events
//!   limit definitions (config rules, then limits.jsonl) ──────────────────────────┘
//! ```
//!
//! After each record, every scope the record changed (a position's delta exposure or quantity;
//! and on an fx rate move every scope with a limit) re-evaluates its limits: utilisation
//! u = |value| / limit; BREACH at u ≥ 1, or while in BREACH at u ≥ 1 − hysteresis; WARN at
//! u ≥ warn_at; else OK. (The engine re-evaluates only the scopes holding the moved currency;
//! the others' states cannot change, so the events are the same.) A position's live exposure
//! is recomputed when a record touches it (its delta, a tick of its instrument or of an option's
//! underlying), at that record's time. `var`, `es` and `stress` limits take their figures at
//! every bar end and snapshot time t, after every record with ts ≤ t. A state change is a
//! breach event stamped with the largest event time the limit has been evaluated at; a change
//! of the set of hard limits in BREACH of a scope changes its trading state (an action).
//! Events are carried by the first snapshot at or after the epoch of the record (or the bar
//! end) that caused them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use riskflow_dataflows::analytics::config::{AnalyticsConfig, LimitMethod};
use riskflow_dataflows::exposure::{position_exposure, Ccy, Exposure, OptionMarket};
use riskflow_dataflows::formulas::rate_from_pair;
use riskflow_dataflows::model::{AssetClass, Fixed, Instrument, Limit, TradingState, Ts};

use super::analytics::Analytics;
use super::{insert_unique, ts_key, Inputs, Rows, Value};
use crate::config::Config;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    Ok,
    Warn,
    Breach,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warn => "WARN",
            State::Breach => "BREACH",
        }
    }
}

/// What a limit measures.
#[derive(Clone, Debug, PartialEq)]
enum Measure {
    Gross,
    Net,
    Concentration,
    Qty(String),
    /// A figure of the analytics: "var", "es" or "stress".
    Figure(&'static str),
}

impl Measure {
    fn parse(metric: &str) -> Option<Measure> {
        Some(match metric {
            "gross" => Measure::Gross,
            "net" => Measure::Net,
            "concentration" => Measure::Concentration,
            "var" => Measure::Figure("var"),
            "es" => Measure::Figure("es"),
            "stress" => Measure::Figure("stress"),
            other => Measure::Qty(other.strip_prefix("position_qty:").filter(|i| !i.is_empty())?.to_owned()),
        })
    }
}

struct Slot {
    def: Limit,
    measure: Measure,
    state: State,
    last_ts: Ts,
}

type ScopeKey = (&'static str, String);

#[derive(Default)]
struct ScopeLimits {
    /// Its limits, in definition order.
    ids: Vec<String>,
    trading: Option<TradingState>,
    figures: HashMap<&'static str, f64>,
}

/// One event: the time of the input that caused it (which snapshot carries it), its key and
/// its compared values.
struct Row {
    time: Ts,
    key: Vec<String>,
    values: Vec<Value>,
}

/// The breach and action events of a whole replay.
pub(crate) struct Events {
    breaches: Vec<Row>,
    actions: Vec<Row>,
}

impl Events {
    /// The `breaches` and `actions` rows of the snapshot at `as_of`: the events caused after
    /// the `previous` snapshot, up to `as_of`.
    pub fn tables(&self, previous: Option<Ts>, as_of: Ts) -> HashMap<&'static str, Rows> {
        let pick = |rows: &[Row]| {
            let mut out = Rows::new();
            for r in rows.iter().filter(|r| r.time <= as_of && previous.is_none_or(|p| r.time > p)) {
                insert_unique(&mut out, r.key.clone(), r.values.clone());
            }
            out
        };
        HashMap::from([("breaches", pick(&self.breaches)), ("actions", pick(&self.actions))])
    }
}

/// A position's live state.
struct Pos<'a> {
    inst: &'a Instrument,
    desk: &'a str,
    firm: &'a str,
    qty: i64,
    live: Option<Exposure>,
}

impl Pos<'_> {
    /// The account, desk and firm it counts in.
    fn scopes(&self, account: &str) -> [ScopeKey; 3] {
        [("account", account.to_owned()), ("desk", self.desk.to_owned()), ("firm", self.firm.to_owned())]
    }
}

/// A scope's positions added up: exact nanos of the live delta exposures per currency and per
/// underlying and currency, each with the number of positions in it (a currency counts while
/// a position with a live exposure is in it), and quantities per instrument.
#[derive(Default)]
struct ScopeSums<'a> {
    /// (positions, Σ E, Σ |E|) per currency.
    by_ccy: BTreeMap<Ccy, (usize, i128, i128)>,
    /// (positions, Σ E) per underlying and currency.
    by_underlying: BTreeMap<&'a str, BTreeMap<Ccy, (usize, i128)>>,
    qty: HashMap<&'a str, i64>,
}

impl<'a> ScopeSums<'a> {
    /// Adds (`sign` 1) or takes out (−1) a position's live exposure.
    fn add(&mut self, underlying: &'a str, e: &Exposure, sign: i128) {
        let n = e.delta.nanos;
        let ccy = self.by_ccy.entry(e.delta.ccy).or_default();
        *ccy = (ccy.0.wrapping_add_signed(sign as isize), ccy.1 + sign * n, ccy.2 + sign * n.abs());
        if ccy.0 == 0 {
            self.by_ccy.remove(&e.delta.ccy);
        }
        let by_ccy = self.by_underlying.entry(underlying).or_default();
        let u = by_ccy.entry(e.delta.ccy).or_default();
        *u = (u.0.wrapping_add_signed(sign as isize), u.1 + sign * n);
        if u.0 == 0 {
            by_ccy.remove(&e.delta.ccy);
            if by_ccy.is_empty() {
                self.by_underlying.remove(underlying);
            }
        }
    }
}

struct Replay<'a> {
    config: &'a Config,
    base: Ccy,
    r: f64,
    limits: HashMap<String, Slot>,
    scopes: BTreeMap<ScopeKey, ScopeLimits>,
    /// Scopes that ever had a var, es or stress limit: the analytics value them at each bar.
    watched: BTreeSet<ScopeKey>,
    /// Live last price and implied vol per instrument.
    prices: HashMap<&'a str, (Fixed, Option<f64>)>,
    positions: BTreeMap<(&'a str, &'a str), Pos<'a>>,
    /// The positions in each instrument, by key.
    held_in: HashMap<&'a str, Vec<(&'a str, &'a str)>>,
    /// What each scope's positions add up to, kept as they change.
    sums: HashMap<ScopeKey, ScopeSums<'a>>,
    rates: HashMap<Ccy, f64>,
    events: Events,
}

/// Replays every record and bar end up to the last snapshot and returns the events.
/// `snapshots` are the snapshot times, ascending (figures are also taken at each).
pub(crate) fn replay(
    inputs: &Inputs,
    config: &Config,
    cfg: &AnalyticsConfig,
    snapshots: &[Ts],
) -> anyhow::Result<Events> {
    let base = Ccy::parse(&config.risk.base_currency).ok_or_else(|| anyhow::anyhow!("base currency"))?;
    let r = config.risk.rate;
    let epoch = (config.engine.epoch.as_nanos() as Ts).max(1);
    let end = snapshots.last().copied().unwrap_or(0);
    let instruments = inputs.instrument_map();
    let rate_of: HashMap<&str, Ccy> = inputs.rate_pairs(base).into_iter().map(|(c, i)| (i.id.as_str(), c)).collect();
    let mut options_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for i in instruments.values().filter(|i| i.asset_class == AssetClass::Option) {
        options_of.entry(i.underlying_id()).or_default().push(i.id.as_str());
    }

    let mut replay = Replay {
        config,
        base,
        r,
        limits: HashMap::new(),
        scopes: BTreeMap::new(),
        watched: BTreeSet::new(),
        prices: HashMap::new(),
        positions: BTreeMap::new(),
        held_in: HashMap::new(),
        sums: HashMap::new(),
        rates: HashMap::new(),
        events: Events { breaches: Vec::new(), actions: Vec::new() },
    };
    for def in config.limits.rules.iter().chain(&inputs.limits) {
        replay.define(def.clone());
    }

    // Figures at every bar end and snapshot time, after the records at or before it.
    let mut analytics = Analytics::new(inputs, cfg, base);
    let mut boundaries: BTreeSet<Ts> = snapshots.iter().copied().collect();
    if let Some(first) = analytics.next_bar() {
        boundaries.extend((first..=end).step_by(cfg.bar_ns as usize));
    }
    let mut boundaries = boundaries.into_iter().filter(|b| *b <= end).peekable();
    let mut figures_at = |replay: &mut Replay, t: Ts| {
        analytics.advance_to(t);
        if replay.watched.is_empty() {
            return;
        }
        let book = inputs.book(t, base, r);
        for ((scope, id), fig) in analytics.figures(&book, t, r) {
            let key = (scope, id);
            if !replay.watched.contains(&key) {
                continue;
            }
            let (var, es) = match cfg.limit_method {
                LimitMethod::Parametric => (fig.var_parametric, fig.es_parametric),
                LimitMethod::Historical => (fig.var_historical, fig.es_historical),
            };
            for (name, value) in [("var", var), ("es", es), ("stress", Some(fig.stress_worst))] {
                let Some(value) = value else { continue };
                replay.scopes.entry(key.clone()).or_default().figures.insert(name, value);
                replay.evaluate(&key, t, t);
            }
        }
    };

    // Ticks and deltas merged by ts, ticks first on a tie (each file in its own order).
    let (mut ti, mut di) = (0, 0);
    let mut seen = HashSet::new();
    loop {
        let (tick, delta) = (inputs.ticks.get(ti), inputs.deltas.get(di));
        let ts = match (tick, delta) {
            (Some(t), Some(d)) => t.ts.min(d.ts),
            (Some(t), None) => t.ts,
            (None, Some(d)) => d.ts,
            (None, None) => break,
        };
        while let Some(b) = boundaries.next_if(|b| *b < ts) {
            figures_at(&mut replay, b);
        }
        let time = ts.div_ceil(epoch) * epoch;
        let mut touched: BTreeSet<ScopeKey> = BTreeSet::new();
        if let Some(t) = tick.filter(|t| t.ts == ts) {
            ti += 1;
            let instrument = t.instrument.as_str();
            let price = replay.prices.entry(instrument).or_insert((t.price, None));
            price.0 = t.price;
            if t.iv.is_some() {
                price.1 = t.iv;
            }
            if let Some(ccy) = rate_of.get(instrument) {
                let inst = instruments[instrument];
                let (b, q) = (inst.base.as_deref().unwrap_or(""), inst.quote.as_deref().unwrap_or(""));
                if let Some(rate) = rate_from_pair(b, q, t.price.to_f64(), ccy.as_str(), base.as_str()) {
                    replay.rates.insert(*ccy, rate);
                    touched.extend(replay.scopes.iter().filter(|(_, s)| !s.ids.is_empty()).map(|(k, _)| k.clone()));
                }
            }
            let moved = options_of.get(instrument).into_iter().flatten().copied().chain([instrument]);
            let keys: Vec<(&str, &str)> =
                moved.flat_map(|i| replay.held_in.get(i).into_iter().flatten().copied()).collect();
            for key in keys {
                replay.revalue(key, ts, false, &mut touched);
            }
        } else if let Some(d) = delta {
            di += 1;
            let known = instruments.get(d.instrument.as_str()).zip(inputs.accounts.get(&d.account));
            if let (true, Some((inst, acct))) = (seen.insert(d.id.as_str()), known) {
                let key = (acct.id.as_str(), inst.id.as_str());
                let pos = replay.positions.entry(key).or_insert_with(|| {
                    replay.held_in.entry(inst.id.as_str()).or_default().push(key);
                    Pos { inst, desk: acct.desk.as_str(), firm: acct.firm(), qty: 0, live: None }
                });
                pos.qty += d.qty.0;
                for scope in pos.scopes(key.0) {
                    *replay.sums.entry(scope).or_default().qty.entry(key.1).or_default() += d.qty.0;
                }
                replay.revalue(key, ts, d.qty.0 != 0, &mut touched);
            }
        }
        for key in touched {
            replay.evaluate(&key, ts, time);
        }
    }
    for b in boundaries {
        figures_at(&mut replay, b);
    }
    Ok(replay.events)
}

impl<'a> Replay<'a> {
    /// Adds, replaces or (`enabled: false`) removes a limit, before any record.
    fn define(&mut self, def: Limit) {
        let Some(measure) = Measure::parse(&def.metric) else { return };
        let key: ScopeKey = (def.scope.as_str(), def.scope_id.clone());
        let id = def.id.clone();
        if matches!(measure, Measure::Figure(_)) {
            self.watched.insert(key.clone());
        }
        let (state, last_ts) = match self.limits.remove(&id) {
            Some(old) => {
                let old_key: ScopeKey = (old.def.scope.as_str(), old.def.scope_id.clone());
                if let Some(s) = self.scopes.get_mut(&old_key) {
                    s.ids.retain(|l| *l != id);
                }
                (old.state, old.last_ts)
            }
            None => (State::Ok, 0),
        };
        if def.enabled == Some(false) {
            return;
        }
        self.limits.insert(id.clone(), Slot { def, measure, state, last_ts });
        self.scopes.entry(key).or_default().ids.push(id);
    }

    /// Recomputes a position's live exposure at `ts`; its scopes are touched if its delta
    /// exposure (what limits measure) changed or its quantity did. A tick that moves only an
    /// option's gamma or vega, or an fx position's quote leg, touches nothing.
    fn revalue(&mut self, key: (&'a str, &'a str), ts: Ts, qty_changed: bool, touched: &mut BTreeSet<ScopeKey>) {
        let pos = &self.positions[&key];
        let inst = pos.inst;
        let new = self.prices.get(inst.id.as_str()).filter(|_| pos.qty != 0).and_then(|(price, iv)| {
            let option = match (inst.asset_class, inst.underlying.as_deref()) {
                (AssetClass::Option, Some(u)) => {
                    self.prices.get(u).zip(*iv).map(|((spot, _), vol)| OptionMarket { spot: *spot, vol })
                }
                _ => None,
            };
            position_exposure(inst, Fixed(pos.qty), *price, option, ts, self.r).ok()
        });
        let pos = self.positions.get_mut(&key).expect("position exists");
        let old = std::mem::replace(&mut pos.live, new);
        // The scopes' sums read only the delta legs: unchanged, there is nothing to move.
        let changed = old.map(|e| e.delta) != new.map(|e| e.delta);
        if !changed && !qty_changed {
            return;
        }
        let underlying = inst.underlying_id();
        for scope in pos.scopes(key.0) {
            if changed {
                let sums = self.sums.entry(scope.clone()).or_default();
                if let Some(e) = &old {
                    sums.add(underlying, e, -1);
                }
                if let Some(e) = &new {
                    sums.add(underlying, e, 1);
                }
            }
            touched.insert(scope);
        }
    }

    /// The value of a limit's measure for a scope, from the live positions and rates (`None`
    /// while a rate or a figure is missing).
    fn value(&self, key: &ScopeKey, measure: &Measure) -> Option<f64> {
        let rate = |c: Ccy| if c == self.base { Some(1.0) } else { self.rates.get(&c).copied() };
        let empty = ScopeSums::default();
        let sums = self.sums.get(key).unwrap_or(&empty);
        // Exact sums per currency, converted once each, in currency order.
        let convert = |sums: &mut dyn Iterator<Item = (Ccy, i128)>| -> Option<f64> {
            sums.map(|(c, n)| rate(c).map(|r| n as f64 / 1e9 * r)).sum()
        };
        let sum =
            |gross: bool| convert(&mut sums.by_ccy.iter().map(|(c, (_, net, g))| (*c, if gross { *g } else { *net })));
        match measure {
            Measure::Gross => sum(true),
            Measure::Net => sum(false),
            Measure::Concentration => {
                let gross = sum(true)?;
                if gross <= 0.0 {
                    return Some(0.0);
                }
                let mut max = 0.0f64;
                for by_ccy in sums.by_underlying.values() {
                    max = max.max(convert(&mut by_ccy.iter().map(|(c, (_, n))| (*c, *n)))?.abs());
                }
                Some(max / gross)
            }
            Measure::Qty(instrument) => {
                let qty = sums.qty.get(instrument.as_str()).copied().unwrap_or(0);
                Some(qty as f64 / Fixed::SCALE as f64)
            }
            Measure::Figure(name) => self.scopes.get(key)?.figures.get(name).copied(),
        }
    }

    /// Evaluates every limit of a scope at event time `ts` (caused by an input at `time`).
    fn evaluate(&mut self, key: &ScopeKey, ts: Ts, time: Ts) {
        let ids = self.scopes.get(key).map(|s| s.ids.clone()).unwrap_or_default();
        for id in ids {
            let Some(value) = self.value(key, &self.limits[&id].measure) else { continue };
            let warn_at = self.limits[&id].def.warn_at.unwrap_or(self.config.limits.warn_at);
            let hysteresis = self.config.limits.hysteresis;
            let slot = self.limits.get_mut(&id).expect("limit exists");
            let u = value.abs() / slot.def.limit;
            slot.last_ts = slot.last_ts.max(ts);
            let next = if u >= 1.0 || (slot.state == State::Breach && u >= 1.0 - hysteresis) {
                State::Breach
            } else if u >= warn_at {
                State::Warn
            } else {
                State::Ok
            };
            if next == slot.state {
                continue;
            }
            let prev = std::mem::replace(&mut slot.state, next);
            let d = &slot.def;
            self.events.breaches.push(Row {
                time,
                key: vec![d.id.clone(), ts_key(slot.last_ts), next.as_str().to_owned()],
                values: vec![
                    Value::text(Some(d.scope.as_str())),
                    Value::text(Some(&d.scope_id)),
                    Value::text(Some(&d.metric)),
                    Value::num(Some(value)),
                    Value::num(Some(d.limit)),
                    Value::num(Some(u)),
                    Value::text(Some(prev.as_str())),
                ],
            });
            let last_ts = slot.last_ts;
            self.update_trading(key, last_ts, time, &id);
        }
    }

    /// A scope's trading state follows its hard limits in BREACH.
    fn update_trading(&mut self, key: &ScopeKey, ts: Ts, time: Ts, cause: &str) {
        let Some(scope) = self.scopes.get(key) else { return };
        let next = scope
            .ids
            .iter()
            .map(|id| &self.limits[id])
            .filter(|l| l.def.hard != Some(false) && l.state == State::Breach)
            .map(|l| l.def.action.unwrap_or(self.config.limits.breach_action))
            .max()
            .unwrap_or(TradingState::Active);
        let scope = self.scopes.get_mut(key).expect("scope exists");
        let prev = scope.trading.unwrap_or(TradingState::Active);
        if next == prev {
            return;
        }
        scope.trading = Some(next);
        self.events.actions.push(Row {
            time,
            key: vec![key.0.to_owned(), key.1.clone(), ts_key(ts), next.as_str().to_owned()],
            values: vec![Value::text(Some(prev.as_str())), Value::text(Some(cause))],
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use riskflow_dataflows::model::{Account, Delta, Fixed, Instrument, Limit, Scope, Tick, Ts};

    use super::super::{Inputs, Value};
    use super::replay;
    use crate::config::Config;

    #[test]
    fn scope_sums_count_a_currency_while_a_live_position_is_in_it() {
        use riskflow_dataflows::exposure::{Ccy, Exposure, Leg};
        let e = |ccy: &str, nanos: i128| Exposure {
            delta: Leg { ccy: Ccy::parse(ccy).unwrap(), nanos },
            gamma: 0,
            vega: 0,
            quote: None,
        };
        let (usd, eur) = (Ccy::parse("USD").unwrap(), Ccy::parse("EUR").unwrap());
        let mut sums = super::ScopeSums::default();
        sums.add("X", &e("USD", 5), 1);
        sums.add("Y", &e("USD", -3), 1);
        sums.add("X", &e("EUR", 0), 1);
        assert_eq!(sums.by_ccy.get(&usd), Some(&(2, 2, 8)));
        assert_eq!(sums.by_ccy.get(&eur), Some(&(1, 0, 0)));
        assert_eq!(sums.by_underlying["X"].len(), 2);
        // Taken out again, a currency and an underlying without a live position are gone,
        // though their sums were already 0.
        sums.add("X", &e("EUR", 0), -1);
        sums.add("Y", &e("USD", -3), -1);
        assert_eq!(sums.by_ccy.get(&eur), None);
        assert_eq!(sums.by_ccy.get(&usd), Some(&(1, 5, 5)));
        assert!(!sums.by_underlying.contains_key("Y"));
        assert_eq!(sums.by_underlying["X"].keys().collect::<Vec<_>>(), vec![&usd]);
    }

    fn tick(ts: Ts, price: f64) -> Tick {
        Tick { ts, instrument: "A".into(), price: Fixed::from_f64(price).unwrap(), bid: None, ask: None, iv: None }
    }

    fn delta(id: &str, ts: Ts, qty: i64) -> Delta {
        Delta { id: id.into(), ts, account: "ACC".into(), instrument: "A".into(), qty: Fixed::from_int(qty) }
    }

    fn limit(id: &str, scope: Scope, scope_id: &str, metric: &str, limit: f64, hard: Option<bool>) -> Limit {
        let (scope_id, metric) = (scope_id.to_owned(), metric.to_owned());
        Limit { id: id.into(), scope, scope_id, metric, limit, warn_at: None, hard, action: None, enabled: None }
    }

    #[test]
    fn state_machine_by_hand() {
        let account = Account { id: "ACC".into(), desk: "DESK".into(), firm: None };
        let inputs = Inputs {
            instruments: vec![Instrument::equity("A", "USD")],
            accounts: HashMap::from([("ACC".to_owned(), account)]),
            limits: vec![
                limit("L1", Scope::Account, "ACC", "gross", 1000.0, None),
                limit("L2", Scope::Desk, "DESK", "position_qty:A", 80.0, Some(false)),
            ],
            // gross = qty·price: 50·10 = 500 (u 0.5), 90·10 = 900 (0.9 WARN), 90·12 = 1080 (BREACH),
            // 90·10.6 = 954 (0.954 ≥ 1 − 0.05: still BREACH), 90·10.5 = 945 (WARN), 0 (OK).
            // Desk quantity: 50 (0.625), 90 (1.125 BREACH, soft: no action), 0 (OK).
            ticks: vec![tick(10, 10.0), tick(40, 12.0), tick(50, 10.6), tick(60, 10.5)],
            deltas: vec![delta("d1", 20, 50), delta("d2", 30, 40), delta("d2", 35, 40), delta("d3", 70, -90)],
            bar_ns: None,
        };
        let config = Config::default();
        let cfg = config.analytics.resolve(None);
        // One snapshot at the first epoch end (100 ms) carries every event.
        let as_of = 100_000_000;
        let events = replay(&inputs, &config, &cfg, &[as_of]).unwrap();
        let tables = events.tables(None, as_of);
        let key = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let breaches: Vec<(Vec<String>, Value, Value)> =
            tables["breaches"].iter().map(|(k, v)| (k.clone(), v[3].clone(), v[6].clone())).collect();
        let text = |s: &str| Value::Text(Some(s.to_owned()));
        let num = |x: f64| Value::Number(Some(x));
        assert_eq!(
            breaches,
            vec![
                (key(&["L1", "30", "WARN"]), num(900.0), text("OK")),
                (key(&["L1", "40", "BREACH"]), num(1080.0), text("WARN")),
                (key(&["L1", "60", "WARN"]), num(945.0), text("BREACH")),
                (key(&["L1", "70", "OK"]), num(0.0), text("WARN")),
                (key(&["L2", "30", "BREACH"]), num(90.0), text("OK")),
                (key(&["L2", "70", "OK"]), num(0.0), text("BREACH")),
            ]
        );
        let actions: Vec<(Vec<String>, Vec<Value>)> = tables["actions"].clone().into_iter().collect();
        assert_eq!(
            actions,
            vec![
                (key(&["account", "ACC", "40", "REDUCING"]), vec![text("ACTIVE"), text("L1")]),
                (key(&["account", "ACC", "60", "ACTIVE"]), vec![text("REDUCING"), text("L1")]),
            ]
        );
        // The next snapshot carries nothing new.
        assert!(events.tables(Some(as_of), 2 * as_of)["breaches"].is_empty());
    }
}
