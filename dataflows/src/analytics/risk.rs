//! Per-scope factor exposures, VaR/ES and stress from the settled positions at a bar end or
//! a snapshot (docs/analytics.md). Factor exposures follow the `factor_exposures` table: exact
//! nanos per (scope, factor, currency), each converted once.

use std::cell::OnceCell;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::analytics::config::AnalyticsConfig;
use crate::analytics::factors::FactorModel;
use crate::exposure::{Ccy, OptionMarket, Valuation};
use crate::formulas::{black_scholes, from_nanos, historical_var_es, parametric_es, parametric_var, year_fraction};
use crate::model::{Account, AssetClass, Fixed, Instrument, Scope, Ts};

/// The settled book as the analytics see it at a boundary.
///
/// Every bar end walks all of it, so it is integer-keyed: instruments, accounts and factors
/// are numbered once, when first named. Accounts are walked in id order and each keeps its
/// positions in instrument-id order, so floating-point sums run in the order the ids give,
/// whatever order the parts arrived in.
#[derive(Clone, Debug, Default)]
pub struct Positions {
    instr_ids: HashMap<String, u32>,
    instruments: Vec<Instr>,
    /// Instrument numbers in id order, and each instrument's place in it: an account's
    /// positions are kept in that order, found by comparing places, not ids.
    instr_order: Vec<u32>,
    instr_rank: Vec<u32>,
    acct_ids: HashMap<String, u32>,
    accounts: Vec<Acct>,
    /// Account numbers in id order.
    acct_order: Vec<u32>,
    factor_ids: HashMap<String, u32>,
    factor_names: Vec<String>,
    /// Each factor's place in name order; reset when a factor is added.
    factor_rank: OnceCell<Vec<u32>>,
    /// The factor `FX:<ccy>` of each currency with a rate.
    fx_factors: BTreeMap<Ccy, u32>,
    /// Base-currency units per unit of each currency with a rate.
    rates: BTreeMap<Ccy, f64>,
}

/// An instrument as named by a definition, a price or a position.
#[derive(Clone, Debug)]
struct Instr {
    id: String,
    def: Option<Instrument>,
    /// Last settled price and implied vol.
    price: Option<(Fixed, Option<f64>)>,
    /// The underlying's number, for an instrument that names one.
    underlying: Option<u32>,
    /// The factor its delta leg maps to, unless it is an fx pair (by leg currency).
    factor: Option<u32>,
}

#[derive(Clone, Debug)]
struct Acct {
    id: String,
    def: Option<Account>,
    /// Non-zero quantities by instrument number, in instrument-id order.
    qty: Vec<(u32, Fixed)>,
}

/// A scope's risk figures at one time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskRow {
    pub scope: Scope,
    pub scope_id: String,
    pub var_parametric: Option<f64>,
    pub es_parametric: Option<f64>,
    pub var_historical: Option<f64>,
    pub es_historical: Option<f64>,
    pub history_bars: u64,
    pub stress_worst: f64,
    pub worst_scenario: Option<String>,
    /// P&L per scenario, in the configured order.
    pub stress: Vec<f64>,
}

/// What one scope accumulates from its positions.
#[derive(Default)]
struct Acc {
    /// Nanos per (factor, currency) slot of every delta and quote leg but options' (they are
    /// revalued in full under stress).
    linear: Vec<(u32, i128)>,
    /// The same of options' delta legs: with `linear`, the scope's factor exposures. Kept
    /// apart so that a leg is added once.
    options_delta: Vec<(u32, i128)>,
    /// Option revaluation P&L per scenario, base currency.
    options: Vec<f64>,
    /// Once accumulated: the factor exposures in base currency, by factor index in the model.
    e: Vec<(usize, f64)>,
    /// And `linear` alone in base currency, by factor number: stress P&L's linear part.
    linear_base: Vec<(u32, f64)>,
    /// And the parametric σ = √(eᵀΣe), if any of them has a variance.
    sigma: Option<f64>,
}

/// A leg's factor number and currency.
type LegKey = (u32, Ccy);

/// The (factor, currency) pairs a call of [`Positions::risk`] has met, numbered as met: the
/// slots exact sums are kept in.
#[derive(Default)]
struct Slots {
    keys: Vec<LegKey>,
    ids: HashMap<LegKey, u32>,
}

