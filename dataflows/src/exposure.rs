//! The exposure formulas of DESIGN.md §3 for one position, and the exact sums they roll up in.
//!
//! A position's exposure is computed in the currency of its leg and quantised to an integer
//! count of 1e-9 currency units ("nanos"): linear instruments in integer arithmetic, options
//! through Black-Scholes in `f64`. Sums of nanos are exact, so a retraction cancels to the
//! last unit and a batch recomputation that calls these same functions agrees bit for bit.
//! Conversion to the base currency happens after summing, per currency:
//! `E_usd = Σ_ccy rate(ccy) · nanos_ccy / 1e9` (rates are positive, so gross converts too).
//!
//! This module is formula code: the reconciliation may call it; it holds no dataflow state.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::formulas::{black_scholes, from_nanos, to_nanos, year_fraction, Greeks};
use crate::model::{AssetClass, Fixed, Instrument, OptionType, Ts};

/// An exact amount of money in 1e-9 units of some currency.
pub type Nanos = i128;

/// Nanos per unit of currency.
pub const NANOS: f64 = 1e9;

/// A 3-letter currency code.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ccy(pub [u8; 3]);

impl Ccy {
    pub const USD: Ccy = Ccy(*b"USD");

    /// `None` unless `s` is exactly three ASCII letters.
    pub fn parse(s: &str) -> Option<Ccy> {
        let b = s.as_bytes();
        (b.len() == 3 && b.iter().all(u8::is_ascii_alphabetic)).then(|| Ccy([b[0], b[1], b[2]]))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// The code's three bytes in the low 24 bits, the first highest: integers that order as
    /// the codes do, for keys packed into one word.
    pub fn to_bits(self) -> u32 {
        u32::from_be_bytes([0, self.0[0], self.0[1], self.0[2]])
    }

    /// The code whose bits are the low 24 of `bits` ([`Ccy::to_bits`]'s inverse).
    pub fn from_bits(bits: u32) -> Ccy {
        let [_, a, b, c] = bits.to_be_bytes();
        Ccy([a, b, c])
    }
}

impl fmt::Display for Ccy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Ccy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Ccy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Ccy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ccy, D::Error> {
        let s = String::deserialize(d)?;
        Ccy::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad currency {s:?}")))
    }
}

/// One leg of a position's exposure: an exact amount in one currency.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    pub ccy: Ccy,
    pub nanos: Nanos,
}

/// A position's exposure (DESIGN.md §3), in leg currencies.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Exposure {
    /// The delta exposure E: counted in net, gross, long, short.
    pub delta: Leg,
    /// Gamma exposure q·m·Γ·S²/100 (options), in the delta leg's currency.
    pub gamma: Nanos,
    /// Vega exposure q·m·vega/100 (options, per vol point), in the delta leg's currency.
    pub vega: Nanos,
    /// The quote leg −q·P of an fx position (counted in currency and factor figures only).
    pub quote: Option<Leg>,
}

/// The market inputs an option's exposure needs.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct OptionMarket {
    /// The underlying's price S.
    pub spot: Fixed,
    /// Annualised σ: the option's implied vol if ticked, else the underlying's EWMA vol.
    pub vol: f64,
}

/// Why a position has no exposure figure (yet).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ExposureError {
    #[error("option {0} has no underlying price or volatility yet")]
    NoOptionMarket(String),
    #[error("currency {0:?} is not a 3-letter code")]
    BadCurrency(String),
    #[error("exposure of {0} is not finite")]
    NotFinite(String),
}

/// `a · b` for two 8-decimal values, in nanos (1e-16 → 1e-9 units, rounded half away from zero).
pub fn mul_fixed_nanos(a: Fixed, b: Fixed) -> Nanos {
    div_round(a.0 as i128 * b.0 as i128, 10_000_000)
}

/// `n · m` for nanos times an 8-decimal multiplier, in nanos.
pub fn mul_nanos_fixed(n: Nanos, m: Fixed) -> Nanos {
    div_round(n * m.0 as i128, Fixed::SCALE as i128)
}

/// Integer division rounding half away from zero.
fn div_round(x: i128, d: i128) -> i128 {
    let q = x / d;
    let r = x % d;
    if 2 * r.abs() >= d {
        q + x.signum()
    } else {
        q
    }
}

/// The exposure of `qty` of `inst` at `price` (the instrument's own last price), at event
/// time `now`, with continuously-compounded rate `r` for options.
///
/// - equity: q·P; future: q·m·P (in the instrument's currency);
/// - option: q·m·Δ·S, gamma q·m·Γ·S²/100, vega q·m·vega/100 (Black-Scholes, `option` market);
/// - fx pair BASEQUOTE: q units of BASE (delta leg in BASE), quote leg −q·P in QUOTE.
///
/// Fails for an option without market inputs, or a non-finite result.
pub fn position_exposure(
    inst: &Instrument,
    qty: Fixed,
    price: Fixed,
    option: Option<OptionMarket>,
    now: Ts,
    r: f64,
) -> Result<Exposure, ExposureError> {
    position_exposure_with(inst, qty, price, option, now, r, black_scholes)
}

