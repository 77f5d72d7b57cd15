//! The static part of a dataset: the instrument universe (equities in four currencies with
//! sectors, indices, index futures, listed options, FX pairs), the desks, and the accounts
//! with their books.
//!
//! Named equities use real tickers with made-up, merely plausible price levels; beyond the
//! named lists, synthetic tickers (`US0001`, `EU0001.DE`, `GB0001.L`, `JP0001.T`) fill the
//! universe up to the requested size.

use riskflow_dataflows::model::{Account, AssetClass, Date, Fixed, Instrument, OptionType, Ts};

use crate::rng::{Alias, Rng};
use crate::write::json_str;
use crate::Plan;

/// Price units (1e-8) per 1.0.
pub(crate) const UNIT: i64 = 100_000_000;

/// The four currencies of the universe; USD is the base currency.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ccy {
    Usd = 0,
    Eur = 1,
    Gbp = 2,
    Jpy = 3,
}

impl Ccy {
    pub const ALL: [Ccy; 4] = [Ccy::Usd, Ccy::Eur, Ccy::Gbp, Ccy::Jpy];

    pub fn code(self) -> &'static str {
        ["USD", "EUR", "GBP", "JPY"][self as usize]
    }

    /// USD per unit of this currency at the start of the dataset.
    pub fn rate0(self) -> f64 {
        [1.0, 1.165, 1.335, 1.0 / 154.2][self as usize]
    }

    /// Annualised volatility of the currency against USD (calm regime).
    pub fn sigma(self) -> f64 {
        [0.0, 0.075, 0.085, 0.10][self as usize]
    }

    /// Loadings of the currency's log USD rate on (the global market factor, its own factor)
    /// in regime `r` (0 calm, 1 stressed). The yen strengthens when equities fall. Stressed
    /// loadings are scaled by 0.6, so FX volatility rises 1.8× (not 3×) in stress.
    pub fn loadings(self, r: usize) -> (f64, f64) {
        let rho = match self {
            Ccy::Usd => return (0.0, 0.0),
            Ccy::Eur => [0.15, 0.30],
            Ccy::Gbp => [0.20, 0.35],
            Ccy::Jpy => [-0.30, -0.55],
        }[r];
        let k = [1.0, FX_STRESS_SCALE][r];
        (k * rho, k * (1.0 - rho * rho).sqrt())
    }
}

/// Scale of FX loadings in the stressed regime.
pub(crate) const FX_STRESS_SCALE: f64 = 0.6;

/// GICS-like sectors with a volatility multiplier each.
pub(crate) const SECTORS: [(&str, f64); 11] = [
    ("Technology", 1.2),
    ("Financials", 1.1),
    ("Health Care", 0.95),
    ("Energy", 1.1),
    ("Industrials", 1.0),
    ("Consumer Discretionary", 1.1),
    ("Consumer Staples", 0.8),
    ("Utilities", 0.75),
    ("Materials", 1.05),
    ("Communication Services", 1.0),
    ("Real Estate", 0.9),
];

/// Number of risk factors of the price model: global market, four regions, the sectors and
/// three currencies (EUR, GBP, JPY against USD).
pub(crate) const NF: usize = 1 + 4 + SECTORS.len() + 3;
pub(crate) const F_MARKET: usize = 0;

pub(crate) fn f_region(c: Ccy) -> usize {
    1 + c as usize
}

pub(crate) fn f_sector(s: usize) -> usize {
    5 + s
}

/// The currency factor of a non-USD currency.
pub(crate) fn f_fx(c: Ccy) -> usize {
    5 + SECTORS.len() + c as usize - 1
}

const TE: usize = 0; // sector indices, for the tables below
const FI: usize = 1;
const HC: usize = 2;
const EN: usize = 3;
const IN: usize = 4;
const CD: usize = 5;
const CS: usize = 6;
const UT: usize = 7;
const MA: usize = 8;
const CO: usize = 9;
const RE: usize = 10;

