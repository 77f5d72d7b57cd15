//! Per-scope factor exposures, VaR/ES and stress from the settled positions at a bar end or
//! a snapshot (docs/analytics.md). Factor exposures follow the `factor_exposures` table: exact
//! nanos per (scope, factor, currency), each converted once.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::analytics::config::{AnalyticsConfig, Scenario};
use crate::analytics::factors::FactorModel;
use crate::exposure::{position_exposure, Ccy, Exposure, OptionMarket, NANOS};
use crate::formulas::{black_scholes, historical_var_es, parametric_es, parametric_var, year_fraction};
use crate::model::{Account, AssetClass, Fixed, Instrument, Scope, Ts};

/// The settled book as the analytics see it at a boundary.
#[derive(Clone, Debug, Default)]
pub struct Positions {
    pub instruments: HashMap<String, Instrument>,
    pub accounts: HashMap<String, Account>,
    /// Last settled price and implied vol per instrument.
    pub prices: HashMap<String, (Fixed, Option<f64>)>,
    /// Base-currency units per unit of each currency with a rate.
    pub rates: BTreeMap<Ccy, f64>,
    /// Non-zero quantities by (account, instrument).
    pub qty: BTreeMap<(String, String), Fixed>,
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

/// A factor as positions name it: an underlying's id, or a currency against the base.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum FactorKey<'a> {
    Name(&'a str),
    Fx(Ccy),
}

impl FactorKey<'_> {
    fn name(&self) -> String {
        match self {
            FactorKey::Name(n) => (*n).to_owned(),
            FactorKey::Fx(c) => format!("FX:{c}"),
        }
    }
}

/// What one scope accumulates from its positions.
#[derive(Default)]
struct Acc<'a> {
    /// Nanos per (factor, currency) of every delta and quote leg.
    factors: HashMap<(FactorKey<'a>, Ccy), i128>,
    /// The same, options left out (they are revalued in full under stress).
    linear: HashMap<(FactorKey<'a>, Ccy), i128>,
    /// Option revaluation P&L per scenario, base currency.
    options: Vec<f64>,
}

/// The factor a position's delta leg maps to (none for a leg in the base currency).
fn delta_factor<'a>(def: &'a Instrument, e: &Exposure, base: Ccy) -> Option<FactorKey<'a>> {
    match def.asset_class {
        AssetClass::Fx if e.delta.ccy == base => None,
        AssetClass::Fx => Some(FactorKey::Fx(e.delta.ccy)),
        _ => Some(FactorKey::Name(def.underlying_id())),
    }
}

impl Positions {
    fn market(&self, def: &Instrument) -> Option<OptionMarket> {
        let (_, iv) = self.prices.get(&def.id)?;
        let (spot, _) = self.prices.get(def.underlying.as_deref()?)?;
        Some(OptionMarket { spot: *spot, vol: (*iv)? })
    }

    /// A position's exposure at `now`, if it has a price (and option market) and its delta
    /// leg's currency a rate: the positions the exposure tables count.
    fn exposure(&self, def: &Instrument, qty: Fixed, now: Ts, r: f64) -> Option<Exposure> {
        let (price, _) = self.prices.get(&def.id)?;
        let market = if def.asset_class == AssetClass::Option { Some(self.market(def)?) } else { None };
        let e = position_exposure(def, qty, *price, market, now, r).ok()?;
        self.rates.contains_key(&e.delta.ccy).then_some(e)
    }

    /// Full-revaluation P&L of an option position under a (price, vol) shock of its
    /// underlying, in the base currency.
    fn option_pnl(&self, def: &Instrument, qty: Fixed, now: Ts, r: f64, shock: (f64, f64)) -> Option<f64> {
        let market = self.market(def)?;
        let (kind, strike, expiry) = (def.option_type?, def.strike?.to_f64(), def.expiry?);
        let rate = *self.rates.get(&Ccy::parse(&def.currency)?)?;
        let (s, t, sigma) = (market.spot.to_f64(), year_fraction(expiry, now), market.vol);
        let before = black_scholes(kind, s, strike, t, r, sigma).price;
        let after = black_scholes(kind, s * (1.0 + shock.0), strike, t, r, (sigma + shock.1).max(1e-4)).price;
        Some(qty.to_f64() * def.multiplier.to_f64() * (after - before) * rate)
    }

