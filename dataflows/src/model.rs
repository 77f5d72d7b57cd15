//! Input records (DESIGN.md §2) and the exact fixed-point type they are summed in.
//!
//! Every quantity and price is a [`Fixed`]: a signed integer count of 1e-8 units. Decoding
//! rejects any number that has more than eight decimals or is not representable exactly, so
//! a sum of `Fixed` values and its retraction cancel to the last unit.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Event time: nanoseconds since the Unix epoch.
pub type Ts = u64;

/// Nanoseconds in one day of event time.
pub const DAY_NS: Ts = 86_400 * 1_000_000_000;

/// A decimal with exactly eight fractional digits, stored as an integer count of 1e-8.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fixed(pub i64);

/// Why a number cannot be a [`Fixed`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FixedError {
    #[error("{0} is not a finite number")]
    NotFinite(f64),
    #[error("{0} is out of range for 8-decimal fixed point")]
    OutOfRange(f64),
    #[error("{0} has more than 8 decimal places or more than 15 significant digits")]
    Inexact(f64),
}

impl Fixed {
    /// Units per 1.0.
    pub const SCALE: i64 = 100_000_000;
    pub const ZERO: Fixed = Fixed(0);

    /// The fixed-point value of `x`, failing unless `x` is exactly a decimal with at most
    /// eight fractional digits (within the 15 significant digits an `f64` holds exactly).
    pub fn from_f64(x: f64) -> Result<Fixed, FixedError> {
        if !x.is_finite() {
            return Err(FixedError::NotFinite(x));
        }
        let units = (x * Self::SCALE as f64).round();
        // 2^53: beyond it an f64 no longer holds every integer.
        if units.abs() >= 9_007_199_254_740_992.0 {
            return Err(FixedError::OutOfRange(x));
        }
        let fixed = Fixed(units as i64);
        if fixed.to_f64() != x {
            return Err(FixedError::Inexact(x));
        }
        Ok(fixed)
    }

    /// A whole number of units.
    pub const fn from_int(n: i64) -> Fixed {
        Fixed(n * Self::SCALE)
    }

    /// The nearest `f64` (exact for every value `from_f64` accepts).
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn checked_add(self, other: Fixed) -> Option<Fixed> {
        self.0.checked_add(other.0).map(Fixed)
    }
}

impl fmt::Debug for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (int, frac) = (abs / Self::SCALE as u64, abs % Self::SCALE as u64);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let digits = format!("{frac:08}");
            write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// A JSON number in text formats (checked to be exact on the way in); the raw count of 1e-8
/// units in binary ones, which is what timely uses between processes, so that a value with
/// more significant digits than an f64 holds crosses unchanged.
impl Serialize for Fixed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_f64(self.to_f64())
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Fixed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fixed, D::Error> {
        if !d.is_human_readable() {
            return i64::deserialize(d).map(Fixed);
        }
        let x = f64::deserialize(d)?;
        Fixed::from_f64(x).map_err(serde::de::Error::custom)
    }
}

/// A calendar date as days since 1970-01-01, read and written as `YYYY-MM-DD`.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub i32);

impl Date {
    /// Parses `YYYY-MM-DD`; `None` if malformed or not a real date.
    pub fn parse(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let y: i32 = s[0..4].parse().ok()?;
        let m: u32 = s[5..7].parse().ok()?;
        let d: u32 = s[8..10].parse().ok()?;
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        Some(Date(days_from_civil(y, m, d)))
    }

    /// The date containing event time `ts`.
    pub fn of_ts(ts: Ts) -> Date {
        Date((ts / DAY_NS) as i32)
    }

    /// Event time at midnight UTC opening this date.
    pub fn start_ts(self) -> Ts {
        self.0 as Ts * DAY_NS
    }

    /// (year, month, day).
    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(self.0)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = String::deserialize(d)?;
        Date::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a YYYY-MM-DD date")))
    }
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil algorithm (proleptic Gregorian calendar).
fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i32 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i32::from(m <= 2);
    (y, m, d)
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetClass {
    Equity,
    Future,
    Option,
    Fx,
}

impl AssetClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AssetClass::Equity => "equity",
            AssetClass::Future => "future",
            AssetClass::Option => "option",
            AssetClass::Fx => "fx",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptionType {
    Call,
    Put,
}

/// Reference data for one tradable instrument.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instrument {
    pub id: String,
    pub asset_class: AssetClass,
    pub currency: String,
    pub multiplier: Fixed,
    #[serde(default)]
    pub underlying: Option<String>,
    #[serde(default)]
    pub strike: Option<Fixed>,
    #[serde(default)]
    pub expiry: Option<Date>,
    #[serde(default)]
    pub option_type: Option<OptionType>,
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub quote: Option<String>,
    #[serde(default)]
    pub sector: Option<String>,
}

