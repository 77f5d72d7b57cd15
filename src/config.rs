//! `riskflow.toml`: typed configuration, validated once. Every key has a default (shown by
//! `docs/configuration.md`); an unknown key is an error that names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use riskflow_dataflows::analytics::{AnalyticsConfig, LimitMethod, RegimeConfig, Scenario};
use riskflow_dataflows::model::{Limit, TradingState};
use serde::{Deserialize, Deserializer};

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub engine: EngineConfig,
    pub risk: RiskConfig,
    pub limits: LimitsSection,
    pub analytics: AnalyticsSection,
    pub output: OutputConfig,
    pub kafka: KafkaConfig,
}

/// Bars, volatility, VaR/ES, stress and regimes (docs/analytics.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSection {
    /// Bar length; default the dataset's `bar_ns`, else 1s.
    #[serde(deserialize_with = "optional_duration")]
    pub bar: Option<Duration>,
    /// Length of a trading day and trading days per year, for annualising.
    #[serde(deserialize_with = "duration")]
    pub trading_day: Duration,
    pub trading_days_per_year: f64,
    /// EWMA decay λ.
    pub lambda: f64,
    /// Returns in the windowed variance (W).
    pub window: usize,
    /// Bars in the historical VaR/ES sample (N).
    pub history: usize,
    pub var_confidence: f64,
    pub es_confidence: f64,
    /// VaR/ES horizon (h = max(1, horizon / bar) bars).
    #[serde(deserialize_with = "duration")]
    pub horizon: Duration,
    /// Which VaR/ES the `var` and `es` limits use: "parametric" or "historical".
    pub limit_method: LimitMethod,
    /// Benchmark factors of the regime signals (default: the index equities).
    pub benchmarks: Vec<String>,
    pub regimes: RegimeConfig,
    /// Stress scenarios in addition to the built-in ones.
    pub scenarios: Vec<Scenario>,
    /// Factors whose pairs the `correlation` table holds (default: all; N factors make N²/2 rows).
    pub correlation_factors: Vec<String>,
}

impl Default for AnalyticsSection {
    fn default() -> Self {
        let d = AnalyticsConfig::default();
        let day = Duration::from_secs(23_400);
        AnalyticsSection {
            bar: None,
            trading_day: day,
            trading_days_per_year: 252.0,
            lambda: d.lambda,
            window: d.window,
            history: d.history,
            var_confidence: d.var_confidence,
            es_confidence: d.es_confidence,
            horizon: day,
            limit_method: d.limit_method,
            benchmarks: Vec::new(),
            regimes: d.regimes,
            scenarios: Vec::new(),
            correlation_factors: Vec::new(),
        }
    }
}

impl AnalyticsSection {
    /// The resolved settings, with the bar length of the dataset when the file sets none.
    pub fn resolve(&self, dataset_bar_ns: Option<u64>) -> AnalyticsConfig {
        let bar_ns = self.bar.map(|b| b.as_nanos() as u64).or(dataset_bar_ns).unwrap_or(1_000_000_000);
        let day = self.trading_day.as_nanos() as u64;
        let mut scenarios = riskflow_dataflows::analytics::config::builtin_scenarios();
        scenarios.extend(self.scenarios.iter().cloned());
        AnalyticsConfig {
            bar_ns,
            lambda: self.lambda,
            window: self.window,
            history: self.history,
            var_confidence: self.var_confidence,
            es_confidence: self.es_confidence,
            horizon_bars: AnalyticsConfig::horizon_bars(bar_ns, self.horizon.as_nanos() as u64),
            bars_per_year: AnalyticsConfig::bars_per_year(bar_ns, day, self.trading_days_per_year),
            benchmarks: self.benchmarks.clone(),
            regimes: self.regimes.clone(),
            scenarios,
            limit_method: self.limit_method,
            correlation_factors: self.correlation_factors.clone(),
        }
    }