impl Slots {
    fn of(&mut self, key: LegKey) -> u32 {
        let next = self.keys.len() as u32;
        let slot = *self.ids.entry(key).or_insert(next);
        if slot == next {
            self.keys.push(key);
        }
        slot
    }

    /// The slots in the order [`Positions::to_base`] adds them in, by factor name (`rank`)
    /// then currency, and each slot's place in that order.
    fn in_order(&self, rank: &[u32]) -> (Vec<u32>, Vec<u32>) {
        let mut order: Vec<u32> = (0..self.keys.len() as u32).collect();
        order.sort_unstable_by_key(|&s| {
            let (f, c) = self.keys[s as usize];
            (rank[f as usize], c)
        });
        let mut place = vec![0; order.len()];
        order.iter().enumerate().for_each(|(p, &s)| place[s as usize] = p as u32);
        (order, place)
    }
}

/// What a call of [`Positions::risk`] finds once per instrument, for every position in it:
/// its valuation at the call's time and the slots of its legs. Every bar end walks every
/// position; this keeps the walk on a small array, away from the instruments' definitions.
#[derive(Copy, Clone)]
struct Unit {
    valuation: Valuation,
    /// The delta leg's and the quote leg's slots, for legs with a factor.
    slots: [Option<u32>; 2],
}

/// Exact sums by slot, for a scope many positions add to: one array entry per slot, and the
/// slots held in the order first added.
#[derive(Default)]
struct SlotSums {
    nanos: Vec<i128>,
    held: Vec<bool>,
    order: Vec<u32>,
}

impl SlotSums {
    fn add(&mut self, slot: u32, nanos: i128) {
        let s = slot as usize;
        if s >= self.nanos.len() {
            self.nanos.resize(s + 1, 0);
            self.held.resize(s + 1, false);
        }
        if !self.held[s] {
            self.held[s] = true;
            self.order.push(slot);
        }
        self.nanos[s] += nanos;
    }

    /// The sums held, in the order first added, and an empty table after.
    fn take(&mut self) -> Vec<(u32, i128)> {
        let out = self.order.iter().map(|&s| (s, self.nanos[s as usize])).collect();
        self.clear();
        out
    }

    /// The sums held, in the order of `slots` (every slot), and an empty table after: a scope
    /// that holds most slots is then read in the order its exposures add up in, unsorted.
    fn take_in(&mut self, slots: &[u32]) -> Vec<(u32, i128)> {
        let held = |&&s: &&u32| self.held.get(s as usize).copied().unwrap_or(false);
        let out = slots.iter().filter(held).map(|&s| (s, self.nanos[s as usize])).collect();
        self.clear();
        out
    }

    fn clear(&mut self) {
        for s in self.order.drain(..) {
            (self.nanos[s as usize], self.held[s as usize]) = (0, false);
        }
    }
}

/// What a call of [`Positions::risk`] looks up once per factor.
struct PerFactor {
    /// Index in the factor model.
    model: Vec<Option<usize>>,
    /// (price, vol) shock per scenario, then factor.
    shocks: Vec<Vec<(f64, f64)>>,
}

impl Positions {
    /// An instrument's number here, given when it is first named.
    pub fn instrument_number(&mut self, id: &str) -> u32 {
        if let Some(&n) = self.instr_ids.get(id) {
            return n;
        }
        let n = self.instruments.len() as u32;
        let slot = Instr { id: id.to_owned(), def: None, price: None, underlying: None, factor: None };
        self.instruments.push(slot);
        self.instr_ids.insert(id.to_owned(), n);
        let instruments = &self.instruments;
        let at = self.instr_order.partition_point(|&j| instruments[j as usize].id.as_str() < id);
        self.instr_order.insert(at, n);
        self.instr_rank.push(at as u32);
        for &j in &self.instr_order[at + 1..] {
            self.instr_rank[j as usize] += 1;
        }
        n
    }

    fn intern_factor(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.factor_ids.get(name) {
            return n;
        }
        let n = self.factor_names.len() as u32;
        self.factor_names.push(name.to_owned());
        self.factor_ids.insert(name.to_owned(), n);
        self.factor_rank.take();
        n
    }