impl Instrument {
    /// A plain equity (multiplier 1) in `currency`, with no other field set.
    pub fn equity(id: impl Into<String>, currency: impl Into<String>) -> Instrument {
        Instrument {
            id: id.into(),
            asset_class: AssetClass::Equity,
            currency: currency.into(),
            multiplier: Fixed::from_int(1),
            underlying: None,
            strike: None,
            expiry: None,
            option_type: None,
            base: None,
            quote: None,
            sector: None,
        }
    }

    /// Checks the fields each asset class needs; the error is a dead-letter reason.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() {
            return Err("instrument id is empty".into());
        }
        if self.currency.len() != 3 {
            return Err(format!("currency {:?} is not a 3-letter code", self.currency));
        }
        if !self.multiplier.is_positive() {
            return Err(format!("multiplier {} is not positive", self.multiplier));
        }
        match self.asset_class {
            AssetClass::Equity => Ok(()),
            AssetClass::Future => Ok(()),
            AssetClass::Option => {
                if self.underlying.as_deref().unwrap_or("").is_empty() {
                    return Err("option has no underlying".into());
                }
                match self.strike {
                    Some(k) if k.is_positive() => {}
                    Some(k) => return Err(format!("option strike {k} is not positive")),
                    None => return Err("option has no strike".into()),
                }
                if self.expiry.is_none() {
                    return Err("option has no expiry".into());
                }
                if self.option_type.is_none() {
                    return Err("option has no option_type".into());
                }
                Ok(())
            }
            AssetClass::Fx => {
                let (Some(base), Some(quote)) = (&self.base, &self.quote) else {
                    return Err("fx instrument needs base and quote".into());
                };
                if base.len() != 3 || quote.len() != 3 || base == quote {
                    return Err(format!("fx pair {base}/{quote} is not two distinct 3-letter codes"));
                }
                if *quote != self.currency {
                    return Err(format!("fx instrument currency {} differs from its quote {quote}", self.currency));
                }
                Ok(())
            }
        }
    }

    /// The name of the instrument this one's risk maps to: its underlying, or itself.
    pub fn underlying_id(&self) -> &str {
        self.underlying.as_deref().unwrap_or(&self.id)
    }
}

/// An account and its place in the account → desk → firm hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub desk: String,
    #[serde(default)]
    pub firm: Option<String>,
}

impl Account {
    /// The firm's name when the record names none.
    pub const DEFAULT_FIRM: &'static str = "FIRM";

    pub fn firm(&self) -> &str {
        self.firm.as_deref().unwrap_or(Self::DEFAULT_FIRM)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.desk.is_empty() {
            return Err("account id and desk must not be empty".into());
        }
        Ok(())
    }
}

/// A market-data tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    pub ts: Ts,
    pub instrument: String,
    pub price: Fixed,
    #[serde(default)]
    pub bid: Option<Fixed>,
    #[serde(default)]
    pub ask: Option<Fixed>,
    /// Annualised implied volatility (options).
    #[serde(default)]
    pub iv: Option<f64>,
}

impl Tick {
    pub fn validate(&self) -> Result<(), String> {
        if !self.price.is_positive() {
            return Err(format!("price {} is not positive", self.price));
        }
        if let Some(iv) = self.iv {
            if !(iv.is_finite() && iv > 0.0) {
                return Err(format!("iv {iv} is not a positive finite number"));
            }
        }
        Ok(())
    }
}

/// A signed change to one account's position in one instrument (a fill).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Unique per fill: a second delta with the same id is a redelivery and changes nothing.
    pub id: String,
    pub ts: Ts,
    pub account: String,
    pub instrument: String,
    pub qty: Fixed,
}

impl Delta {
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() {
            return Err("delta id is empty".into());
        }
        Ok(())
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Account,
    Desk,
    Firm,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Account, Scope::Desk, Scope::Firm];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Desk => "desk",
            Scope::Firm => "firm",
        }
    }
}

/// A limit on one metric of one scope. Unknown fields are rejected: a misspelt `warn_at`
/// must not silently fall back to the default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub id: String,
    pub scope: Scope,
    pub scope_id: String,
    pub metric: String,
    pub limit: f64,
    #[serde(default)]
    pub warn_at: Option<f64>,
    /// A hard limit's BREACH changes the scope's trading state (default true).
    #[serde(default)]
    pub hard: Option<bool>,
    /// The trading state a breach of this hard limit sets: `reducing` or `halted`
    /// (default: the configured one).
    #[serde(default)]
    pub action: Option<TradingState>,
    /// `false` removes the limit (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A scope's trading state, set by breaches of hard limits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TradingState {
    #[serde(alias = "active")]
    Active,
    #[serde(alias = "reducing")]
    Reducing,
    #[serde(alias = "halted")]
    Halted,
}