/// [`position_exposure`] with an option's Black-Scholes figures from `greeks`, called with
/// [`black_scholes`]'s arguments: a caller that values many positions in one option at the
/// same inputs can keep the last result.
pub fn position_exposure_with(
    inst: &Instrument,
    qty: Fixed,
    price: Fixed,
    option: Option<OptionMarket>,
    now: Ts,
    r: f64,
    greeks: impl FnOnce(OptionType, f64, f64, f64, f64, f64) -> Greeks,
) -> Result<Exposure, ExposureError> {
    let valuation = Valuation::of(inst, price, option, now, r, greeks)?;
    valuation.exposure(qty).ok_or_else(|| ExposureError::NotFinite(inst.id.clone()))
}

/// What the exposure of a position needs of its instrument and market at one time, the same
/// for every position in it: [`position_exposure`] is `Valuation::of(..)` then
/// [`Valuation::exposure`] of the quantity, so a caller that values many positions in one
/// instrument can find it once.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Valuation {
    /// An equity (no multiplier) or a future: q·P (·m) in `ccy`.
    Linear { ccy: Ccy, price: Fixed, multiplier: Option<Fixed> },
    /// An fx pair: q units of `base`, −q·P of `quote`.
    Fx { base: Ccy, quote: Ccy, price: Fixed },
    /// An option on `spot` (S): q·m·Δ·S, q·m·Γ·S²/100 and q·m·vega/100 in `ccy`.
    Option { ccy: Ccy, multiplier: f64, spot: f64, greeks: Greeks },
}

impl Valuation {
    /// The valuation of `inst` at `price` (the instrument's own last price), at event time
    /// `now`, with continuously-compounded rate `r` for options and their figures from
    /// `greeks`. Fails for a bad currency or an option without market inputs.
    pub fn of(
        inst: &Instrument,
        price: Fixed,
        option: Option<OptionMarket>,
        now: Ts,
        r: f64,
        greeks: impl FnOnce(OptionType, f64, f64, f64, f64, f64) -> Greeks,
    ) -> Result<Valuation, ExposureError> {
        let ccy = Ccy::parse(&inst.currency).ok_or_else(|| ExposureError::BadCurrency(inst.currency.clone()))?;
        match inst.asset_class {
            AssetClass::Equity => Ok(Valuation::Linear { ccy, price, multiplier: None }),
            AssetClass::Future => Ok(Valuation::Linear { ccy, price, multiplier: Some(inst.multiplier) }),
            AssetClass::Fx => {
                let base = inst.base.as_deref().unwrap_or_default();
                let base = Ccy::parse(base).ok_or_else(|| ExposureError::BadCurrency(base.into()))?;
                Ok(Valuation::Fx { base, quote: ccy, price })
            }
            AssetClass::Option => {
                let market = option.ok_or_else(|| ExposureError::NoOptionMarket(inst.id.clone()))?;
                let (Some(kind), Some(strike), Some(expiry)) = (inst.option_type, inst.strike, inst.expiry) else {
                    return Err(ExposureError::NoOptionMarket(inst.id.clone()));
                };
                let spot = market.spot.to_f64();
                let greeks = greeks(kind, spot, strike.to_f64(), year_fraction(expiry, now), r, market.vol);
                Ok(Valuation::Option { ccy, multiplier: inst.multiplier.to_f64(), spot, greeks })
            }
        }
    }

    /// The currencies of the delta leg and of the quote leg, if any.
    pub fn currencies(&self) -> (Ccy, Option<Ccy>) {
        match *self {
            Valuation::Linear { ccy, .. } | Valuation::Option { ccy, .. } => (ccy, None),
            Valuation::Fx { base, quote, .. } => (base, Some(quote)),
        }
    }