/// Named equities per currency: (ticker, sector, start price), most liquid first.
const US_STOCKS: &[(&str, usize, f64)] = &[
    ("AAPL", TE, 270.0),
    ("MSFT", TE, 480.0),
    ("NVDA", TE, 180.0),
    ("AMZN", CD, 225.0),
    ("JPM", FI, 300.0),
    ("XOM", EN, 115.0),
    ("JNJ", HC, 195.0),
    ("GOOGL", CO, 280.0),
    ("PG", CS, 150.0),
    ("CAT", IN, 550.0),
    ("NEE", UT, 80.0),
    ("META", CO, 600.0),
    ("BAC", FI, 50.0),
    ("CVX", EN, 150.0),
    ("UNH", HC, 330.0),
    ("KO", CS, 70.0),
    ("HD", CD, 360.0),
    ("LIN", MA, 430.0),
    ("PLD", RE, 125.0),
    ("TSLA", CD, 430.0),
    ("V", FI, 340.0),
    ("LLY", HC, 1000.0),
    ("WMT", CS, 100.0),
    ("GE", IN, 290.0),
    ("DUK", UT, 120.0),
    ("ORCL", TE, 220.0),
    ("AMD", TE, 240.0),
    ("BA", IN, 210.0),
    ("AMT", RE, 185.0),
    ("NFLX", CO, 110.0),
];
const EU_STOCKS: &[(&str, usize, f64)] = &[
    ("ASML.AS", TE, 900.0),
    ("SAP.DE", TE, 210.0),
    ("SIE.DE", IN, 230.0),
    ("TTE.PA", EN, 55.0),
    ("ALV.DE", FI, 360.0),
    ("MC.PA", CD, 600.0),
    ("SAN.MC", FI, 9.0),
    ("OR.PA", CS, 370.0),
    ("IBE.MC", UT, 17.0),
    ("SAN.PA", HC, 85.0),
    ("BAS.DE", MA, 44.0),
    ("DTE.DE", CO, 27.0),
    ("AIR.PA", IN, 200.0),
    ("BNP.PA", FI, 75.0),
    ("ENEL.MI", UT, 8.5),
    ("VOW3.DE", CD, 100.0),
];
const GB_STOCKS: &[(&str, usize, f64)] = &[
    ("HSBA.L", FI, 10.5),
    ("SHEL.L", EN, 27.0),
    ("AZN.L", HC, 130.0),
    ("ULVR.L", CS, 45.0),
    ("RIO.L", MA, 52.0),
    ("BP.L", EN, 4.3),
    ("GSK.L", HC, 17.0),
    ("LSEG.L", FI, 90.0),
    ("NG.L", UT, 11.0),
    ("REL.L", IN, 35.0),
    ("BARC.L", FI, 4.2),
];
const JP_STOCKS: &[(&str, usize, f64)] = &[
    ("7203.T", CD, 2900.0),
    ("6758.T", TE, 4200.0),
    ("8306.T", FI, 2300.0),
    ("9984.T", CO, 18000.0),
    ("8035.T", TE, 30000.0),
    ("6501.T", IN, 4600.0),
    ("4502.T", HC, 4300.0),
    ("4063.T", MA, 4800.0),
    ("7974.T", CO, 12000.0),
    ("8316.T", FI, 4300.0),
    ("9983.T", CD, 55000.0),
    ("8058.T", IN, 3500.0),
];

/// An equity index, its future and its option contract terms.
struct IndexDef {
    id: &'static str,
    ccy: Ccy,
    p0: f64,
    sigma: f64,
    fut_root: &'static str,
    fut_mult: i64,
    /// Future price increment, 1e-8 units.
    fut_tick: i64,
    /// Future/spot basis.
    basis: f64,
    opt_mult: i64,
}