    pub fn define_instrument(&mut self, def: Instrument) {
        let n = self.instrument_number(&def.id);
        let underlying = def.underlying.as_deref().map(|u| self.instrument_number(u));
        let factor = (def.asset_class != AssetClass::Fx).then(|| self.intern_factor(def.underlying_id()));
        let slot = &mut self.instruments[n as usize];
        (slot.underlying, slot.factor, slot.def) = (underlying, factor, Some(def));
    }

    pub fn define_account(&mut self, def: Account) {
        let n = self.account_number(&def.id);
        self.accounts[n as usize].def = Some(def);
    }

    /// An account's number here, given when it is first named.
    pub fn account_number(&mut self, id: &str) -> u32 {
        if let Some(&n) = self.acct_ids.get(id) {
            return n;
        }
        let n = self.accounts.len() as u32;
        self.accounts.push(Acct { id: id.to_owned(), def: None, qty: Vec::new() });
        self.acct_ids.insert(id.to_owned(), n);
        let accounts = &self.accounts;
        let at = self.acct_order.partition_point(|&a| accounts[a as usize].id.as_str() < id);
        self.acct_order.insert(at, n);
        n
    }

    /// The last settled price (and implied vol) of an instrument.
    pub fn set_price(&mut self, instrument: &str, price: Fixed, iv: Option<f64>) {
        let n = self.instrument_number(instrument);
        self.set_price_of(n, price, iv);
    }

    /// [`Self::set_price`] of an instrument by its number.
    pub fn set_price_of(&mut self, instrument: u32, price: Fixed, iv: Option<f64>) {
        self.instruments[instrument as usize].price = Some((price, iv));
    }

    pub fn set_rate(&mut self, ccy: Ccy, rate: f64) {
        if !self.fx_factors.contains_key(&ccy) {
            let n = self.intern_factor(&format!("FX:{ccy}"));
            self.fx_factors.insert(ccy, n);
        }
        self.rates.insert(ccy, rate);
    }

    /// Adds a settled quantity change to a position.
    pub fn add_qty(&mut self, account: &str, instrument: &str, qty: Fixed) {
        let (a, i) = (self.account_number(account), self.instrument_number(instrument));
        self.add_qty_of(a, i, qty);
    }

    /// [`Self::add_qty`] of an account and an instrument by their numbers.
    pub fn add_qty_of(&mut self, a: u32, i: u32, qty: Fixed) {
        let rank = &self.instr_rank;
        let held = &mut self.accounts[a as usize].qty;
        match held.binary_search_by_key(&rank[i as usize], |(j, _)| rank[*j as usize]) {
            Ok(at) => {
                let q = held[at].1 .0 + qty.0;
                if q == 0 {
                    held.remove(at);
                } else {
                    held[at].1 = Fixed(q);
                }
            }
            Err(at) if qty.0 != 0 => held.insert(at, (i, qty)),
            Err(_) => {}
        }
    }

    pub fn instrument(&self, id: &str) -> Option<&Instrument> {
        self.instruments[*self.instr_ids.get(id)? as usize].def.as_ref()
    }

    /// The closes a bar takes: every equity with a price, and every currency but the base
    /// with a rate (as `FX:<ccy>`), in name order.
    pub fn closes(&self, base: Ccy) -> Vec<(String, f64)> {
        let equity = |i: &Instr| i.def.as_ref().is_some_and(|d| d.asset_class == AssetClass::Equity);
        let mut closes: Vec<(String, f64)> = (self.instruments.iter())
            .filter(|i| equity(i))
            .filter_map(|i| Some((i.id.clone(), i.price?.0.to_f64())))
            .collect();
        closes.extend(self.rates.iter().filter(|(c, _)| **c != base).map(|(c, r)| (format!("FX:{c}"), *r)));
        closes.sort_by(|a, b| a.0.cmp(&b.0));
        closes
    }