    /// The exposure of `qty`; none if an option's figures are not finite.
    pub fn exposure(&self, qty: Fixed) -> Option<Exposure> {
        let linear = |ccy, nanos| Exposure { delta: Leg { ccy, nanos }, gamma: 0, vega: 0, quote: None };
        match *self {
            Valuation::Linear { ccy, price, multiplier: None } => Some(linear(ccy, mul_fixed_nanos(qty, price))),
            Valuation::Linear { ccy, price, multiplier: Some(m) } => {
                Some(linear(ccy, mul_nanos_fixed(mul_fixed_nanos(qty, price), m)))
            }
            Valuation::Fx { base, quote, price } => Some(Exposure {
                delta: Leg { ccy: base, nanos: qty.0 as i128 * 10 },
                gamma: 0,
                vega: 0,
                quote: Some(Leg { ccy: quote, nanos: -mul_fixed_nanos(qty, price) }),
            }),
            Valuation::Option { ccy, multiplier, spot: s, greeks: g } => {
                let qm = qty.to_f64() * multiplier;
                Some(Exposure {
                    delta: Leg { ccy, nanos: to_nanos(qm * g.delta * s)? },
                    gamma: to_nanos(qm * g.gamma * s * s / 100.0)?,
                    vega: to_nanos(qm * g.vega / 100.0)?,
                    quote: None,
                })
            }
        }
    }
}

/// Exact sums of position exposures in one currency, in nanos. `short` is the sum of the
/// negative delta exposures (≤ 0), so `net = long + short`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sums {
    pub net: Nanos,
    pub gross: Nanos,
    pub long: Nanos,
    pub short: Nanos,
    pub gamma: Nanos,
    pub vega: Nanos,
    /// Number of positions contributing.
    pub positions: i64,
}

impl Sums {
    /// The contribution of one amount (a delta or quote leg) with optional greeks.
    pub fn of_leg(nanos: Nanos, gamma: Nanos, vega: Nanos) -> Sums {
        Sums { net: nanos, gross: nanos.abs(), long: nanos.max(0), short: nanos.min(0), gamma, vega, positions: 1 }
    }

    /// The contribution of a position's delta leg.
    pub fn of_exposure(e: &Exposure) -> Sums {
        Sums::of_leg(e.delta.nanos, e.gamma, e.vega)
    }

    pub fn add(&mut self, o: &Sums) {
        self.net += o.net;
        self.gross += o.gross;
        self.long += o.long;
        self.short += o.short;
        self.gamma += o.gamma;
        self.vega += o.vega;
        self.positions += o.positions;
    }

    pub fn sub(&mut self, o: &Sums) {
        self.net -= o.net;
        self.gross -= o.gross;
        self.long -= o.long;
        self.short -= o.short;
        self.gamma -= o.gamma;
        self.vega -= o.vega;
        self.positions -= o.positions;
    }

    pub fn is_zero(&self) -> bool {
        *self == Sums::default()
    }

    /// These sums in the base currency at `rate` (base units per unit of their currency).
    pub fn to_base(&self, rate: f64) -> BaseSums {
        let c = |n: Nanos| from_nanos(n) * rate;
        BaseSums {
            net: c(self.net),
            gross: c(self.gross),
            long: c(self.long),
            short: c(self.short),
            gamma: c(self.gamma),
            vega: c(self.vega),
            positions: self.positions,
        }
    }
}

/// Exposure sums converted to the base currency (derived figures, `f64`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BaseSums {
    pub net: f64,
    pub gross: f64,
    pub long: f64,
    pub short: f64,
    pub gamma: f64,
    pub vega: f64,
    pub positions: i64,
}

impl BaseSums {
    pub fn add(&mut self, o: &BaseSums) {
        self.net += o.net;
        self.gross += o.gross;
        self.long += o.long;
        self.short += o.short;
        self.gamma += o.gamma;
        self.vega += o.vega;
        self.positions += o.positions;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Date, OptionType};
    use proptest::prelude::*;

    fn inst(json: &str) -> Instrument {
        serde_json::from_str(json).unwrap()
    }

    fn f(x: f64) -> Fixed {
        Fixed::from_f64(x).unwrap()
    }