    fn problems(&self, epoch: u128, problems: &mut Vec<String>) {
        if let Some(bar) = self.bar {
            let b = bar.as_nanos();
            if b == 0 || (epoch > 0 && !b.is_multiple_of(epoch)) {
                problems.push(format!("analytics.bar ({bar:?}) must be a positive multiple of engine.epoch"));
            }
        }
        let unit = |name: &str, v: f64, problems: &mut Vec<String>| {
            if !(v > 0.0 && v < 1.0) {
                problems.push(format!("analytics.{name} {v} is not in (0, 1)"));
            }
        };
        unit("lambda", self.lambda, problems);
        unit("var_confidence", self.var_confidence, problems);
        unit("es_confidence", self.es_confidence, problems);
        unit("regimes.long_lambda", self.regimes.long_lambda, problems);
        unit("regimes.p_calm_stay", self.regimes.p_calm_stay, problems);
        unit("regimes.p_high_stay", self.regimes.p_high_stay, problems);
        if self.window == 0 || self.history == 0 {
            problems.push("analytics.window and analytics.history must be at least 1".to_owned());
        }
        if self.trading_day.is_zero()
            || self.trading_days_per_year.is_nan()
            || self.trading_days_per_year <= 0.0
            || self.horizon.is_zero()
        {
            problems.push("analytics.trading_day, trading_days_per_year and horizon must be positive".to_owned());
        }
        if !(self.regimes.calm_vol > 0.0 && self.regimes.high_vol > 0.0) {
            problems.push("analytics.regimes.calm_vol and high_vol must be positive".to_owned());
        }
        if !self.regimes.vol_thresholds.is_sorted() || !self.regimes.corr_thresholds.is_sorted() {
            problems.push("analytics.regimes thresholds must be ascending".to_owned());
        }
        for s in &self.scenarios {
            if s.shocks.iter().any(|k| !(k.price.is_finite() && k.price > -1.0 && k.vol.is_finite())) {
                problems.push(format!("analytics.scenarios {:?}: price shocks must be > -1 and finite", s.name));
            }
        }
    }
}

/// Limit defaults, and limits defined in the file (`[[limits.rules]]`, the JSON limit fields).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Utilisation at which a limit warns, unless the limit sets `warn_at`.
    pub warn_at: f64,
    /// Leaving BREACH needs utilisation below 1 − hysteresis.
    pub hysteresis: f64,
    /// Trading state a hard-limit breach sets: "reducing" or "halted".
    pub breach_action: TradingState,
    pub rules: Vec<Limit>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection { warn_at: 0.8, hysteresis: 0.05, breach_action: TradingState::Reducing, rules: Vec::new() }
    }
}

/// How the dataflow runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Worker threads per process (`-w` overrides).
    pub workers: usize,
    /// Event-time granularity of dataflow epochs: records are grouped by their `ts` rounded
    /// up to a multiple of it. Snapshot intervals must be multiples of it.
    #[serde(deserialize_with = "duration")]
    pub epoch: Duration,
    /// Records a source hands to the dataflow between two worker steps.
    pub batch: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { workers: 1, epoch: Duration::from_millis(100), batch: 1024 }
    }
}

/// What the risk figures mean.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// The currency every figure is reported in.
    pub base_currency: String,
    /// Continuously-compounded interest rate for Black-Scholes.
    pub rate: f64,
    /// Event time between Parquet snapshots.
    #[serde(deserialize_with = "duration")]
    pub snapshot_interval: Duration,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig { base_currency: "USD".into(), rate: 0.0, snapshot_interval: Duration::from_secs(60) }
    }
}

/// Where results go.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Output directory: snapshots, dead letters (`--out` overrides).
    pub dir: PathBuf,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig { dir: PathBuf::from("out") }
    }
}