    fn rank(&self) -> &[u32] {
        self.factor_rank.get_or_init(|| {
            let mut order: Vec<u32> = (0..self.factor_names.len() as u32).collect();
            order.sort_unstable_by(|a, b| self.factor_names[*a as usize].cmp(&self.factor_names[*b as usize]));
            let mut rank = vec![0; order.len()];
            for (r, f) in order.into_iter().enumerate() {
                rank[f as usize] = r as u32;
            }
            rank
        })
    }

    fn market(&self, instr: &Instr) -> Option<OptionMarket> {
        let (_, iv) = instr.price?;
        let (spot, _) = self.instruments[instr.underlying? as usize].price?;
        Some(OptionMarket { spot, vol: iv? })
    }

    /// An instrument's valuation at `now` and its legs' slots, if it has a price (and option
    /// market) and its delta leg's currency a rate: its positions are those the exposure
    /// tables count (those whose exposure is finite).
    fn unit(&self, instr: &Instr, now: Ts, r: f64, base: Ccy, slots: &mut Slots) -> Option<Unit> {
        let (def, (price, _)) = (instr.def.as_ref()?, instr.price?);
        let market = if def.asset_class == AssetClass::Option { Some(self.market(instr)?) } else { None };
        let valuation = Valuation::of(def, price, market, now, r, black_scholes).ok()?;
        let (delta, quote) = valuation.currencies();
        if !self.rates.contains_key(&delta) {
            return None;
        }
        let slots = self.legs(instr, def, delta, quote, base).map(|leg| leg.map(|key| slots.of(key)));
        Some(Unit { valuation, slots })
    }

    /// Full revaluation of an option under each scenario's (price, vol) shock of its
    /// underlying: the change in its price per scenario, and its currency's rate; none without
    /// a market, terms or rate. The same for every position in it.
    fn option_moves(
        &self,
        instr: &Instr,
        def: &Instrument,
        now: Ts,
        r: f64,
        shocks: &[(f64, f64)],
    ) -> Option<(Vec<f64>, f64)> {
        let market = self.market(instr)?;
        let (kind, strike, expiry) = (def.option_type?, def.strike?.to_f64(), def.expiry?);
        let rate = *self.rates.get(&Ccy::parse(&def.currency)?)?;
        let (s, t, sigma) = (market.spot.to_f64(), year_fraction(expiry, now), market.vol);
        let before = black_scholes(kind, s, strike, t, r, sigma).price;
        let moved = |shock: &(f64, f64)| {
            black_scholes(kind, s * (1.0 + shock.0), strike, t, r, (sigma + shock.1).max(1e-4)).price - before
        };
        Some((shocks.iter().map(moved).collect(), rate))
    }

    /// The legs of an instrument's exposures, as (factor, currency), from their currencies:
    /// the delta leg (none in the base currency for an fx pair) and an fx pair's quote leg
    /// unless in the base currency. A leg in a currency without a rate has no factor; it would
    /// convert to nothing.
    fn legs(&self, instr: &Instr, def: &Instrument, delta: Ccy, quote: Option<Ccy>, base: Ccy) -> [Option<LegKey>; 2] {
        let factor = match def.asset_class {
            AssetClass::Fx if delta == base => None,
            AssetClass::Fx => self.fx_factors.get(&delta).copied(),
            _ => instr.factor,
        };
        let quote = quote.filter(|&q| q != base).and_then(|q| Some((*self.fx_factors.get(&q)?, q)));
        [factor.map(|f| (f, delta)), quote]
    }

