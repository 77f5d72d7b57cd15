//! The analytics tables recomputed in batch, straight from docs/analytics.md: one pass over
//! the bar ends in event-time order, read off at each snapshot.
//!
//! ```text
//!   ticks (ts order) ─> last prices ─> closes at t_k ─> returns ─┬> EWMA / windowed variance ─> volatility
//!                                                               ├> EWMA covariance ──────────> correlation
//!                                                               ├> return history ─┐
//!                                                               └> regime signals ─┼────────> regimes
//!   book at as_of (factor exposures, priced positions) ─────────────────────────────┴> risk, stress
//! ```
//!
//! Plain sequential code over `BTreeMap`s keyed by factor name (the covariances in a triangle
//! of factors numbered as they first return); only the formula functions
//! (`ewma`, `black_scholes`, VaR/ES, the Hamilton filter, `regime_level`) are shared with the
//! engine.

use std::collections::{BTreeMap, HashMap};

use riskflow_dataflows::analytics::config::AnalyticsConfig;
use riskflow_dataflows::exposure::Ccy;
use riskflow_dataflows::formulas::{
    black_scholes, ewma, historical_var_es, parametric_es, parametric_var, rate_from_pair, regime_level, year_fraction,
    MarkovSwitching,
};
use riskflow_dataflows::model::{AssetClass, Fixed, Instrument, Tick, Ts};

use super::{Book, Held, Inputs, Rows, Value};

/// Levels of the three regime signals, lowest first.
const VOL_LEVELS: [&str; 4] = ["calm", "normal", "elevated", "crisis"];
const CORR_LEVELS: [&str; 3] = ["low", "normal", "high"];
const MARKOV_LEVELS: [&str; 2] = ["calm", "high"];
/// P(high) from which the markov signal is `high`.
const MARKOV_THRESHOLD: [f64; 1] = [0.5];

/// One factor's state after the last bar end.
#[derive(Clone, Debug)]
struct Factor {
    close: f64,
    /// Its return at the last bar end, if it had one.
    ret: Option<f64>,
    /// Every return so far, in bar order.
    returns: Vec<f64>,
    /// EWMA variance with λ = `lambda` (also the short variance of the vol regime).
    var: Option<f64>,
    /// EWMA variance with λ = `regimes.long_lambda`.
    long_var: Option<f64>,
}

/// The EWMA covariance of every pair of factors that had returns at a common bar end.
///
/// Factors are numbered in the order of their first return; row `i` holds the covariances
/// of factor `i` with factors `0..=i` (NaN where a pair has none yet). A pair's value is the
/// same either way round (`ra·rb` is `rb·ra` in f64), so it is kept once. Keyed by pairs of
/// names, the day's ~4k factors made 8M entries that every bar end rewrote.
#[derive(Debug, Default)]
struct Covariances {
    numbers: HashMap<String, usize>,
    names: Vec<String>,
    rows: Vec<Vec<f64>>,
}

impl Covariances {
    /// The number of `name`, given on first sight.
    fn number(&mut self, name: &str) -> usize {
        if let Some(&i) = self.numbers.get(name) {
            return i;
        }
        let i = self.names.len();
        self.numbers.insert(name.to_owned(), i);
        self.names.push(name.to_owned());
        self.rows.push(vec![f64::NAN; i + 1]);
        i
    }

    fn at(&self, i: usize, j: usize) -> Option<f64> {
        let c = self.rows[i.max(j)][i.min(j)];
        (!c.is_nan()).then_some(c)
    }

    fn set(&mut self, i: usize, j: usize, c: f64) {
        self.rows[i.max(j)][i.min(j)] = c;
    }

    fn get(&self, a: &str, b: &str) -> Option<f64> {
        self.at(*self.numbers.get(a)?, *self.numbers.get(b)?)
    }

    /// Every pair (a, b) with a ≤ b by name and a covariance, in name order, of the factors
    /// `keep` accepts.
    fn pairs(&self, keep: impl Fn(&str) -> bool) -> Vec<(&str, &str, f64)> {
        let mut named: Vec<(&str, usize)> =
            self.names.iter().enumerate().filter(|(_, n)| keep(n)).map(|(i, n)| (n.as_str(), i)).collect();
        named.sort_unstable();
        let mut out = Vec::new();
        for (k, &(a, i)) in named.iter().enumerate() {
            out.extend(named[k..].iter().filter_map(|&(b, j)| Some((a, b, self.at(i, j)?))));
        }
        out
    }
}

/// A regime signal's last value, its level and the bar end it is from.
#[derive(Copy, Clone, Debug)]
struct Signal {
    value: f64,
    level: usize,
    bar_end: Ts,
}

/// VaR, ES and stress figures of one scope.
#[derive(Clone, Debug, Default)]
pub(crate) struct Figures {
    pub var_parametric: Option<f64>,
    pub es_parametric: Option<f64>,
    pub var_historical: Option<f64>,
    pub es_historical: Option<f64>,
    pub history_bars: usize,
    /// Scenario P&L in scenario order.
    pub stress: Vec<(String, f64)>,
    /// max(0, −min P&L), and the first scenario with that P&L when it is a loss.
    pub stress_worst: f64,
    pub worst_scenario: Option<String>,
}