    #[test]
    fn equity_is_qty_times_price_exactly() {
        let i = inst(r#"{"id":"SAP","asset_class":"equity","currency":"EUR","multiplier":1}"#);
        let e = position_exposure(&i, f(-150.5), f(123.45678901), None, 0, 0.0).unwrap();
        // -150.5 * 123.45678901 = -18580.246746005 exactly.
        assert_eq!(e.delta, Leg { ccy: Ccy(*b"EUR"), nanos: -18_580_246_746_005 });
        assert_eq!((e.gamma, e.vega, e.quote), (0, 0, None));
    }

    #[test]
    fn future_applies_multiplier() {
        let i = inst(r#"{"id":"ESZ6","asset_class":"future","currency":"USD","multiplier":50,"underlying":"SPX"}"#);
        let e = position_exposure(&i, f(3.0), f(5000.25), None, 0, 0.0).unwrap();
        assert_eq!(e.delta.nanos, 750_037_500_000_000); // 3 * 50 * 5000.25 = 750037.5
    }

    #[test]
    fn fx_has_base_and_quote_legs() {
        let i =
            inst(r#"{"id":"USDJPY","asset_class":"fx","currency":"JPY","multiplier":1,"base":"USD","quote":"JPY"}"#);
        let e = position_exposure(&i, f(1_000_000.0), f(150.25), None, 0, 0.0).unwrap();
        assert_eq!(e.delta, Leg { ccy: Ccy::USD, nanos: 1_000_000 * 1_000_000_000 });
        assert_eq!(e.quote, Some(Leg { ccy: Ccy(*b"JPY"), nanos: -150_250_000 * 1_000_000_000 }));
    }

    #[test]
    fn option_delta_exposure_uses_black_scholes() {
        // Hull's example: S=42, K=40, r=10%, σ=20%, T=0.5y → call Δ = N(0.7693) ≈ 0.7791.
        let expiry = Date::parse("2026-07-02").unwrap();
        let now = expiry.start_ts() + crate::model::DAY_NS - (0.5 * 365.25 * crate::model::DAY_NS as f64) as u64;
        let i = Instrument {
            id: "C40".into(),
            asset_class: AssetClass::Option,
            currency: "USD".into(),
            multiplier: f(100.0),
            underlying: Some("X".into()),
            strike: Some(f(40.0)),
            expiry: Some(expiry),
            option_type: Some(OptionType::Call),
            base: None,
            quote: None,
            sector: None,
        };
        let m = OptionMarket { spot: f(42.0), vol: 0.2 };
        let e = position_exposure(&i, f(10.0), f(4.76), Some(m), now, 0.10).unwrap();
        let delta = e.delta.nanos as f64 / NANOS / (10.0 * 100.0 * 42.0);
        assert!((delta - 0.7791).abs() < 5e-5, "{delta}");
        assert!(e.gamma > 0 && e.vega > 0);
        assert_eq!(
            position_exposure(&i, f(10.0), f(4.76), None, now, 0.1),
            Err(ExposureError::NoOptionMarket("C40".into()))
        );
    }

    #[test]
    fn sums_retract_exactly() {
        let mut s = Sums::default();
        let legs = [123_456_789_012_345i128, -9_876_543_210, 42, -1];
        for n in legs {
            s.add(&Sums::of_leg(n, n / 3, -n / 7));
        }
        assert_eq!(s.net, s.long + s.short);
        for n in legs.iter().rev() {
            s.sub(&Sums::of_leg(*n, n / 3, -n / 7));
        }
        assert!(s.is_zero());
    }

    proptest! {
        #[test]
        fn exposure_is_antisymmetric_in_qty(q in -1_000_000_000_000i64..1_000_000_000_000, p in 1i64..100_000_000_000_000,
                                              class in 0usize..3) {
            let json = [
                r#"{"id":"A","asset_class":"equity","currency":"USD","multiplier":1}"#,
                r#"{"id":"F","asset_class":"future","currency":"EUR","multiplier":12.5,"underlying":"I"}"#,
                r#"{"id":"EURJPY","asset_class":"fx","currency":"JPY","multiplier":1,"base":"EUR","quote":"JPY"}"#,
            ][class];
            let i = inst(json);
            let a = position_exposure(&i, Fixed(q), Fixed(p), None, 0, 0.0).unwrap();
            let b = position_exposure(&i, Fixed(-q), Fixed(p), None, 0, 0.0).unwrap();
            prop_assert_eq!(a.delta.nanos, -b.delta.nanos);
            prop_assert_eq!(a.quote.map(|l| l.nanos), b.quote.map(|l| -l.nanos));
            prop_assert_eq!(Sums::of_exposure(&a).gross, Sums::of_exposure(&b).gross);
        }

        #[test]
        fn option_exposure_is_antisymmetric_in_qty(q in -1_000_000i64..1_000_000, s in 1.0f64..500.0, vol in 0.05f64..1.5) {
            let i = Instrument {
                id: "P".into(), asset_class: AssetClass::Option, currency: "USD".into(),
                multiplier: Fixed::from_int(100), underlying: Some("U".into()), strike: Some(Fixed::from_int(100)),
                expiry: Some(Date::parse("2027-01-15").unwrap()), option_type: Some(OptionType::Put),
                base: None, quote: None, sector: None,
            };
            let m = OptionMarket { spot: Fixed::from_f64((s * 100.0).round() / 100.0).unwrap(), vol };
            let now = Date::parse("2026-06-01").unwrap().start_ts();
            let a = position_exposure(&i, Fixed::from_int(q), Fixed::from_int(1), Some(m), now, 0.01).unwrap();
            let b = position_exposure(&i, Fixed::from_int(-q), Fixed::from_int(1), Some(m), now, 0.01).unwrap();
            prop_assert_eq!(a.delta.nanos, -b.delta.nanos);
            prop_assert_eq!(a.gamma, -b.gamma);
            prop_assert_eq!(a.vega, -b.vega);
        }
    }
}
