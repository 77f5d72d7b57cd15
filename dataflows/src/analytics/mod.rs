//! Risk analytics (docs/analytics.md): bars and returns, EWMA and windowed volatility, EWMA
//! covariance and correlation, VaR/ES, stress and regime signals.

pub mod config;

pub use config::{AnalyticsConfig, LimitMethod, RegimeConfig, Scenario, Shock};