/// The bar-by-bar analytics state.
pub(crate) struct Analytics<'a> {
    cfg: &'a AnalyticsConfig,
    base: Ccy,
    instruments: HashMap<&'a str, &'a Instrument>,
    /// Equity-class instruments, by id.
    equities: BTreeMap<&'a str, &'a Instrument>,
    /// The pair giving each non-base currency's rate.
    rate_pairs: Vec<(Ccy, &'a Instrument)>,
    ticks: &'a [Tick],
    next_tick: usize,
    last_price: HashMap<&'a str, Fixed>,
    /// The next bar end to process; `None` without ticks or deltas.
    next_bar: Option<Ts>,
    /// The last bar end processed.
    bar_end: Option<Ts>,
    factors: BTreeMap<String, Factor>,
    cov: Covariances,
    /// The returns of every bar with any return, in bar order.
    history: Vec<BTreeMap<String, f64>>,
    /// Hamilton filter: [P(calm), P(high)] after the last benchmark return.
    markov: Option<[f64; 2]>,
    /// vol, correlation, markov.
    signals: [Option<Signal>; 3],
}

impl<'a> Analytics<'a> {
    pub fn new(inputs: &'a Inputs, cfg: &'a AnalyticsConfig, base: Ccy) -> Analytics<'a> {
        let instruments = inputs.instrument_map();
        let equities = instruments.iter().filter(|(_, i)| i.asset_class == AssetClass::Equity).map(|(k, v)| (*k, *v));
        let mut rate_pairs: Vec<(Ccy, &Instrument)> = inputs.rate_pairs(base).into_iter().collect();
        rate_pairs.sort_by_key(|(c, _)| *c);
        let first =
            [inputs.ticks.first().map(|t| t.ts), inputs.deltas.first().map(|d| d.ts)].into_iter().flatten().min();
        let bar = cfg.bar_ns;
        Analytics {
            cfg,
            base,
            equities: equities.collect(),
            instruments,
            rate_pairs,
            ticks: &inputs.ticks,
            next_tick: 0,
            last_price: HashMap::new(),
            next_bar: first.map(|t| t.div_ceil(bar) * bar),
            bar_end: None,
            factors: BTreeMap::new(),
            cov: Covariances::default(),
            history: Vec::new(),
            markov: None,
            signals: [None; 3],
        }
    }

    /// The next bar end to process.
    pub fn next_bar(&self) -> Option<Ts> {
        self.next_bar
    }

    /// Processes every bar end at or before `t`.
    pub fn advance_to(&mut self, t: Ts) {
        while self.next_bar.is_some_and(|b| b <= t) {
            self.process_bar();
        }
    }

    /// Processes the next bar end: closes, returns, variances, covariances, regimes. A bar end
    /// without a tick since the previous one is skipped (the market was closed).
    pub fn process_bar(&mut self) {
        let Some(t) = self.next_bar else { return };
        self.next_bar = Some(t + self.cfg.bar_ns);
        // Last prices at or before t (ticks are in ts order, file order among equal times).
        let mut ticked = false;
        while let Some(tick) = self.ticks.get(self.next_tick).filter(|tick| tick.ts <= t) {
            self.last_price.insert(tick.instrument.as_str(), tick.price);
            self.next_tick += 1;
            ticked = true;
        }
        if !ticked {
            return;
        }
        self.bar_end = Some(t);
        // Closes of the factor universe.
        let mut closes: BTreeMap<String, f64> = BTreeMap::new();
        for id in self.equities.keys() {
            if let Some(p) = self.last_price.get(id) {
                closes.insert((*id).to_owned(), p.to_f64());
            }
        }
        for (ccy, pair) in &self.rate_pairs {
            let Some(p) = self.last_price.get(pair.id.as_str()) else { continue };
            let (Some(b), Some(q)) = (pair.base.as_deref(), pair.quote.as_deref()) else { continue };
            if let Some(rate) = rate_from_pair(b, q, p.to_f64(), ccy.as_str(), self.base.as_str()) {
                closes.insert(format!("FX:{ccy}"), rate);
            }
        }
        // Returns, and the per-factor variances.
        let (lambda, long_lambda) = (self.cfg.lambda, self.cfg.regimes.long_lambda);
        let mut returns: BTreeMap<String, f64> = BTreeMap::new();
        for f in self.factors.values_mut() {
            f.ret = None;
        }
        for (name, close) in closes {
            match self.factors.get_mut(&name) {
                Some(f) => {
                    let r = (close / f.close).ln();
                    f.close = close;
                    f.ret = Some(r);
                    f.returns.push(r);
                    f.var = Some(ewma(f.var, lambda, r * r));
                    f.long_var = Some(ewma(f.long_var, long_lambda, r * r));
                    returns.insert(name, r);
                }
                None => {
                    let f = Factor { close, ret: None, returns: Vec::new(), var: None, long_var: None };
                    self.factors.insert(name, f);
                }
            }
        }
        // Covariances of every pair with returns at this bar (seeded at the first such bar).
        let with_returns: Vec<(usize, f64)> = returns.iter().map(|(n, r)| (self.cov.number(n), *r)).collect();
        for (k, &(a, ra)) in with_returns.iter().enumerate() {
            for &(b, rb) in &with_returns[k..] {
                let prev = self.cov.at(a, b);
                self.cov.set(a, b, ewma(prev, lambda, ra * rb));
            }
        }
        if !returns.is_empty() {
            self.history.push(returns);
        }
        self.update_regimes(t);
    }

    /// The benchmark factors: configured, else the equity factors whose instrument has sector
    /// `index`.
    fn benchmarks(&self) -> Vec<&str> {
        if !self.cfg.benchmarks.is_empty() {
            let mut names: Vec<&str> =
                self.cfg.benchmarks.iter().map(String::as_str).filter(|b| self.factors.contains_key(*b)).collect();
            names.sort_unstable();
            names.dedup();
            return names;
        }
        self.factors
            .keys()
            .map(String::as_str)
            .filter(|f| self.instruments.get(f).is_some_and(|i| i.asset_class == AssetClass::Equity))
            .filter(|f| self.instruments.get(f).and_then(|i| i.sector.as_deref()) == Some("index"))
            .collect()
    }

    /// ρ_ab = c_ab / √(c_aa·c_bb); `None` without a covariance or when a variance is 0.
    fn correlation(&self, a: &str, b: &str) -> Option<f64> {
        let c = |x: &str, y: &str| self.cov.get(x, y);
        let (caa, cbb, cab) = (c(a, a)?, c(b, b)?, c(a, b)?);
        (caa > 0.0 && cbb > 0.0).then(|| cab / (caa * cbb).sqrt())
    }

    fn update_regimes(&mut self, t: Ts) {
        let benchmarks: Vec<String> = self.benchmarks().into_iter().map(str::to_owned).collect();
        let returning: Vec<(&str, f64)> =
            benchmarks.iter().filter_map(|b| Some((b.as_str(), self.factors[b].ret?))).collect();
        if returning.is_empty() {
            return;
        }
        let rc = &self.cfg.regimes;
        let mut values: [Option<f64>; 3] = [None; 3];
        // vol: mean √(short/long) over the benchmarks with long > 0.
        let ratios: Vec<f64> = returning
            .iter()
            .filter_map(|(b, _)| {
                let f = &self.factors[*b];
                let (short, long) = (f.var?, f.long_var?);
                (long > 0.0).then(|| (short / long).sqrt())
            })
            .collect();
        if !ratios.is_empty() {
            values[0] = Some(ratios.iter().sum::<f64>() / ratios.len() as f64);
        }
        // correlation: mean over the benchmark pairs that have one.
        let mut correlations = Vec::new();
        for (i, (a, _)) in returning.iter().enumerate() {
            for (b, _) in &returning[i + 1..] {
                correlations.extend(self.correlation(a, b));
            }
        }
        if !correlations.is_empty() {
            values[1] = Some(correlations.iter().sum::<f64>() / correlations.len() as f64);
        }
        // markov: Hamilton filter on the mean benchmark return.
        let x = returning.iter().map(|(_, r)| r).sum::<f64>() / returning.len() as f64;
        let per_bar = self.cfg.bars_per_year.sqrt();
        let model = MarkovSwitching {
            mean: [rc.calm_mean, rc.high_mean],
            sd: [rc.calm_vol / per_bar, rc.high_vol / per_bar],
            stay: [rc.p_calm_stay, rc.p_high_stay],
        };
        let xi = model.filter(self.markov.unwrap_or_else(|| model.stationary()), x);
        self.markov = Some(xi);
        values[2] = Some(xi[1]);

        let thresholds: [&[f64]; 3] = [&rc.vol_thresholds, &rc.corr_thresholds, &MARKOV_THRESHOLD];
        for ((slot, value), thresholds) in self.signals.iter_mut().zip(values).zip(thresholds) {
            let Some(value) = value else { continue };
            let level = regime_level(value, thresholds, slot.map(|s| s.level), rc.hysteresis);
            *slot = Some(Signal { value, level, bar_end: t });
        }
    }

    /// VaR, ES and stress of every scope with a factor exposure in `book` (the book at `now`),
    /// from the state after the last bar end processed.
    pub fn figures(&self, book: &Book<'_>, now: Ts, r: f64) -> BTreeMap<(&'static str, String), Figures> {
        let cfg = self.cfg;
        // Scenario P&L per scope, summed over its positions in (account, instrument) order.
        let mut stress: HashMap<(&'static str, &str), Vec<f64>> = HashMap::new();
        for h in &book.held {
            let pnl: Vec<f64> = cfg.scenarios.iter().map(|s| self.position_pnl(h, s, now, r)).collect();
            for (scope, id) in h.scopes() {
                let sums = stress.entry((scope, id)).or_insert_with(|| vec![0.0; pnl.len()]);
                for (sum, p) in sums.iter_mut().zip(&pnl) {
                    *sum += p;
                }
            }
        }
        let n = cfg.history.min(self.history.len());
        let sample = &self.history[self.history.len() - n..];
        let mut out = BTreeMap::new();
        for ((scope, id), e) in &book.factors {
            let mut fig = Figures::default();
            // Parametric: σ_p² = Σ_ij e_i·c_ij·e_j over the factors with a covariance.
            // A factor with a variance has had a return, so it is numbered.
            let covered: Vec<(usize, f64)> = e
                .iter()
                .filter(|(f, _)| self.factors.get(*f).is_some_and(|f| f.var.is_some()))
                .map(|(f, x)| (self.cov.numbers[f.as_str()], *x))
                .collect();
            if !covered.is_empty() {
                let mut variance = 0.0;
                for &(a, ea) in &covered {
                    for &(b, eb) in &covered {
                        let c = self.cov.at(a, b).expect("factors with variances have a covariance");
                        variance += ea * c * eb;
                    }
                }
                let sigma = variance.sqrt();
                fig.var_parametric = Some(parametric_var(sigma, cfg.var_confidence, cfg.horizon_bars));
                fig.es_parametric = Some(parametric_es(sigma, cfg.es_confidence, cfg.horizon_bars));
            }
            // Historical: P&L_s = Σ_f e_f·r_f,s over the last n bars with any return.
            fig.history_bars = n;
            if n > 0 {
                let pnl: Vec<f64> = sample
                    .iter()
                    .map(|returns| e.iter().filter_map(|(f, x)| returns.get(f).map(|r| x * r)).sum())
                    .collect();
                fig.var_historical = historical_var_es(&pnl, cfg.var_confidence).map(|v| v.0);
                fig.es_historical = historical_var_es(&pnl, cfg.es_confidence).map(|v| v.1);
            }
            // Stress.
            let pnl = stress.get(&(*scope, id.as_str())).cloned().unwrap_or_else(|| vec![0.0; cfg.scenarios.len()]);
            fig.stress = cfg.scenarios.iter().map(|s| s.name.clone()).zip(pnl).collect();
            let worst = fig.stress.iter().fold(None::<&(String, f64)>, |w, s| match w {
                Some(w) if w.1 <= s.1 => Some(w),
                _ => Some(s),
            });
            if let Some((name, p)) = worst.filter(|w| w.1 < 0.0) {
                fig.stress_worst = -p;
                fig.worst_scenario = Some(name.clone());
            }
            out.insert((*scope, id.clone()), fig);
        }
        out
    }

    /// One position's P&L under one scenario (docs/analytics.md, Stress).
    fn position_pnl(&self, h: &Held<'_>, s: &riskflow_dataflows::analytics::Scenario, now: Ts, r: f64) -> f64 {
        match h.inst.asset_class {
            AssetClass::Equity | AssetClass::Future => h.delta.1 * s.shock_of(h.inst.underlying_id()).0,
            AssetClass::Fx => {
                // A leg in the base currency does not move against it.
                let leg =
                    |(ccy, e): (Ccy, f64)| if ccy == self.base { 0.0 } else { e * s.shock_of(&format!("FX:{ccy}")).0 };
                leg(h.delta) + h.quote.map_or(0.0, leg)
            }
            AssetClass::Option => {
                let (Some((spot, vol)), Some(kind), Some(strike), Some(expiry)) =
                    (h.market, h.inst.option_type, h.inst.strike, h.inst.expiry)
                else {
                    return 0.0;
                };
                let (price_shock, vol_shock) = s.shock_of(h.inst.underlying_id());
                let t = year_fraction(expiry, now);
                let k = strike.to_f64();
                let before = black_scholes(kind, spot, k, t, r, vol).price;
                let after = black_scholes(kind, spot * (1.0 + price_shock), k, t, r, (vol + vol_shock).max(1e-4)).price;
                let qm = h.qty.to_f64() * h.inst.multiplier.to_f64();
                qm * (after - before) * h.rate
            }
        }
    }

    /// The five analytics tables at `as_of`, from `book` (the book at `as_of`) and the state
    /// after the last bar end at or before it.
    pub fn tables(&self, book: &Book<'_>, as_of: Ts, r: f64) -> HashMap<&'static str, Rows> {
        let cfg = self.cfg;
        let bar_end = Value::time(self.bar_end);
        let annual = |var: Option<f64>| var.map(|v| v.sqrt() * cfg.bars_per_year.sqrt());
        let count = |n: usize| Value::num(Some(n as f64));

        let mut volatility = Rows::new();
        for (name, f) in &self.factors {
            let n = cfg.window.min(f.returns.len());
            let window_var =
                (n > 0).then(|| f.returns[f.returns.len() - n..].iter().map(|r| r * r).sum::<f64>() / n as f64);
            volatility.insert(
                vec![name.clone()],
                vec![
                    bar_end.clone(),
                    Value::num(Some(f.close)),
                    Value::num(f.ret),
                    count(f.returns.len()),
                    Value::num(f.var),
                    Value::num(annual(f.var)),
                    count(n),
                    Value::num(window_var),
                    Value::num(annual(window_var)),
                ],
            );
        }

        let mut correlation = Rows::new();
        for (a, b, c) in self.cov.pairs(|f| self.cfg.writes_factor(f)) {
            let rho = self.correlation(a, b);
            correlation
                .insert(vec![a.to_owned(), b.to_owned()], vec![bar_end.clone(), Value::num(Some(c)), Value::num(rho)]);
        }

        let mut risk = Rows::new();
        let mut stress = Rows::new();
        for ((scope, id), fig) in self.figures(book, as_of, r) {
            risk.insert(
                vec![scope.to_owned(), id.clone()],
                vec![
                    bar_end.clone(),
                    Value::num(fig.var_parametric),
                    Value::num(fig.es_parametric),
                    Value::num(fig.var_historical),
                    Value::num(fig.es_historical),
                    count(fig.history_bars),
                    Value::num(Some(fig.stress_worst)),
                    Value::text(fig.worst_scenario.as_deref()),
                ],
            );
            for (scenario, pnl) in fig.stress {
                stress.insert(vec![scope.to_owned(), id.clone(), scenario], vec![Value::num(Some(pnl))]);
            }
        }

        let mut regimes = Rows::new();
        let names: [(&str, &[&str]); 3] =
            [("vol", &VOL_LEVELS), ("correlation", &CORR_LEVELS), ("markov", &MARKOV_LEVELS)];
        for (signal, (name, levels)) in self.signals.iter().zip(names) {
            let Some(s) = signal else { continue };
            regimes.insert(
                vec![name.to_owned()],
                vec![Value::time(Some(s.bar_end)), Value::text(Some(levels[s.level])), Value::num(Some(s.value))],
            );
        }

        HashMap::from([
            ("volatility", volatility),
            ("correlation", correlation),
            ("risk", risk),
            ("stress", stress),
            ("regimes", regimes),
        ])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use riskflow_dataflows::analytics::config::AnalyticsConfig;
    use riskflow_dataflows::exposure::Ccy;
    use riskflow_dataflows::model::{Account, Date, Delta, Fixed, Instrument, OptionType, Tick, Ts, DAY_NS};

    use super::super::{Inputs, Rows, Value};
    use super::Analytics;

    fn tick(ts: Ts, instrument: &str, price: f64, iv: Option<f64>) -> Tick {
        let price = Fixed::from_f64(price).unwrap();
        Tick { ts, instrument: instrument.into(), price, bid: None, ask: None, iv }
    }

    fn delta(id: &str, ts: Ts, instrument: &str, qty: f64) -> Delta {
        let qty = Fixed::from_f64(qty).unwrap();
        Delta { id: id.into(), ts, account: "ACC".into(), instrument: instrument.into(), qty }
    }

    fn inputs(instruments: Vec<Instrument>, ticks: Vec<Tick>, deltas: Vec<Delta>) -> Inputs {
        let account = Account { id: "ACC".into(), desk: "DESK".into(), firm: None };
        Inputs {
            instruments,
            accounts: HashMap::from([("ACC".to_owned(), account)]),
            limits: Vec::new(),
            ticks,
            deltas,
            bar_ns: None,
        }
    }

    /// Every table at `as_of`.
    fn tables(inputs: &Inputs, cfg: &AnalyticsConfig, as_of: Ts) -> HashMap<&'static str, Rows> {
        let mut a = Analytics::new(inputs, cfg, Ccy::USD);
        a.advance_to(as_of);
        a.tables(&inputs.book(as_of, Ccy::USD, 0.0), as_of, 0.0)
    }

    fn num(rows: &Rows, key: &[&str], column: usize) -> Option<f64> {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        match &rows.get(&key).unwrap_or_else(|| panic!("no row {key:?}"))[column] {
            Value::Number(n) => *n,
            Value::Text(_) => panic!("{key:?} column {column} is text"),
        }
    }

    fn text(rows: &Rows, key: &[&str], column: usize) -> Option<String> {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        match &rows[&key][column] {
            Value::Text(s) => s.clone(),
            Value::Number(_) => panic!("{key:?} column {column} is a number"),
        }
    }

    fn close(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("a value");
        let rel = (actual - expected).abs() / expected.abs().max(1e-300);
        assert!(rel <= 1e-13 || actual == expected, "got {actual:e}, expected {expected:e}");
    }

    /// Two equities A and B, bars of 10 ns at 10, 20, 30, λ = 0.5, 4 bars a year (so √ = 2),
    /// and an account long 10 A, short 10 B from the first bar.
    fn two_factors() -> (Inputs, AnalyticsConfig) {
        let ticks = vec![
            tick(10, "A", 100.0, None),
            tick(10, "B", 50.0, None),
            tick(20, "A", 110.0, None),
            tick(20, "B", 55.0, None),
            // A later line at the same time wins: 99, not 98.
            tick(30, "A", 98.0, None),
            tick(30, "A", 99.0, None),
        ];
        let deltas = vec![delta("d1", 10, "A", 10.0), delta("d2", 10, "B", -10.0)];
        let index = |id: &str| Instrument { sector: Some("index".into()), ..Instrument::equity(id, "USD") };
        let instruments = vec![index("A"), index("B")];
        let mut cfg =
            AnalyticsConfig { bar_ns: 10, lambda: 0.5, bars_per_year: 4.0, horizon_bars: 1.0, ..Default::default() };
        cfg.regimes.calm_vol = 0.1; // σ per bar 0.05
        cfg.regimes.high_vol = 0.4; // σ per bar 0.2
        (inputs(instruments, ticks, deltas), cfg)
    }

    #[test]
    fn covariances_are_kept_once_a_pair_and_listed_in_name_order() {
        let mut cov = super::Covariances::default();
        let (b, a, c) = (cov.number("B"), cov.number("A"), cov.number("C"));
        assert_eq!((b, a, c, cov.number("A")), (0, 1, 2, 1));
        cov.set(b, a, 0.5);
        cov.set(c, c, 2.0);
        cov.set(a, c, -1.0);
        assert_eq!((cov.at(a, b), cov.get("A", "B"), cov.get("B", "A")), (Some(0.5), Some(0.5), Some(0.5)));
        assert_eq!((cov.get("A", "A"), cov.get("B", "C"), cov.get("A", "X")), (None, None, None));
        assert_eq!(cov.pairs(|_| true), vec![("A", "B", 0.5), ("A", "C", -1.0), ("C", "C", 2.0)]);
        assert_eq!(cov.pairs(|f| f != "B"), vec![("A", "C", -1.0), ("C", "C", 2.0)]);
    }

    #[test]
    fn returns_ewma_covariance_correlation_by_hand() {
        let (inputs, cfg) = two_factors();
        let t = tables(&inputs, &cfg, 30);
        // r_A = ln(110/100) = 0.09531017980432493 at 20, ln(99/110) = −0.10536051565782628 at 30;
        // r_B = ln(55/50) = 0.09531017980432493 at 20, 0 at 30 (no tick: the close carries).
        let (r, s) = (0.09531017980432493f64, -0.10536051565782628f64);
        let vol = &t["volatility"];
        assert_eq!(vol.len(), 2);
        assert_eq!(vol[&vec!["A".to_owned()]][0], Value::Number(Some(30.0)), "bar_end");
        close(num(vol, &["A"], 1), 99.0);
        close(num(vol, &["A"], 2), s);
        assert_eq!(num(vol, &["B"], 2), Some(0.0));
        assert_eq!(num(vol, &["A"], 3), Some(2.0), "returns");
        // EWMA: σ²_20 = r², σ²_30 = 0.5·r² + 0.5·s² = 0.5·0.009084030374332748 + 0.5·0.011100838259683056.
        close(num(vol, &["A"], 4), 0.010092434317007903);
        close(num(vol, &["B"], 4), 0.004542015187166374);
        // Annualised with √4 = 2: 2·√0.010092434317007903 = 0.20092221695977677.
        close(num(vol, &["A"], 5), 0.20092221695977677);
        // Window of both returns: (r² + s²)/2, equal to the EWMA here because λ = 1/2.
        assert_eq!(num(vol, &["A"], 6), Some(2.0));
        close(num(vol, &["A"], 7), (r * r + s * s) / 2.0);

        let corr = &t["correlation"];
        assert_eq!(corr.len(), 3, "A/A, A/B, B/B");
        // c_AB: r·r at 20, then 0.5·r² + 0.5·s·0 = 0.004542015187166374.
        close(num(corr, &["A", "B"], 1), 0.004542015187166374);
        close(num(corr, &["A", "A"], 1), 0.010092434317007903);
        // ρ = c_AB/√(c_AA·c_BB) = 0.004542015187166374/√(0.010092434317007903·0.004542015187166374).
        close(num(corr, &["A", "B"], 2), 0.6708513919019636);
        close(num(corr, &["B", "B"], 2), 1.0);
    }

    #[test]
    fn a_bar_end_without_a_tick_is_skipped() {
        let (mut inputs, cfg) = two_factors();
        // Nothing ticks in (30, 40]; A ticks at 50.
        inputs.ticks.push(tick(50, "A", 108.9, None));
        let t = tables(&inputs, &cfg, 40);
        let vol = &t["volatility"];
        assert_eq!(vol[&vec!["A".to_owned()]][0], Value::Number(Some(30.0)), "bar_end stays 30");
        assert_eq!(num(vol, &["A"], 3), Some(2.0), "no return at 40");
        let t = tables(&inputs, &cfg, 50);
        let vol = &t["volatility"];
        assert_eq!(vol[&vec!["A".to_owned()]][0], Value::Number(Some(50.0)));
        assert_eq!(num(vol, &["A"], 3), Some(3.0));
        // The return at 50 is over the previous bar not skipped: ln(108.9/99) = ln(1.1).
        close(num(vol, &["A"], 2), 0.09531017980432493);
        assert_eq!(num(vol, &["B"], 2), Some(0.0));
        assert_eq!(num(&t["risk"], &["firm", "FIRM"], 5), Some(3.0), "history_bars");
    }

    #[test]
    fn var_es_and_stress_by_hand() {
        let (inputs, cfg) = two_factors();
        let t = tables(&inputs, &cfg, 30);
        let risk = &t["risk"];
        assert_eq!(risk.len(), 3, "account, desk, firm");
        // e_A = 10·99 = 990, e_B = −10·55 = −550;
        // σ_p² = 990²·0.010092434317007903 − 2·990·550·0.004542015187166374 + 550²·0.004542015187166374
        //      = 9891.6948 − 4946.2545 + 1373.9596 = 6319.3999, σ_p = 79.49402448859344;
        // VaR99 = 2.3263478740408408·σ_p = 184.9307548679899 (h = 1);
        // ES975 = σ_p·φ(1.959963984540054)/0.025 = 185.84135241276144.
        for scope in [["account", "ACC"], ["desk", "DESK"], ["firm", "FIRM"]] {
            close(num(risk, &scope, 1), 184.9307548679899);
            close(num(risk, &scope, 2), 185.84135241276144);
        }
        // Historical over the bars 20 and 30: P&L = 990·r − 550·r = 41.93647911390297 and
        // 990·s − 550·0 = −104.30691050124801; k = ⌈2·0.01⌉ = 1: VaR = ES = 104.30691050124801.
        close(num(risk, &["firm", "FIRM"], 3), 104.30691050124801);
        close(num(risk, &["firm", "FIRM"], 4), 104.30691050124801);
        assert_eq!(num(risk, &["firm", "FIRM"], 5), Some(2.0), "history_bars");
        // Stress: linear, e·shock summed: 440·(−0.0903) = −39.732, 440·(−0.1198) = −52.712.
        let stress = &t["stress"];
        close(num(stress, &["account", "ACC", "2008-10-15"], 0), -39.732);
        close(num(stress, &["account", "ACC", "2020-03-16"], 0), -52.712);
        assert_eq!(num(stress, &["account", "ACC", "usd-rally"], 0), Some(0.0));
        assert_eq!(num(stress, &["account", "ACC", "vol-spike"], 0), Some(0.0));
        close(num(risk, &["account", "ACC"], 6), 52.712);
        assert_eq!(text(risk, &["account", "ACC"], 7).as_deref(), Some("2020-03-16"));
    }

    #[test]
    fn regimes_by_hand() {
        let (inputs, cfg) = two_factors();
        // Both are indices, so both are benchmarks.
        let t = tables(&inputs, &cfg, 20);
        let g = &t["regimes"];
        // At 20 both returns are r: short = long = r², ratio 1 → normal; ρ_AB = 1 → high.
        close(num(g, &["vol"], 2), 1.0);
        assert_eq!(text(g, &["vol"], 1).as_deref(), Some("normal"));
        close(num(g, &["correlation"], 2), 1.0);
        assert_eq!(text(g, &["correlation"], 1).as_deref(), Some("high"));
        // Hamilton: stationary P(high) = 0.01/0.06 = 1/6; x = r; f_calm = φ(r/0.05)/0.05 =
        // 1.296914089757927, f_high = φ(r/0.2)/0.2 = 1.780597531008993;
        // P(high) = (1/6)·1.7806 / ((5/6)·1.2969 + (1/6)·1.7806) = 0.21543391923322713 → calm.
        close(num(g, &["markov"], 2), 0.21543391923322713);
        assert_eq!(text(g, &["markov"], 1).as_deref(), Some("calm"));

        let t = tables(&inputs, &cfg, 30);
        let g = &t["regimes"];
        // A: short 0.5r² + 0.5s², long 0.995r² + 0.005s²; B: short 0.5r², long 0.995r²;
        // mean of the square roots of the ratios = 0.8811702494197897.
        close(num(g, &["vol"], 2), 0.8811702494197897);
        assert_eq!(text(g, &["vol"], 1).as_deref(), Some("normal"));
        close(num(g, &["correlation"], 2), 0.6708513919019636);
        // x = (s + 0)/2; prior = [0.7874921159207666, 0.21250788407923352] → 0.10194326270741268.
        close(num(g, &["markov"], 2), 0.10194326270741268);
        assert_eq!(g[&vec!["markov".to_owned()]][0], Value::Number(Some(30.0)), "bar_end");
    }

    #[test]
    fn correlation_regime_falls_only_past_the_hysteresis() {
        // ρ: 1 at the first bar (high), then 0.58 ≥ 0.6 − 0.05: stays high.
        let (inputs, mut cfg) = two_factors();
        cfg.regimes.corr_thresholds = [0.3, 0.68];
        let t = tables(&inputs, &cfg, 30);
        // 0.6708513919019636 < 0.68 but ≥ 0.68 − 0.05: still high.
        assert_eq!(text(&t["regimes"], &["correlation"], 1).as_deref(), Some("high"));
        cfg.regimes.corr_thresholds = [0.3, 0.73];
        let t = tables(&inputs, &cfg, 30);
        assert_eq!(text(&t["regimes"], &["correlation"], 1).as_deref(), Some("normal"));
    }

    #[test]
    fn option_is_revalued_in_full_and_the_usd_leg_does_not_move() {
        // Expiry 1971-01-01 (day 365) ends at day 366; as of day 183.375 T = 182.625/365.25 = 0.5.
        let now: Ts = 15_843_600 * 1_000_000_000;
        let option = Instrument {
            id: "U-C100".into(),
            asset_class: riskflow_dataflows::model::AssetClass::Option,
            currency: "USD".into(),
            multiplier: Fixed::from_int(100),
            underlying: Some("U".into()),
            strike: Some(Fixed::from_int(100)),
            expiry: Some(Date::parse("1971-01-01").unwrap()),
            option_type: Some(OptionType::Call),
            base: None,
            quote: None,
            sector: None,
        };
        let usdjpy: Instrument = serde_json::from_str(
            r#"{"id":"USDJPY","asset_class":"fx","currency":"JPY","multiplier":1,"base":"USD","quote":"JPY"}"#,
        )
        .unwrap();
        let ticks =
            vec![tick(now, "U", 100.0, None), tick(now, "U-C100", 5.64, Some(0.2)), tick(now, "USDJPY", 150.0, None)];
        let deltas = vec![delta("o", now, "U-C100", 10.0), delta("fx", now, "USDJPY", 1_000_000.0)];
        let inputs = inputs(vec![Instrument::equity("U", "USD"), option, usdjpy], ticks, deltas);
        let cfg = AnalyticsConfig { bar_ns: DAY_NS, ..Default::default() };
        let t = tables(&inputs, &cfg, now);
        let stress = &t["stress"];
        // 10 calls × 100: 1000·(BS(S·(1+s), 0.2+v) − BS(100, 0.2)), S = K = 100, T = 0.5, r = 0,
        // BS(100, 0.2) = 5.637197779701725 (call = S·(2N(σ√T/2) − 1) at the money).
        // 2008-10-15: S = 90.97, σ = 0.34 → −321.15554341275043.
        // 2020-03-16: S = 88.02, σ = 0.45 → +1189.9994365587324.
        // vol-spike: σ = 0.3 → +2809.804882621151.
        // usd-rally: the option is not fx: 0. The fx position: long 1M USD (no move) and short
        // 150M JPY worth −1M USD, which gains 5%: +50000.
        let acc = |s: &str| num(stress, &["account", "ACC", s], 0);
        let rel = |a: Option<f64>, e: f64| ((a.unwrap() - e) / e).abs() < 1e-12;
        assert!(rel(acc("2008-10-15"), -321.15554341275043), "{:?}", acc("2008-10-15"));
        assert!(rel(acc("2020-03-16"), 1189.9994365587324), "{:?}", acc("2020-03-16"));
        assert!(rel(acc("vol-spike"), 2809.804882621151), "{:?}", acc("vol-spike"));
        assert!(rel(acc("usd-rally"), 50_000.0), "{:?}", acc("usd-rally"));
        let risk = &t["risk"];
        assert!(rel(num(risk, &["account", "ACC"], 6), 321.15554341275043));
        assert_eq!(text(risk, &["account", "ACC"], 7).as_deref(), Some("2008-10-15"));
        // The first bar end is day 184, after as_of: no bar, no VaR, an empty history.
        assert_eq!(num(risk, &["account", "ACC"], 0), None, "bar_end");
        assert_eq!(num(risk, &["account", "ACC"], 1), None);
        assert_eq!(num(risk, &["account", "ACC"], 3), None);
        assert_eq!(num(risk, &["account", "ACC"], 5), Some(0.0));
        assert!(t["volatility"].is_empty() && t["regimes"].is_empty());
        // At the first bar end the factors are U and FX:JPY = 1/150, without a return yet.
        let t = tables(&inputs, &cfg, 184 * DAY_NS);
        let vol = &t["volatility"];
        assert_eq!(vol.len(), 2);
        close(num(vol, &["FX:JPY"], 1), 1.0 / 150.0);
        assert_eq!(num(vol, &["U"], 2), None);
        assert_eq!(num(&t["risk"], &["account", "ACC"], 0), Some((184 * DAY_NS) as f64), "bar_end");
        assert_eq!(t["correlation"].len(), 0);
    }
}
