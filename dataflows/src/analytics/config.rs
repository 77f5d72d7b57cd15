//! Settings of the analytics (docs/analytics.md), resolved: durations are in bars.

use serde::{Deserialize, Serialize};

/// Which VaR and ES feed the `var` and `es` limits.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitMethod {
    #[default]
    Parametric,
    Historical,
}

/// One factor shock of a stress scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shock {
    /// A factor name, `equity` (every non-FX factor) or `fx` (every `FX:` factor).
    pub factor: String,
    /// Relative price move (−0.1 = −10%).
    #[serde(default)]
    pub price: f64,
    /// Implied-vol shift in absolute points (0.1 = +10 vol points).
    #[serde(default)]
    pub vol: f64,
}

/// A named set of shocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub shocks: Vec<Shock>,
}

impl Scenario {
    /// The (price, vol) shock of a factor: its own entry, else its class's, else none.
    pub fn shock_of(&self, factor: &str) -> (f64, f64) {
        let class = if factor.starts_with("FX:") { "fx" } else { "equity" };
        let own = self.shocks.iter().rev().find(|s| s.factor == factor);
        let by_class = self.shocks.iter().rev().find(|s| s.factor == class);
        own.or(by_class).map_or((0.0, 0.0), |s| (s.price, s.vol))
    }
}

/// The scenarios every run has (docs/analytics.md).
pub fn builtin_scenarios() -> Vec<Scenario> {
    let one = |name: &str, factor: &str, price: f64, vol: f64| Scenario {
        name: name.to_owned(),
        shocks: vec![Shock { factor: factor.to_owned(), price, vol }],
    };
    vec![
        // S&P 500 close-to-close −9.03%; VIX 55 → 69.
        one("2008-10-15", "equity", -0.0903, 0.14),
        // S&P 500 close-to-close −11.98%; VIX 58 → 83.
        one("2020-03-16", "equity", -0.1198, 0.25),
        one("usd-rally", "fx", -0.05, 0.0),
        one("vol-spike", "equity", 0.0, 0.10),
    ]
}

/// Regime signal settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegimeConfig {
    /// λ of the long EWMA variance of the vol ratio (the short one uses `lambda`).
    pub long_lambda: f64,
    /// Vol-ratio thresholds of normal, elevated, crisis.
    pub vol_thresholds: [f64; 3],
    /// Mean-correlation thresholds of normal, high.
    pub corr_thresholds: [f64; 2],
    /// A level falls only below its threshold minus this.
    pub hysteresis: f64,
    /// Hamilton filter: annualised vol and per-bar mean of the calm and high states.
    pub calm_vol: f64,
    pub high_vol: f64,
    pub calm_mean: f64,
    pub high_mean: f64,
    /// Per-bar probabilities of staying in the calm and in the high state.
    pub p_calm_stay: f64,
    pub p_high_stay: f64,
}

impl Default for RegimeConfig {
    fn default() -> Self {
        RegimeConfig {
            long_lambda: 0.995,
            vol_thresholds: [0.75, 1.25, 2.0],
            corr_thresholds: [0.3, 0.6],
            hysteresis: 0.05,
            calm_vol: 0.12,
            high_vol: 0.40,
            calm_mean: 0.0,
            high_mean: 0.0,
            p_calm_stay: 0.99,
            p_high_stay: 0.95,
        }
    }
}

/// Everything the analytics need, with durations resolved to bars.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticsConfig {
    /// Bar length B in ns of event time.
    pub bar_ns: u64,
    /// EWMA decay λ.
    pub lambda: f64,
    /// W: returns in the windowed variance.
    pub window: usize,
    /// N: bars in the historical VaR sample.
    pub history: usize,
    pub var_confidence: f64,
    pub es_confidence: f64,
    /// h: the VaR horizon in bars.
    pub horizon_bars: f64,
    /// Bars per year, for annualising.
    pub bars_per_year: f64,
    /// Benchmark factors of the regime signals; empty: the index equities, else all.
    pub benchmarks: Vec<String>,
    pub regimes: RegimeConfig,
    /// Built-in scenarios followed by configured ones.
    pub scenarios: Vec<Scenario>,
    pub limit_method: LimitMethod,
    /// Factors whose pairs the `correlation` table holds; empty: every factor.
    pub correlation_factors: Vec<String>,
}

impl AnalyticsConfig {
    /// Whether the `correlation` table holds the pair (a, b).
    pub fn writes_pair(&self, a: &str, b: &str) -> bool {
        self.writes_factor(a) && self.writes_factor(b)
    }

    /// Whether the `correlation` table holds pairs of `f` (with every other such factor).
    pub fn writes_factor(&self, f: &str) -> bool {
        self.correlation_factors.is_empty() || self.correlation_factors.iter().any(|c| c == f)
    }
    /// bars per year = days per year × max(1, trading day / B); h = max(1, horizon / B).
    pub fn bars_per_year(bar_ns: u64, trading_day_ns: u64, days_per_year: f64) -> f64 {
        days_per_year * (trading_day_ns as f64 / bar_ns as f64).max(1.0)
    }

    pub fn horizon_bars(bar_ns: u64, horizon_ns: u64) -> f64 {
        (horizon_ns as f64 / bar_ns as f64).max(1.0)
    }
}

impl Default for AnalyticsConfig {
    /// One-second bars, a 6.5-hour trading day of 252 days a year, a one-day horizon.
    fn default() -> Self {
        let bar_ns = 1_000_000_000;
        let day = 23_400 * bar_ns;
        AnalyticsConfig {
            bar_ns,
            lambda: 0.94,
            window: 250,
            history: 250,
            var_confidence: 0.99,
            es_confidence: 0.975,
            horizon_bars: Self::horizon_bars(bar_ns, day),
            bars_per_year: Self::bars_per_year(bar_ns, day, 252.0),
            benchmarks: Vec::new(),
            regimes: RegimeConfig::default(),
            scenarios: builtin_scenarios(),
            limit_method: LimitMethod::Parametric,
            correlation_factors: Vec::new(),
        }
    }
}