    /// Risk rows at `now` for the scopes `wanted` accepts, sorted by scope. A scope has a row
    /// once one of its positions has an exposure.
    pub fn risk(
        &self,
        now: Ts,
        base: Ccy,
        r: f64,
        config: &AnalyticsConfig,
        model: &mut FactorModel,
        wanted: &dyn Fn(Scope, &str) -> bool,
    ) -> Vec<RiskRow> {
        let per_factor = PerFactor {
            model: self.factor_names.iter().map(|f| model.index_of(f)).collect(),
            shocks: config
                .scenarios
                .iter()
                .map(|s| self.factor_names.iter().map(|f| s.shock_of(f)).collect())
                .collect(),
        };
        let mut index: HashMap<(Scope, &str), usize> = HashMap::default();
        let mut scopes: Vec<((Scope, &str), Acc)> = Vec::new();
        // A desk's or the firm's sums, by scope number: they add up many accounts'.
        let mut shared: Vec<Option<Box<[SlotSums; 2]>>> = Vec::new();
        let mut slots = Slots::default();
        // One account's sums (linear, options' delta legs), then added to each of its scopes.
        let mut own: [SlotSums; 2] = Default::default();
        let mut owners: Vec<(Scope, &str)> = Vec::with_capacity(3);
        let mut accs: Vec<usize> = Vec::with_capacity(3);
        let mut shocked: Vec<f64> = Vec::with_capacity(config.scenarios.len());
        // Each option's price moves, once per call.
        let mut options: HashMap<u32, Option<(Vec<f64>, f64)>> = HashMap::default();
        // Each instrument's unit, found at its first position: `None` until then.
        let mut units: Vec<Option<Option<Unit>>> = vec![None; self.instruments.len()];
        for &a in &self.acct_order {
            let acct = &self.accounts[a as usize];
            let Some(def) = &acct.def else { continue };
            owners.clear();
            accs.clear();
            let all = [(Scope::Account, def.id.as_str()), (Scope::Desk, &def.desk), (Scope::Firm, def.firm())];
            owners.extend(all.into_iter().filter(|(s, id)| wanted(*s, id)));
            if owners.is_empty() {
                continue;
            }
            for &(i, qty) in &acct.qty {
                let unit = units[i as usize]
                    .get_or_insert_with(|| self.unit(&self.instruments[i as usize], now, r, base, &mut slots));
                let Some(Unit { valuation, slots: legs }) = unit else { continue };
                let Some(e) = valuation.exposure(qty) else { continue };
                if accs.is_empty() {
                    for owner in &owners {
                        let n = *index.entry(*owner).or_insert_with(|| {
                            scopes.push((*owner, Acc::default()));
                            shared.push((owner.0 != Scope::Account).then(Default::default));
                            scopes.len() - 1
                        });
                        accs.push(n);
                    }
                }
                let option = matches!(valuation, Valuation::Option { .. });
                for (slot, nanos) in legs.iter().zip([Some(e.delta.nanos), e.quote.map(|q| q.nanos)]) {
                    if let (Some(slot), Some(nanos)) = (slot, nanos) {
                        own[option as usize].add(*slot, nanos);
                    }
                }
                if !option {
                    continue;
                }
                let instr = &self.instruments[i as usize];
                let idef = instr.def.as_ref().expect("a valued instrument has a definition");
                shocked.clear();
                let moves = options.entry(i).or_insert_with(|| {
                    let factor = instr.factor.expect("an option's delta leg maps to its underlying") as usize;
                    let shocks: Vec<_> = per_factor.shocks.iter().map(|s| s[factor]).collect();
                    self.option_moves(instr, idef, now, r, &shocks)
                });
                match moves {
                    Some((dv, rate)) => {
                        shocked.extend(dv.iter().map(|d| qty.to_f64() * idef.multiplier.to_f64() * d * *rate))
                    }
                    None => shocked.resize(per_factor.shocks.len(), 0.0),
                }
                for &n in &accs {
                    let acc = &mut scopes[n].1;
                    acc.options.resize(shocked.len(), 0.0);
                    acc.options.iter_mut().zip(&shocked).for_each(|(a, s)| *a += s);
                }
            }
            // The account's sums into each of its scopes: its own takes them as they are.
            let sums = [own[0].take(), own[1].take()];
            for &n in &accs {
                match &mut shared[n] {
                    Some(dense) => {
                        for (part, sums) in dense.iter_mut().zip(&sums) {
                            sums.iter().for_each(|&(slot, nanos)| part.add(slot, nanos));
                        }
                    }
                    None => {
                        let acc = &mut scopes[n].1;
                        acc.linear.extend_from_slice(&sums[0]);
                        acc.options_delta.extend_from_slice(&sums[1]);
                    }
                }
            }
        }
        let (order, place) = slots.in_order(self.rank());
        for (n, dense) in shared.iter_mut().enumerate() {
            if let Some(dense) = dense {
                let acc = &mut scopes[n].1;
                (acc.linear, acc.options_delta) = (dense[0].take_in(&order), dense[1].take_in(&order));
            }
        }
        scopes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Each scope's factor exposures in the model's numbering; the eᵀΣe of all at once,
        // with Σ's step if the bar left it (so Σ is read only after).
        for (_, acc) in &mut scopes {
            let exposures = self.to_base(&slots.keys, &place, &[&acc.linear, &acc.options_delta]);
            acc.e = exposures.iter().filter_map(|&(f, v)| Some((per_factor.model[f as usize]?, v))).collect();
            acc.linear_base = self.to_base(&slots.keys, &place, &[&acc.linear]);
        }
        let es: Vec<&[(usize, f64)]> = scopes.iter().map(|(_, acc)| &acc.e[..]).collect();
        let variances = model.portfolio_variances(&es);
        let pnls = model.historical_pnls(&es);
        for ((_, acc), variance) in scopes.iter_mut().zip(variances) {
            if acc.e.iter().any(|&(i, _)| model.cov(i, i).is_some()) {
                acc.sigma = Some(variance.max(0.0).sqrt());
            }
        }
        (scopes.into_iter().zip(pnls))
            .map(|(((scope, scope_id), acc), pnl)| {
                self.scope_row(scope, scope_id.to_owned(), acc, &pnl, config, &per_factor)
            })
            .collect()
    }