const INDICES: [IndexDef; 4] = [
    IndexDef {
        id: "SPX",
        ccy: Ccy::Usd,
        p0: 6850.0,
        sigma: 0.13,
        fut_root: "ES",
        fut_mult: 50,
        fut_tick: UNIT / 4,
        basis: 0.003,
        opt_mult: 100,
    },
    IndexDef {
        id: "SX5E",
        ccy: Ccy::Eur,
        p0: 5700.0,
        sigma: 0.15,
        fut_root: "FESX",
        fut_mult: 10,
        fut_tick: UNIT,
        basis: -0.004,
        opt_mult: 10,
    },
    IndexDef {
        id: "NKY",
        ccy: Ccy::Jpy,
        p0: 49000.0,
        sigma: 0.17,
        fut_root: "NK",
        fut_mult: 1000,
        fut_tick: 10 * UNIT,
        basis: -0.002,
        opt_mult: 1000,
    },
    IndexDef {
        id: "UKX",
        ccy: Ccy::Gbp,
        p0: 9800.0,
        sigma: 0.12,
        fut_root: "Z",
        fut_mult: 10,
        fut_tick: UNIT / 2,
        basis: -0.002,
        opt_mult: 10,
    },
];

/// The FX pairs: (id, base, quote, half-spread in price increments).
const PAIRS: [(&str, Ccy, Ccy, i64); 4] = [
    ("EURUSD", Ccy::Eur, Ccy::Usd, 1),
    ("GBPUSD", Ccy::Gbp, Ccy::Usd, 1),
    ("USDJPY", Ccy::Usd, Ccy::Jpy, 2),
    ("EURJPY", Ccy::Eur, Ccy::Jpy, 2),
];

/// Loadings of an equity-like instrument on the price model's factors.
#[derive(Clone, Debug)]
pub(crate) struct Loadings {
    /// (factor, [calm, stressed] loading).
    pub factors: [(usize, [f64; 2]); 3],
    /// Idiosyncratic variance share, [calm, stressed].
    pub idio: [f64; 2],
}

impl Loadings {
    fn new(factors: [(usize, [f64; 2]); 3]) -> Loadings {
        let idio = [0, 1].map(|r| 1.0 - factors.iter().map(|(_, l)| l[r] * l[r]).sum::<f64>());
        Loadings { factors, idio }
    }
}

/// What kind of instrument, with the terms the price model needs.
#[derive(Clone, Debug)]
pub(crate) enum Class {
    Stock,
    Index,
    Future { under: usize, basis: f64 },
    Option { under: usize, strike: f64, expiry: Date, kind: OptionType, skew: f64, curv: f64 },
    Fx { base: Ccy, quote: Ccy },
}

/// One instrument with everything the generator needs to price and trade it.
#[derive(Clone, Debug)]
pub(crate) struct Inst {
    pub record: Instrument,
    /// The id as a JSON string literal.
    pub json_id: Vec<u8>,
    pub class: Class,
    pub ccy: Ccy,
    pub mult: f64,
    /// Annualised calm-regime volatility (stocks and indices).
    pub sigma: f64,
    /// Factor loadings (stocks and indices).
    pub load: Option<Loadings>,
    /// Start price (for derivatives: an estimate used for sizing).
    pub p0: f64,
    /// Price increment in 1e-8 units.
    pub tick: i64,
    /// Half-spread in price increments (0: no bid/ask quoted).
    pub half_spread: i64,
    /// Quantity units (1e-8) per lot: 100 shares, 1 contract, 100k of FX base currency.
    pub lot: i64,
    /// Typical lots per fill.
    pub lots: f64,
    /// Liquidity weight (books and fills).
    pub liq: f64,
    /// Weight in the random tick schedule.
    pub tick_w: f64,
}

impl Inst {
    /// The instrument whose price drives this one's risk: itself or its underlying.
    pub fn under(&self, me: usize) -> usize {
        match self.class {
            Class::Future { under, .. } | Class::Option { under, .. } => under,
            _ => me,
        }
    }

    pub fn is_tradable(&self) -> bool {
        !matches!(self.class, Class::Index)
    }
}

/// The instrument universe.
pub(crate) struct Universe {
    pub insts: Vec<Inst>,
    pub stocks: Vec<usize>,
    pub futures: Vec<usize>,
    pub options: Vec<usize>,
    pub fx: Vec<usize>,
}

fn fixed(x: f64) -> Fixed {
    Fixed((x * UNIT as f64).round() as i64)
}