/// The Kafka source and sinks (`riskflow run --kafka`, `riskflow produce`); docs/kafka.md.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]` (`--kafka` / `--brokers` override).
    pub brokers: String,
    /// Consumer group under which durable progress is committed (for lag monitoring).
    pub group_id: String,
    /// Event time a partition may lag the others before its records count as late.
    #[serde(deserialize_with = "duration")]
    pub lateness: Duration,
    /// A caught-up partition silent this long stops holding event time back.
    #[serde(deserialize_with = "duration")]
    pub idle: Duration,
    /// Timeout of metadata, watermark and flush calls.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    pub topics: riskflow_connectors::kafka::Topics,
    /// librdkafka consumer properties, passed verbatim (they win over riskflow's own).
    pub consumer: BTreeMap<String, String>,
    /// librdkafka producer properties, passed verbatim (they win over riskflow's own).
    pub producer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "riskflow".into(),
            lateness: Duration::ZERO,
            idle: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            topics: Default::default(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// What the clients are built from.
    pub fn client_settings(&self) -> riskflow_connectors::kafka::ClientSettings {
        riskflow_connectors::kafka::ClientSettings {
            brokers: self.brokers.clone(),
            group_id: self.group_id.clone(),
            consumer: self.consumer.clone(),
            producer: self.producer.clone(),
        }
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let config: Config = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    /// Every problem at once, or `Ok`.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.engine.workers == 0 {
            problems.push("engine.workers must be at least 1".to_owned());
        }
        if self.engine.batch == 0 {
            problems.push("engine.batch must be at least 1".to_owned());
        }
        let epoch = self.engine.epoch.as_nanos();
        if epoch == 0 {
            problems.push("engine.epoch must be positive".to_owned());
        }
        let interval = self.risk.snapshot_interval.as_nanos();
        if interval == 0 || (epoch > 0 && !interval.is_multiple_of(epoch)) {
            problems.push(format!(
                "risk.snapshot_interval ({:?}) must be a positive multiple of engine.epoch ({:?})",
                self.risk.snapshot_interval, self.engine.epoch
            ));
        }
        if riskflow_dataflows::exposure::Ccy::parse(&self.risk.base_currency).is_none() {
            problems.push(format!("risk.base_currency {:?} is not a 3-letter code", self.risk.base_currency));
        }
        if !self.risk.rate.is_finite() {
            problems.push("risk.rate must be a finite number".to_owned());
        }
        if !(self.limits.warn_at > 0.0 && self.limits.warn_at <= 1.0) {
            problems.push(format!("limits.warn_at {} is not in (0, 1]", self.limits.warn_at));
        }
        if !(0.0..1.0).contains(&self.limits.hysteresis) {
            problems.push(format!("limits.hysteresis {} is not in [0, 1)", self.limits.hysteresis));
        }
        if self.limits.breach_action == TradingState::Active {
            problems.push("limits.breach_action must be \"reducing\" or \"halted\"".to_owned());
        }
        for rule in &self.limits.rules {
            if let Err(reason) = riskflow_connectors::decode::validate_limit(rule) {
                problems.push(format!("limits.rules {:?}: {reason}", rule.id));
            }
        }
        self.analytics.problems(epoch, &mut problems);
        if self.kafka.brokers.trim().is_empty() {
            problems.push("kafka.brokers must not be empty".to_owned());
        }
        if self.kafka.group_id.trim().is_empty() {
            problems.push("kafka.group_id must not be empty".to_owned());
        }
        if self.kafka.timeout.is_zero() {
            problems.push("kafka.timeout must be positive".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "))
        }
    }
}

/// Parses `"250ms"`, `"1s"`, `"5m"`, `"1h"`, `"1d"`, `"100us"`, `"10ns"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like \"60s\""))?;
    let ns_per = match unit.trim() {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        other => return Err(format!("unknown duration unit {other:?} in {s:?} (use ns, us, ms, s, m, h, d)")),
    };
    n.checked_mul(ns_per).map(Duration::from_nanos).ok_or_else(|| format!("{s:?} is too long"))
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<Config>("[risk]\nsnapshot_intervall = \"5s\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `snapshot_intervall`"), "{err}");
    }

    #[test]
    fn every_problem_is_reported() {
        let c: Config =
            toml::from_str("[engine]\nworkers = 0\nepoch = \"7ms\"\n[risk]\nbase_currency = \"dollars\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("engine.workers"), "{err}");
        assert!(err.contains("multiple of engine.epoch"), "{err}");
        assert!(err.contains("base_currency"), "{err}");
    }

    #[test]
    fn the_documented_configuration_is_valid() {
        let doc = include_str!("../docs/configuration.md");
        let start = doc.find("```toml\n").expect("a toml block") + 8;
        let block = &doc[start..start + doc[start..].find("```").expect("closed")];
        let config: Config = toml::from_str(block).expect("the documented file parses");
        config.validate().expect("and validates");
        let a = config.analytics.resolve(None);
        assert_eq!((a.bar_ns, a.horizon_bars, a.bars_per_year), (1_000_000_000, 23_400.0, 252.0 * 23_400.0));
        assert_eq!(a.scenarios.len(), 5);
    }

    #[test]
    fn kafka_section_passes_client_properties_verbatim() {
        let c: Config = toml::from_str(
            "[kafka]\nbrokers = \"b:1\"\nlateness = \"2s\"\n[kafka.topics]\nmarket_data = \"md\"\n\
             [kafka.consumer]\n\"security.protocol\" = \"SASL_SSL\"\n[kafka.producer]\n\"linger.ms\" = \"20\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.kafka.lateness, Duration::from_secs(2));
        assert_eq!(c.kafka.topics.market_data, "md");
        assert_eq!(c.kafka.topics.instruments, "instruments");
        let s = c.kafka.client_settings();
        assert_eq!(s.consumer["security.protocol"], "SASL_SSL");
        assert_eq!(s.producer["linger.ms"], "20");
        let err = toml::from_str::<Config>("[kafka.topics]\nmarket = \"m\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `market`"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }
}