    /// Adds up the exact sums of `parts` (by slot, `keys` naming each slot's factor and
    /// currency, `place` its place in factor-name then currency order) per (factor, currency),
    /// converts each to the base currency and adds them up per factor, in factor-name order
    /// (currencies in order within a factor).
    fn to_base(&self, keys: &[LegKey], place: &[u32], parts: &[&[(u32, i128)]]) -> Vec<(u32, f64)> {
        let mut sorted: Vec<(u32, u32, i128)> =
            (parts.iter().flat_map(|sums| sums.iter())).map(|&(slot, n)| (place[slot as usize], slot, n)).collect();
        // Stable: a part already in order (a desk's, the firm's) is one run, merged, not sorted.
        sorted.sort_by_key(|&(place, _, _)| place);
        let mut out: Vec<(u32, f64)> = Vec::with_capacity(sorted.len());
        let mut i = 0;
        while i < sorted.len() {
            let (p, slot, mut nanos) = sorted[i];
            i += 1;
            while i < sorted.len() && sorted[i].0 == p {
                nanos += sorted[i].2;
                i += 1;
            }
            let (factor, ccy) = keys[slot as usize];
            let Some(rate) = self.rates.get(&ccy) else { continue };
            let value = from_nanos(nanos) * rate;
            match out.last_mut() {
                Some((f, sum)) if *f == factor => *sum += value,
                // From 0.0, as a map's default entry was: -0.0 becomes 0.0, the same bits as before.
                _ => out.push((factor, 0.0 + value)),
            }
        }
        out
    }

    fn scope_row(
        &self,
        scope: Scope,
        scope_id: String,
        acc: Acc,
        pnl: &[f64],
        c: &AnalyticsConfig,
        per_factor: &PerFactor,
    ) -> RiskRow {
        let sigma = acc.sigma;
        let historical = |alpha| historical_var_es(pnl, alpha);
        let stress: Vec<f64> = (per_factor.shocks.iter().enumerate())
            .map(|(k, shocks)| {
                let lin: f64 = acc.linear_base.iter().map(|&(f, v)| v * shocks[f as usize].0).sum();
                lin + acc.options.get(k).copied().unwrap_or(0.0)
            })
            .collect();
        let worst = stress.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1));
        RiskRow {
            scope,
            scope_id,
            var_parametric: sigma.map(|s| parametric_var(s, c.var_confidence, c.horizon_bars)),
            es_parametric: sigma.map(|s| parametric_es(s, c.es_confidence, c.horizon_bars)),
            var_historical: historical(c.var_confidence).map(|v| v.0),
            es_historical: historical(c.es_confidence).map(|v| v.1),
            history_bars: pnl.len() as u64,
            stress_worst: worst.map_or(0.0, |(_, p)| (-p).max(0.0)),
            worst_scenario: worst.filter(|(_, p)| **p < 0.0).map(|(k, _)| c.scenarios[k].name.clone()),
            stress,
        }
    }
}