/// The price increment of an equity by currency and price level, in 1e-8 units.
fn stock_tick(ccy: Ccy, p: f64) -> i64 {
    match ccy {
        Ccy::Usd => UNIT / 100,
        Ccy::Eur | Ccy::Gbp if p < 10.0 => UNIT / 1000,
        Ccy::Eur | Ccy::Gbp => UNIT / 100,
        Ccy::Jpy if p < 10_000.0 => UNIT,
        Ccy::Jpy if p < 30_000.0 => 5 * UNIT,
        Ccy::Jpy => 10 * UNIT,
    }
}

/// Strike spacing by price level.
fn strike_step(s: f64) -> f64 {
    match s {
        s if s < 5.0 => 0.1,
        s if s < 25.0 => 0.5,
        s if s < 100.0 => 1.0,
        s if s < 250.0 => 2.5,
        s if s < 1000.0 => 5.0,
        s if s < 2500.0 => 25.0,
        s if s < 10_000.0 => 50.0,
        s if s < 25_000.0 => 100.0,
        s if s < 60_000.0 => 250.0,
        _ => 500.0,
    }
}

/// Third Friday of the month `months_ahead` after the month of `d`.
pub(crate) fn third_friday(d: Date, months_ahead: u32) -> Date {
    let (y, m, _) = d.ymd();
    let idx = (y * 12 + m as i32 - 1) + months_ahead as i32;
    let (y, m) = (idx.div_euclid(12), idx.rem_euclid(12) as u32 + 1);
    let first = Date::parse(&format!("{y:04}-{m:02}-01")).expect("a valid date");
    // 1970-01-01 (day 0) was a Thursday: weekday 0 = Monday.
    let weekday = (first.0 + 3).rem_euclid(7);
    let to_friday = (4 - weekday).rem_euclid(7);
    Date(first.0 + to_friday + 14)
}

/// The quarterly contract code (`H6`, `M6`...) of the front future at `start`.
fn front_month_code(start: Ts) -> String {
    let d = Date::of_ts(start);
    let (_, m, _) = d.ymd();
    let mut ahead = (3 - m % 3) % 3;
    loop {
        let exp = third_friday(d, ahead);
        if exp > d {
            let (y, m, _) = exp.ymd();
            let letter = match m {
                3 => 'H',
                6 => 'M',
                9 => 'U',
                _ => 'Z',
            };
            return format!("{letter}{}", y % 10);
        }
        ahead += 3;
    }
}

