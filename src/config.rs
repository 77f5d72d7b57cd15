//! `riskflow.toml`: typed configuration, validated once. Every key has a default (shown by
//! `docs/configuration.md`); an unknown key is an error that names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use riskflow_dataflows::model::{Limit, TradingState};
use serde::{Deserialize, Deserializer};

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub engine: EngineConfig,
    pub risk: RiskConfig,
    pub limits: LimitsSection,
    pub output: OutputConfig,
    pub kafka: KafkaConfig,
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