    /// Risk rows at `now` for the scopes `wanted` accepts, sorted by scope, and their factor
    /// exposures. Positions come in account order, so each account's scopes are looked up once.
    pub fn risk(
        &self,
        now: Ts,
        base: Ccy,
        r: f64,
        config: &AnalyticsConfig,
        model: &FactorModel,
        wanted: &dyn Fn(Scope, &str) -> bool,
    ) -> Vec<RiskRow> {
        let mut scopes: HashMap<(Scope, &str), Acc> = HashMap::default();
        let mut owners: Vec<(Scope, &str)> = Vec::with_capacity(3);
        let mut current: Option<&str> = None;
        for ((account, instrument), &qty) in &self.qty {
            if current != Some(account.as_str()) {
                current = Some(account.as_str());
                owners.clear();
                if let Some(acct) = self.accounts.get(account) {
                    let all =
                        [(Scope::Account, account.as_str()), (Scope::Desk, &acct.desk), (Scope::Firm, acct.firm())];
                    owners.extend(all.into_iter().filter(|(s, id)| wanted(*s, id)));
                }
            }
            if owners.is_empty() {
                continue;
            }
            let Some(def) = self.instruments.get(instrument) else { continue };
            let Some(e) = self.exposure(def, qty, now, r) else { continue };
            let option = def.asset_class == AssetClass::Option;
            let shocks: Vec<f64> = if option {
                let factor = def.underlying_id();
                let pnl = |s: &Scenario| self.option_pnl(def, qty, now, r, s.shock_of(factor)).unwrap_or(0.0);
                config.scenarios.iter().map(pnl).collect()
            } else {
                Vec::new()
            };
            let mut legs = Vec::with_capacity(2);
            legs.extend(delta_factor(def, &e, base).map(|f| (f, e.delta.ccy, e.delta.nanos)));
            legs.extend(e.quote.filter(|q| q.ccy != base).map(|q| (FactorKey::Fx(q.ccy), q.ccy, q.nanos)));
            for owner in &owners {
                let acc = scopes.entry(*owner).or_default();
                for &(factor, ccy, nanos) in &legs {
                    *acc.factors.entry((factor, ccy)).or_default() += nanos;
                    if !option {
                        *acc.linear.entry((factor, ccy)).or_default() += nanos;
                    }
                }
                if option {
                    acc.options.resize(shocks.len(), 0.0);
                    acc.options.iter_mut().zip(&shocks).for_each(|(a, s)| *a += s);
                }
            }
        }
        let mut scopes: Vec<_> = scopes.into_iter().collect();
        scopes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        scopes
            .into_iter()
            .map(|((scope, scope_id), acc)| self.scope_row(scope, scope_id.to_owned(), acc, config, model))
            .collect()
    }

    /// Converts one currency's exact sum per factor to the base currency and adds them up,
    /// in factor-name order (currencies in order within a factor).
    fn to_base(&self, sums: &HashMap<(FactorKey, Ccy), i128>) -> BTreeMap<String, f64> {
        let mut sorted: Vec<_> = sums.iter().map(|((f, c), n)| (f.name(), *c, *n)).collect();
        sorted.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        for (factor, ccy, nanos) in sorted {
            if let Some(rate) = self.rates.get(&ccy) {
                *out.entry(factor).or_default() += nanos as f64 / NANOS * rate;
            }
        }
        out
    }

    fn scope_row(&self, scope: Scope, scope_id: String, acc: Acc, c: &AnalyticsConfig, model: &FactorModel) -> RiskRow {
        let exposures = self.to_base(&acc.factors);
        let e: Vec<(usize, f64)> = exposures.iter().filter_map(|(f, v)| Some((model.index_of(f)?, *v))).collect();
        let has_variance = e.iter().any(|&(i, _)| model.cov(i, i).is_some());
        let sigma = has_variance.then(|| model.portfolio_variance(&e).max(0.0).sqrt());
        let historical = |alpha| historical_var_es(&model.historical_pnl(&e), alpha);
        let linear = self.to_base(&acc.linear);
        let stress: Vec<f64> = c
            .scenarios
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let lin: f64 = linear.iter().map(|(f, v)| v * s.shock_of(f).0).sum();
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
            history_bars: model.history_bars.len() as u64,
            stress_worst: worst.map_or(0.0, |(_, p)| (-p).max(0.0)),
            worst_scenario: worst.filter(|(_, p)| **p < 0.0).map(|(k, _)| c.scenarios[k].name.clone()),
            stress,
        }
    }
}