/// Splits `n` in proportion to `weights` (largest remainder).
pub(crate) fn apportion(n: usize, weights: &[f64]) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| n as f64 * w / total).collect();
    let mut out: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut left = n - out.iter().sum::<usize>();
    for i in order {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

/// Option chain order: (moneyness K/S, type) within one expiry.
const CHAIN: [(f64, OptionType); 10] = [
    (1.0, OptionType::Call),
    (0.95, OptionType::Put),
    (1.05, OptionType::Call),
    (1.0, OptionType::Put),
    (0.9, OptionType::Put),
    (1.1, OptionType::Call),
    (0.95, OptionType::Call),
    (1.05, OptionType::Put),
    (0.9, OptionType::Call),
    (1.1, OptionType::Put),
];
/// Expiries in months after the start date, in the order chains use them.
const EXPIRIES: [u32; 6] = [1, 3, 6, 2, 4, 5];

pub(crate) fn build_universe(plan: &Plan, rng: &mut Rng) -> Universe {
    let mut insts: Vec<Inst> = Vec::with_capacity(plan.instruments);
    let start_date = Date::of_ts(plan.start_ts);

    // Indices first: they are the underlyings of futures and index options.
    let mut indices = Vec::new();
    for def in &INDICES {
        indices.push(insts.len());
        let factors = [
            (F_MARKET, [0.45f64.sqrt(), 0.70f64.sqrt()]),
            (f_region(def.ccy), [0.50f64.sqrt(), 0.28f64.sqrt()]),
            (f_sector(0), [0.0, 0.0]),
        ];
        insts.push(Inst {
            record: Instrument { sector: Some("index".into()), ..Instrument::equity(def.id, def.ccy.code()) },
            json_id: json_str(def.id),
            class: Class::Index,
            ccy: def.ccy,
            mult: 1.0,
            sigma: def.sigma,
            load: Some(Loadings::new(factors)),
            p0: def.p0,
            tick: UNIT / 100,
            half_spread: 0,
            lot: UNIT,
            lots: 1.0,
            liq: 0.0,
            tick_w: 6.0,
        });
    }

    // Equities, per currency: named tickers first, then synthetic ones.
    let shares = apportion(plan.stocks, &[0.5, 0.2, 0.12, 0.18]);
    let mut stocks = Vec::new();
    for (c, &n) in Ccy::ALL.iter().zip(&shares) {
        let (named, prefix, suffix, median, ccy_liq) = match c {
            Ccy::Usd => (US_STOCKS, "US", "", 60.0, 1.0),
            Ccy::Eur => (EU_STOCKS, "EU", ".DE", 35.0, 0.7),
            Ccy::Gbp => (GB_STOCKS, "GB", ".L", 8.0, 0.5),
            Ccy::Jpy => (JP_STOCKS, "JP", ".T", 2500.0, 0.6),
        };
        for rank in 0..n {
            let (id, sector, p0, is_named) = match named.get(rank) {
                Some(&(id, s, p)) => (id.to_string(), s, p, true),
                None => {
                    let k = rank - named.len() + 1;
                    let sector = rng.index(SECTORS.len());
                    let p = (median * (0.9 * rng.normal()).exp()).clamp(median / 20.0, median * 15.0);
                    (format!("{prefix}{k:04}{suffix}"), sector, p, false)
                }
            };
            let tick = stock_tick(*c, p0);
            let p0 = ((p0 * UNIT as f64 / tick as f64).round() as i64).max(50) as f64 * tick as f64 / UNIT as f64;
            let vol = 0.20 * SECTORS[sector].1 * (0.2 * rng.normal()).exp() * if is_named { 1.0 } else { 1.2 };
            let liq = ccy_liq / (rank as f64 + 3.0).powf(0.8) * 3.0f64.powf(0.8);
            let usd = p0 * c.rate0();
            let lots = (150_000.0 / (100.0 * usd)).clamp(1.0, 200.0);
            let factors = [
                (F_MARKET, [0.15f64.sqrt(), 0.40f64.sqrt()]),
                (f_region(*c), [0.10f64.sqrt(), 0.15f64.sqrt()]),
                (f_sector(sector), [0.15f64.sqrt(), 0.15f64.sqrt()]),
            ];
            stocks.push(insts.len());
            insts.push(Inst {
                record: Instrument {
                    id: id.clone(),
                    asset_class: AssetClass::Equity,
                    currency: c.code().into(),
                    multiplier: Fixed::from_int(1),
                    underlying: None,
                    strike: None,
                    expiry: None,
                    option_type: None,
                    base: None,
                    quote: None,
                    sector: Some(SECTORS[sector].0.into()),
                },
                json_id: json_str(&id),
                class: Class::Stock,
                ccy: *c,
                mult: 1.0,
                sigma: vol.clamp(0.12, 0.6),
                load: Some(Loadings::new(factors)),
                p0,
                tick,
                half_spread: if is_named { 1 } else { 1 + rng.below(3) as i64 },
                lot: 100 * UNIT,
                lots,
                liq,
                tick_w: 0.5 + 4.0 * liq,
            });
        }
    }

    // Index futures.
    let mut futures = Vec::new();
    let code = front_month_code(plan.start_ts);
    for (def, &under) in INDICES.iter().zip(&indices).take(plan.futures) {
        let id = if plan.daily { format!("{}1", def.fut_root) } else { format!("{}{code}", def.fut_root) };
        let p0 = def.p0 * (1.0 + def.basis);
        let notional = def.fut_mult as f64 * p0 * def.ccy.rate0();
        futures.push(insts.len());
        insts.push(Inst {
            record: Instrument {
                id: id.clone(),
                asset_class: AssetClass::Future,
                currency: def.ccy.code().into(),
                multiplier: Fixed::from_int(def.fut_mult),
                underlying: Some(def.id.into()),
                strike: None,
                expiry: None,
                option_type: None,
                base: None,
                quote: None,
                sector: None,
            },
            json_id: json_str(&id),
            class: Class::Future { under, basis: def.basis },
            ccy: def.ccy,
            mult: def.fut_mult as f64,
            sigma: 0.0,
            load: None,
            p0,
            tick: def.fut_tick,
            half_spread: 1,
            lot: UNIT,
            lots: (1_500_000.0 / notional).max(1.0),
            liq: 1.0,
            tick_w: 6.0,
        });
    }

    // Listed European options: chains on the indices and the most liquid equities.
    let mut options = Vec::new();
    if plan.options > 0 {
        let mut unders: Vec<usize> = Vec::new();
        let by_ccy = |c: Ccy| -> Vec<usize> { stocks.iter().copied().filter(|&i| insts[i].ccy == c).collect() };
        let us = by_ccy(Ccy::Usd);
        let eu = by_ccy(Ccy::Eur);
        let preferred = [
            Some(indices[0]),
            Some(indices[1]),
            us.first().copied(),
            Some(indices[2]),
            us.get(1).copied(),
            eu.first().copied(),
            Some(indices[3]),
        ];
        unders.extend(preferred.into_iter().flatten());
        let mut rest: Vec<usize> = stocks.iter().copied().filter(|i| !unders.contains(i)).collect();
        rest.sort_by(|&a, &b| insts[b].liq.total_cmp(&insts[a].liq).then(a.cmp(&b)));
        unders.extend(rest);
        let per = plan.option_chain.max(plan.options.div_ceil(unders.len())).min(CHAIN.len() * EXPIRIES.len());
        let mut left = plan.options;
        for (j, &u) in unders.iter().enumerate() {
            if left == 0 {
                break;
            }
            let ui = &insts[u];
            let (s0, ccy, is_index) = (ui.p0, ui.ccy, matches!(ui.class, Class::Index));
            let under_id = ui.record.id.clone();
            let opt_mult = if is_index {
                INDICES.iter().find(|d| d.id == under_id).map_or(100, |d| d.opt_mult)
            } else if ccy == Ccy::Gbp {
                1000
            } else {
                100
            };
            let (skew, curv) = if is_index { (-0.8, 1.5) } else { (-0.4, 1.0) };
            let step = strike_step(s0);
            let opt_tick = if ccy == Ccy::Jpy {
                UNIT
            } else if is_index {
                UNIT / 20
            } else {
                UNIT / 100
            };
            let mut made = 0;
            'chain: for e in 0..EXPIRIES.len() {
                let months = EXPIRIES[(e + j) % EXPIRIES.len()];
                let expiry = third_friday(start_date, months);
                for &(m, kind) in &CHAIN {
                    if made == per || left == 0 {
                        break 'chain;
                    }
                    let strike = ((s0 * m / step).round() * step).max(step);
                    let (y, mo, d) = expiry.ymd();
                    let letter = match kind {
                        OptionType::Call => 'C',
                        OptionType::Put => 'P',
                    };
                    let id = format!("{under_id}-{:02}{mo:02}{d:02}-{letter}{}", y % 100, fixed(strike));
                    if insts.iter().rev().take(64).any(|i| i.record.id == id) {
                        continue;
                    }
                    options.push(insts.len());
                    insts.push(Inst {
                        record: Instrument {
                            id: id.clone(),
                            asset_class: AssetClass::Option,
                            currency: ccy.code().into(),
                            multiplier: Fixed::from_int(opt_mult),
                            underlying: Some(under_id.clone()),
                            strike: Some(fixed(strike)),
                            expiry: Some(expiry),
                            option_type: Some(kind),
                            base: None,
                            quote: None,
                            sector: None,
                        },
                        json_id: json_str(&id),
                        class: Class::Option { under: u, strike, expiry, kind, skew, curv },
                        ccy,
                        mult: opt_mult as f64,
                        sigma: 0.0,
                        load: None,
                        p0: s0 * 0.04,
                        tick: opt_tick,
                        half_spread: 1,
                        lot: UNIT,
                        lots: 10.0,
                        liq: 0.3,
                        tick_w: 0.6,
                    });
                    made += 1;
                    left -= 1;
                }
            }
        }
    }

    // FX pairs.
    let mut fx = Vec::new();
    for &(id, base, quote, half_spread) in &PAIRS {
        let p0 = base.rate0() / quote.rate0();
        let tick = if quote == Ccy::Jpy { UNIT / 1000 } else { UNIT / 100_000 };
        fx.push(insts.len());
        insts.push(Inst {
            record: Instrument {
                id: id.into(),
                asset_class: AssetClass::Fx,
                currency: quote.code().into(),
                multiplier: Fixed::from_int(1),
                underlying: None,
                strike: None,
                expiry: None,
                option_type: None,
                base: Some(base.code().into()),
                quote: Some(quote.code().into()),
                sector: None,
            },
            json_id: json_str(id),
            class: Class::Fx { base, quote },
            ccy: quote,
            mult: 1.0,
            sigma: 0.0,
            load: None,
            p0,
            tick,
            half_spread,
            lot: 100_000 * UNIT,
            lots: 20.0,
            liq: 1.0,
            tick_w: 8.0,
        });
    }

    Universe { insts, stocks, futures, options, fx }
}

