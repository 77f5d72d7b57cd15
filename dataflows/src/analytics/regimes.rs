//! Regime signals over the benchmark factors (docs/analytics.md): the vol ratio, the mean
//! correlation and a Hamilton filter, each a level with hysteresis and an event on a change.

use serde::{Deserialize, Serialize};

use crate::analytics::config::RegimeConfig;
use crate::analytics::factors::FactorModel;
use crate::formulas::{ewma, regime_level, MarkovSwitching};
use crate::model::Ts;

const VOL_LEVELS: [&str; 4] = ["calm", "normal", "elevated", "crisis"];
const CORR_LEVELS: [&str; 3] = ["low", "normal", "high"];
const MARKOV_LEVELS: [&str; 2] = ["calm", "high"];

/// A change of a signal's level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegimeEvent {
    pub ts: Ts,
    pub signal: String,
    pub regime: String,
    pub prev_regime: Option<String>,
    pub value: f64,
}

/// A signal's current level and value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegimeRow {
    pub signal: String,
    pub regime: String,
    pub value: f64,
}

#[derive(Clone, Debug)]
struct Signal {
    name: &'static str,
    levels: &'static [&'static str],
    thresholds: Vec<f64>,
    level: Option<usize>,
    value: f64,
}

impl Signal {
    fn new(name: &'static str, levels: &'static [&'static str], thresholds: Vec<f64>) -> Signal {
        Signal { name, levels, thresholds, level: None, value: f64::NAN }
    }

    /// Sets the value and returns the event if the level changed.
    fn update(&mut self, ts: Ts, value: f64, hysteresis: f64) -> Option<RegimeEvent> {
        self.value = value;
        let level = regime_level(value, &self.thresholds, self.level, hysteresis);
        let prev = self.level.replace(level);
        (prev != Some(level)).then(|| RegimeEvent {
            ts,
            signal: self.name.to_owned(),
            regime: self.levels[level].to_owned(),
            prev_regime: prev.map(|p| self.levels[p].to_owned()),
            value,
        })
    }

    fn row(&self) -> Option<RegimeRow> {
        let level = self.level?;
        Some(RegimeRow { signal: self.name.to_owned(), regime: self.levels[level].to_owned(), value: self.value })
    }
}

/// The three signals and the state behind them.
#[derive(Clone, Debug)]
pub struct Regimes {
    config: RegimeConfig,
    short_lambda: f64,
    /// Benchmark factor indices, with their short and long EWMA variances.
    benchmarks: Vec<(usize, Option<f64>, Option<f64>)>,
    markov: MarkovSwitching,
    xi: [f64; 2],
    vol: Signal,
    corr: Signal,
    hamilton: Signal,
}

impl Regimes {
    pub fn new(config: RegimeConfig, short_lambda: f64, bars_per_year: f64) -> Regimes {
        let per_bar = bars_per_year.sqrt();
        let markov = MarkovSwitching {
            mean: [config.calm_mean, config.high_mean],
            sd: [config.calm_vol / per_bar, config.high_vol / per_bar],
            stay: [config.p_calm_stay, config.p_high_stay],
        };
        Regimes {
            vol: Signal::new("vol", &VOL_LEVELS, config.vol_thresholds.to_vec()),
            corr: Signal::new("correlation", &CORR_LEVELS, config.corr_thresholds.to_vec()),
            hamilton: Signal::new("markov", &MARKOV_LEVELS, vec![0.5]),
            xi: markov.stationary(),
            markov,
            short_lambda,
            benchmarks: Vec::new(),
            config,
        }
    }

    /// Adds a benchmark factor (once).
    pub fn add_benchmark(&mut self, factor: usize) {
        if !self.benchmarks.iter().any(|b| b.0 == factor) {
            self.benchmarks.push((factor, None, None));
        }
    }

    /// Updates every signal with the bar just closed; `returns` are that bar's (factor, r).
    pub fn on_bar(&mut self, ts: Ts, returns: &[(usize, f64)], model: &FactorModel, events: &mut Vec<RegimeEvent>) {
        let h = self.config.hysteresis;
        let mut ratios = Vec::new();
        let mut bench_returns = Vec::new();
        for (factor, short, long) in &mut self.benchmarks {
            let Some(&(_, r)) = returns.iter().find(|(i, _)| i == factor) else { continue };
            *short = Some(ewma(*short, self.short_lambda, r * r));
            *long = Some(ewma(*long, self.config.long_lambda, r * r));
            bench_returns.push(r);
            if let (Some(s), Some(l)) = (*short, *long) {
                if l > 0.0 {
                    ratios.push((s / l).sqrt());
                }
            }
        }
        if bench_returns.is_empty() {
            return;
        }
        if !ratios.is_empty() {
            events.extend(self.vol.update(ts, mean(&ratios), h));
        }
        let mut correlations = Vec::new();
        for (i, a) in self.benchmarks.iter().enumerate() {
            for b in &self.benchmarks[i + 1..] {
                correlations.extend(model.correlation(a.0, b.0));
            }
        }
        if !correlations.is_empty() {
            events.extend(self.corr.update(ts, mean(&correlations), h));
        }
        self.xi = self.markov.filter(self.xi, mean(&bench_returns));
        events.extend(self.hamilton.update(ts, self.xi[1], h));
    }

    /// The level and value of every signal that has one.
    pub fn rows(&self) -> Vec<RegimeRow> {
        [&self.vol, &self.corr, &self.hamilton].into_iter().filter_map(Signal::row).collect()
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}