impl TradingState {
    pub fn as_str(self) -> &'static str {
        match self {
            TradingState::Active => "ACTIVE",
            TradingState::Reducing => "REDUCING",
            TradingState::Halted => "HALTED",
        }
    }
}

/// What a replay file or Kafka topic carries.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Instrument,
    Account,
    Limit,
    Tick,
    Delta,
}

impl Kind {
    /// The dataset file this kind is replayed from.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Instrument => "instruments.jsonl",
            Kind::Account => "accounts.jsonl",
            Kind::Limit => "limits.jsonl",
            Kind::Tick => "market.jsonl",
            Kind::Delta => "positions.jsonl",
        }
    }

    /// The default Kafka topic of this kind.
    pub fn topic(self) -> &'static str {
        match self {
            Kind::Instrument => "instruments",
            Kind::Account => "accounts",
            Kind::Limit => "limits",
            Kind::Tick => "market-data",
            Kind::Delta => "position-deltas",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_round_trips_eight_decimals() {
        for s in ["0.1", "123.45678901", "-0.00000001", "9999999.99999999", "0", "-42"] {
            let f = Fixed::from_f64(s.parse().unwrap()).unwrap();
            assert_eq!(f.to_string(), s);
        }
        assert_eq!(Fixed::from_f64(0.3).unwrap(), Fixed(30_000_000));
        assert_eq!(Fixed::from_f64(-2.5).unwrap(), Fixed(-250_000_000));
    }

    #[test]
    fn fixed_crosses_processes_exactly() {
        // Timely exchanges data between processes with bincode: 16 significant digits, more
        // than an f64 keeps, must arrive unchanged (a cluster once failed on such a quantity).
        for f in [Fixed(3_865_246_131_293_257), Fixed(i64::MIN), Fixed(-1), Fixed(i64::MAX)] {
            let bytes = bincode::serialize(&f).unwrap();
            assert_eq!(bincode::deserialize::<Fixed>(&bytes).unwrap(), f);
        }
        assert_eq!(serde_json::to_string(&Fixed(250_000_000)).unwrap(), "2.5");
    }

    #[test]
    fn fixed_rejects_inexact_and_non_finite() {
        assert!(matches!(Fixed::from_f64(0.123456789), Err(FixedError::Inexact(_))));
        assert!(matches!(Fixed::from_f64(f64::NAN), Err(FixedError::NotFinite(_))));
        assert!(matches!(Fixed::from_f64(1e300), Err(FixedError::OutOfRange(_))));
        let err = serde_json::from_str::<Fixed>("1.000000001").unwrap_err();
        assert!(err.to_string().contains("more than 8 decimal places"), "{err}");
    }

    #[test]
    fn fixed_sums_cancel_exactly() {
        let xs = [0.1, 0.2, 0.30000001, 1234.5678, -77.00000009];
        let sum: i64 = xs.iter().map(|x| Fixed::from_f64(*x).unwrap().0).sum();
        let back: i64 = xs.iter().map(|x| -Fixed::from_f64(*x).unwrap().0).sum();
        assert_eq!(sum + back, 0);
        assert_eq!(Fixed(sum).to_string(), "1158.16779992");
    }

    #[test]
    fn dates_parse_and_print() {
        let d = Date::parse("2020-03-16").unwrap();
        assert_eq!(d.0, 18_337);
        assert_eq!(d.to_string(), "2020-03-16");
        assert_eq!(Date::parse("1970-01-01").unwrap().0, 0);
        assert_eq!(Date::parse("2024-02-29").unwrap().to_string(), "2024-02-29");
        assert!(Date::parse("2023-02-29").is_none());
        assert!(Date::parse("2023-13-01").is_none());
        assert!(Date::parse("20230101").is_none());
        assert_eq!(Date::of_ts(d.start_ts() + 5), d);
    }

    #[test]
    fn instruments_validate_per_asset_class() {
        let opt: Instrument = serde_json::from_str(
            r#"{"id":"AAPL_C","asset_class":"option","currency":"USD","multiplier":100,
                "underlying":"AAPL","strike":150,"expiry":"2026-12-18","option_type":"call"}"#,
        )
        .unwrap();
        assert_eq!(opt.validate(), Ok(()));
        let mut bad = opt.clone();
        bad.strike = None;
        assert_eq!(bad.validate(), Err("option has no strike".into()));
        let fx: Instrument = serde_json::from_str(
            r#"{"id":"EURUSD","asset_class":"fx","currency":"USD","multiplier":1,"base":"EUR","quote":"USD"}"#,
        )
        .unwrap();
        assert_eq!(fx.validate(), Ok(()));
        assert_eq!(fx.underlying_id(), "EURUSD");
    }
}