/// A desk and the instruments its accounts trade.
pub(crate) struct Desk {
    pub name: &'static str,
    pub universe: Vec<usize>,
    alias: Alias,
}

/// An account with its book: the instruments it holds and trades, and its positions.
pub(crate) struct Acct {
    pub record: Account,
    pub json_id: Vec<u8>,
    pub desk: usize,
    /// Instrument indices of the book.
    pub book: Vec<u32>,
    /// Current position per book entry, 1e-8 units.
    pub qty: Vec<i64>,
    /// Relative trading activity.
    pub activity: f64,
    /// An accumulating account keeps adding to one position (book index, direction): the
    /// story behind the limits designed to breach.
    pub main: Option<(usize, i64)>,
}

/// Builds the desks and the accounts with their books (no positions yet).
pub(crate) fn build_accounts(plan: &Plan, u: &Universe, rng: &mut Rng) -> (Vec<Desk>, Vec<Acct>) {
    let has_asia = plan.accounts >= 50;
    let mut names: Vec<(&'static str, f64)> = vec![("EQ-US", 3.0), ("EQ-EU", 2.0)];
    if has_asia {
        names.push(("EQ-ASIA", 1.5));
    }
    names.extend([("DERIV", 2.0), ("FX", 1.0), ("MACRO", 1.0)]);
    if has_asia {
        names.push(("QUANT", 1.5));
    }
    let stocks_of =
        |cs: &[Ccy]| -> Vec<usize> { u.stocks.iter().copied().filter(|&i| cs.contains(&u.insts[i].ccy)).collect() };
    let mut top: Vec<usize> = u.stocks.clone();
    top.sort_by(|&a, &b| u.insts[b].liq.total_cmp(&u.insts[a].liq).then(a.cmp(&b)));
    top.truncate(10);
    let mut desks = Vec::new();
    for &(name, _) in &names {
        let mut universe = match name {
            "EQ-US" => stocks_of(&[Ccy::Usd]),
            "EQ-EU" => stocks_of(&[Ccy::Eur, Ccy::Gbp]),
            "EQ-ASIA" => stocks_of(&[Ccy::Jpy]),
            "DERIV" => {
                let mut v: Vec<usize> = u.options.iter().chain(&u.futures).copied().collect();
                for &o in &u.options {
                    let under = u.insts[o].under(o);
                    if u.insts[under].is_tradable() && !v.contains(&under) {
                        v.push(under);
                    }
                }
                if v.is_empty() {
                    v = top.clone();
                }
                v
            }
            "FX" => u.fx.clone(),
            "MACRO" => {
                let mut v: Vec<usize> = u.futures.iter().chain(&u.fx).copied().collect();
                if has_asia {
                    v.extend(&top);
                } else {
                    v.extend(stocks_of(&[Ccy::Jpy]));
                }
                v
            }
            _ => u.stocks.clone(),
        };
        if universe.is_empty() {
            universe = top.clone();
        }
        let weights: Vec<f64> = universe.iter().map(|&i| u.insts[i].liq.max(0.01)).collect();
        desks.push(Desk { name, universe, alias: Alias::new(&weights) });
    }

    // Accounts: desks by weight, shuffled so ids do not reveal the desk.
    let counts = apportion(plan.accounts, &names.iter().map(|n| n.1).collect::<Vec<_>>());
    let mut desk_of: Vec<usize> = Vec::with_capacity(plan.accounts);
    for (d, &n) in counts.iter().enumerate() {
        desk_of.extend(std::iter::repeat_n(d, n));
    }
    rng.shuffle(&mut desk_of);
    let width = plan.account_width();
    let mut accts = Vec::with_capacity(plan.accounts);
    for (a, &d) in desk_of.iter().enumerate() {
        let desk = &desks[d];
        let n = plan.positions_per_account.min(desk.universe.len());
        let book = pick_book(desk, n, rng);
        let id = format!("ACC-{:0width$}", a + 1);
        accts.push(Acct {
            record: Account { id: id.clone(), desk: desk.name.into(), firm: Some(Account::DEFAULT_FIRM.into()) },
            json_id: json_str(&id),
            desk: d,
            qty: vec![0; book.len()],
            book,
            activity: (0.8 * rng.normal()).exp(),
            main: None,
        });
    }

    // Accumulating accounts.
    let n_acc = if plan.accounts < 4 { 1 } else { (plan.accounts / 50).clamp(2, 200) };
    let mut eligible: Vec<usize> = (0..accts.len())
        .filter(|&a| {
            matches!(desks[accts[a].desk].name, "EQ-US" | "EQ-EU" | "DERIV" | "MACRO") && accts[a].book.len() >= 3
        })
        .collect();
    rng.shuffle(&mut eligible);
    eligible.truncate(n_acc);
    eligible.sort_unstable();
    for a in eligible {
        let acct = &mut accts[a];
        // Derivatives desks mostly build up a future or an option, the others a stock.
        let derivs: Vec<usize> = (0..acct.book.len())
            .filter(|&p| matches!(u.insts[acct.book[p] as usize].class, Class::Future { .. } | Class::Option { .. }))
            .collect();
        let pos = if !derivs.is_empty() && rng.chance(0.7) {
            derivs[rng.index(derivs.len())]
        } else {
            rng.index(acct.book.len())
        };
        let sign = if rng.chance(0.7) { 1 } else { -1 };
        acct.main = Some((pos, sign));
        acct.activity *= 3.0;
    }
    (desks, accts)
}

/// `n` distinct instruments of the desk, liquid ones more likely.
fn pick_book(desk: &Desk, n: usize, rng: &mut Rng) -> Vec<u32> {
    let m = desk.universe.len();
    if n * 3 >= m {
        let mut all: Vec<usize> = desk.universe.clone();
        rng.shuffle(&mut all);
        all.truncate(n);
        return all.into_iter().map(|i| i as u32).collect();
    }
    let mut book: Vec<u32> = Vec::with_capacity(n);
    while book.len() < n {
        let i = desk.universe[desk.alias.sample(rng)] as u32;
        if !book.contains(&i) {
            book.push(i);
        }
    }
    book
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_fridays() {
        let d = Date::parse("2026-03-02").unwrap();
        assert_eq!(third_friday(d, 0).to_string(), "2026-03-20");
        assert_eq!(third_friday(d, 1).to_string(), "2026-04-17");
        assert_eq!(third_friday(d, 10).to_string(), "2027-01-15");
        assert_eq!(front_month_code(d.start_ts()), "H6");
        let late = Date::parse("2026-03-25").unwrap();
        assert_eq!(front_month_code(late.start_ts()), "M6");
    }

    #[test]
    fn apportion_sums() {
        assert_eq!(apportion(21, &[0.5, 0.2, 0.12, 0.18]), vec![10, 4, 3, 4]);
        assert_eq!(apportion(7, &[1.0, 1.0]).iter().sum::<usize>(), 7);
    }
}
