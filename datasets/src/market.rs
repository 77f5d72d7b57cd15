//! The price model and the market-data stream.
//!
//! Log returns come from a factor model: a global market factor, one factor per region
//! (currency), one per sector, and an idiosyncratic part; the three FX rates against USD have
//! their own factors and load on the market factor (the yen is a haven). A two-state Markov
//! chain switches between a calm and a stressed regime: stressed has 3× the volatility of
//! equities (1.8× for FX) and higher loadings on the market factor, hence higher correlation.
//!
//! The factors are simulated once on a time grid (cumulative sums, kept per regime so each
//! instrument can apply its regime-dependent loadings). Instruments are priced lazily: when an
//! instrument ticks, its log price advances from its last grid point with the factor
//! increments plus a fresh idiosyncratic draw whose variance is the elapsed (regime-weighted)
//! time, so every tick costs O(1) whatever the size of the universe. Futures follow their
//! index with a fixed basis; options are priced with Black-Scholes on a simple volatility
//! surface (skew, smile, term structure) that rises in stressed periods.
//!
//! Ticks carry prices rounded to each instrument's price increment, which also keeps the
//! output stable against last-bit differences of `exp`/`ln` between platforms.

use riskflow_dataflows::formulas::{black_scholes, year_fraction};
use riskflow_dataflows::model::Ts;

use crate::rng::{Alias, Rng};
use crate::universe::{f_fx, Ccy, Class, Universe, FX_STRESS_SCALE, F_MARKET, NF, UNIT};
use crate::write::{push_fixed, push_u64, Out};
use crate::{Axis, BadLine, GenError, Plan};

/// Volatility multiplier of the stressed regime.
pub(crate) const STRESS_VOL: f64 = 3.0;
/// Target multiplier of implied volatility in the stressed regime.
const STRESS_IV: f64 = 2.0;

/// The simulated factor paths.
pub(crate) struct Grid {
    /// Grid points: 0..=steps.
    pub steps: usize,
    /// Nanoseconds per step (intraday presets; 0 for daily, where a step is a trading day).
    pub step_ns: u64,
    /// Regime (0 calm, 1 stressed) in force during step g → g+1.
    pub regime: Vec<u8>,
    /// Cumulative factor values per point: [g][regime][factor].
    x: Vec<f64>,
    /// Cumulative variance-time per point: [calm years, stressed years · STRESS_VOL²].
    tv: Vec<[f64; 2]>,
    /// Implied-volatility multiplier per point.
    ivm: Vec<f64>,
}

impl Grid {
    pub fn simulate(plan: &Plan, rng: &mut Rng) -> Grid {
        let (steps, step_ns, dt, mean_calm, mean_stress) = match &plan.axis {
            Axis::Intraday { duration_ns } => {
                let step_ns = plan.grid_ns;
                let steps = duration_ns.div_ceil(step_ns) as usize;
                let dt = step_ns as f64 / 1e9 / (252.0 * 23_400.0);
                let (c, s) = plan.regime_secs;
                let per_sec = 1e9 / step_ns as f64;
                (steps, step_ns, dt, c * per_sec, s * per_sec)
            }
            Axis::Daily { closes, .. } => {
                let (c, s) = plan.regime_secs;
                (closes.len() - 1, 0, 1.0 / 252.0, c, s)
            }
        };
        let (p_up, p_down) = ((1.0 / mean_calm).min(1.0), (1.0 / mean_stress).min(1.0));
        let tau_steps = 0.25 * mean_stress;
        let relax = 1.0 - (-1.0 / tau_steps).exp();
        let sq = dt.sqrt();
        let mut regime = Vec::with_capacity(steps);
        let mut x = vec![0.0; (steps + 1) * 2 * NF];
        let mut tv = vec![[0.0; 2]; steps + 1];
        let mut ivm = vec![1.0; steps + 1];
        let mut state = 0u8;
        for g in 0..steps {
            if g > 0 {
                let p = if state == 0 { p_up } else { p_down };
                if rng.chance(p) {
                    state = 1 - state;
                }
            }
            regime.push(state);
            let r = state as usize;
            let vs = if r == 0 { 1.0 } else { STRESS_VOL };
            let (prev, next) = x.split_at_mut((g + 1) * 2 * NF);
            let prev = &prev[g * 2 * NF..];
            next[..2 * NF].copy_from_slice(prev);
            for f in 0..NF {
                next[r * NF + f] += vs * sq * rng.normal();
            }
            tv[g + 1] = tv[g];
            tv[g + 1][r] += vs * vs * dt;
            let target = if r == 0 { 1.0 } else { STRESS_IV };
            ivm[g + 1] = ivm[g] + (target - ivm[g]) * relax;
        }
        Grid { steps, step_ns, regime, x, tv, ivm }
    }

    fn xv(&self, g: usize, r: usize, f: usize) -> f64 {
        self.x[(g * 2 + r) * NF + f]
    }

    /// The regime in force at point `g`.
    pub fn regime_at(&self, g: usize) -> u8 {
        if self.regime.is_empty() {
            0
        } else {
            self.regime[g.min(self.regime.len() - 1)]
        }
    }

    /// Regime episodes: (first grid point, state).
    pub fn episodes(&self) -> Vec<(usize, u8)> {
        let mut out: Vec<(usize, u8)> = Vec::new();
        for (g, &r) in self.regime.iter().enumerate() {
            if out.last().is_none_or(|&(_, last)| last != r) {
                out.push((g, r));
            }
        }
        if out.is_empty() {
            out.push((0, 0));
        }
        out
    }
}

/// Rounds a price to a multiple of `tick` (1e-8 units), at least one tick.
fn quantize(p: f64, tick: i64) -> i64 {
    let n = (p * UNIT as f64 / tick as f64).round();
    (n.max(1.0) as i64) * tick
}

/// A bad tick line of the sample preset.
#[derive(Clone, Copy)]
enum BadTick {
    NegativePrice,
    ZeroPrice,
}

/// The market: price state of every instrument and the schedule of ticks.
pub(crate) struct Market {
    pub grid: Grid,
    t0: Ts,
    quotes: bool,
    /// Log price and last grid point of stocks and indices.
    lp: Vec<f64>,
    lg: Vec<usize>,
    /// Last ticked price (as f64) and implied vol of every instrument.
    pub last_price: Vec<f64>,
    pub last_iv: Vec<f64>,
    rng: Rng,
    alias: Option<Alias>,
    /// Next tick: t0 snapshot index, then random ticks.
    t0_next: usize,
    random_next: u64,
    random_total: u64,
    /// Daily schedule: next (day, instrument).
    daily_next: (usize, usize),
    bad: Vec<(u64, BadTick)>,
    line: Vec<u8>,
    pub ticks: u64,
}

impl Market {
    pub fn new(plan: &Plan, u: &Universe, grid: Grid, rng: Rng) -> Market {
        let n = u.insts.len();
        let lp = u.insts.iter().map(|i| i.p0.ln()).collect();
        let alias = match plan.axis {
            Axis::Intraday { .. } => {
                let w: Vec<f64> = u.insts.iter().map(|i| i.tick_w).collect();
                Some(Alias::new(&w))
            }
            Axis::Daily { .. } => None,
        };
        let mut bad = Vec::new();
        if plan.bad_lines {
            let r = plan.random_ticks;
            bad.push((r * 3 / 10, BadTick::NegativePrice));
            bad.push((r * 7 / 10, BadTick::ZeroPrice));
        }
        Market {
            grid,
            t0: plan.start_ts,
            quotes: plan.quotes,
            lp,
            lg: vec![0; n],
            last_price: vec![0.0; n],
            last_iv: vec![0.0; n],
            rng,
            alias,
            t0_next: 0,
            random_next: 0,
            random_total: plan.random_ticks,
            daily_next: (0, 0),
            bad,
            line: Vec::with_capacity(256),
            ticks: 0,
        }
    }

    /// The grid point of event time `ts` (intraday) — daily ticks name their day.
    pub fn point_of(&self, ts: Ts) -> usize {
        if self.grid.step_ns == 0 {
            return 0;
        }
        (((ts - self.t0) / self.grid.step_ns) as usize).min(self.grid.steps)
    }

    /// The next tick's (time, instrument, grid point), without consuming it.
    fn next_event(&self, plan: &Plan, u: &Universe) -> Option<(Ts, Option<usize>, usize)> {
        match &plan.axis {
            Axis::Intraday { duration_ns } => {
                if self.t0_next < u.insts.len() {
                    return Some((self.t0, Some(self.t0_next), 0));
                }
                if self.random_next < self.random_total {
                    let ts = plan.start_ts
                        + crate::stratified(self.random_next, self.random_total, *duration_ns, plan.seed, 1);
                    return Some((ts, None, self.point_of(ts)));
                }
                None
            }
            Axis::Daily { closes, .. } => {
                let (d, i) = self.daily_next;
                (d < closes.len()).then(|| (closes[d], Some(i), d))
            }
        }
    }

    pub fn peek_ts(&self, plan: &Plan, u: &Universe) -> Option<Ts> {
        self.next_event(plan, u).map(|e| e.0)
    }

    /// Writes the next tick (and, in the sample, a bad line due after it).
    pub fn emit(
        &mut self,
        plan: &Plan,
        u: &Universe,
        out: &mut Out,
        bad_lines: &mut Vec<BadLine>,
    ) -> Result<(), GenError> {
        let Some((ts, inst, g)) = self.next_event(plan, u) else {
            return Ok(());
        };
        let i = match inst {
            Some(i) => i,
            None => self.alias.as_ref().expect("intraday schedule").sample(&mut self.rng),
        };
        let random_index = self.random_next;
        match &plan.axis {
            Axis::Intraday { .. } if self.t0_next < u.insts.len() => self.t0_next += 1,
            Axis::Intraday { .. } => self.random_next += 1,
            Axis::Daily { .. } => {
                let (d, i) = self.daily_next;
                self.daily_next = if i + 1 < u.insts.len() { (d, i + 1) } else { (d + 1, 0) };
            }
        }
        self.write_tick(u, i, g, ts, out)?;
        if inst.is_none() {
            while let Some(&(at, kind)) = self.bad.first() {
                if at != random_index {
                    break;
                }
                self.bad.remove(0);
                self.write_bad(u, kind, ts, out, bad_lines)?;
            }
        }
        Ok(())
    }

    /// Writes any bad lines not yet written (when there were too few ticks to place them).
    pub fn finish(
        &mut self,
        u: &Universe,
        last_ts: Ts,
        out: &mut Out,
        bad_lines: &mut Vec<BadLine>,
    ) -> Result<(), GenError> {
        for (_, kind) in std::mem::take(&mut self.bad) {
            self.write_bad(u, kind, last_ts, out, bad_lines)?;
        }
        Ok(())
    }

    fn write_bad(
        &mut self,
        u: &Universe,
        kind: BadTick,
        ts: Ts,
        out: &mut Out,
        bad_lines: &mut Vec<BadLine>,
    ) -> Result<(), GenError> {
        let (pick, reason) = match kind {
            BadTick::NegativePrice => (0, "negative price"),
            BadTick::ZeroPrice => (1, "zero price"),
        };
        let i = u.stocks[pick.min(u.stocks.len() - 1)];
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"ts\":");
        push_u64(line, ts);
        line.extend_from_slice(b",\"instrument\":");
        line.extend_from_slice(&u.insts[i].json_id);
        line.extend_from_slice(b",\"price\":");
        match kind {
            BadTick::NegativePrice => push_fixed(line, -quantize(self.last_price[i], u.insts[i].tick)),
            BadTick::ZeroPrice => line.push(b'0'),
        }
        line.push(b'}');
        out.line(line)?;
        bad_lines.push(BadLine { file: "market.jsonl".into(), line: out.lines, reason: reason.into() });
        Ok(())
    }

    /// Spot of a stock or index at grid point `g`, advancing its lazy state.
    pub fn spot(&mut self, u: &Universe, i: usize, g: usize) -> f64 {
        let g0 = self.lg[i];
        if g > g0 {
            let inst = &u.insts[i];
            let load = inst.load.as_ref().expect("equity-like instrument");
            let grid = &self.grid;
            let mut z = 0.0;
            for &(f, l) in &load.factors {
                for (r, lr) in l.iter().enumerate() {
                    if *lr != 0.0 {
                        z += lr * (grid.xv(g, r, f) - grid.xv(g0, r, f));
                    }
                }
            }
            let dv = [grid.tv[g][0] - grid.tv[g0][0], grid.tv[g][1] - grid.tv[g0][1]];
            let idio = load.idio[0] * dv[0] + load.idio[1] * dv[1];
            let s = inst.sigma;
            self.lp[i] += s * z + s * idio.max(0.0).sqrt() * self.rng.normal() - 0.5 * s * s * (dv[0] + dv[1]);
            self.lg[i] = g;
        }
        self.lp[i].exp()
    }

    /// USD per unit of `c` at grid point `g` (model value).
    fn rate(&self, c: Ccy, g: usize) -> f64 {
        if c == Ccy::Usd {
            return 1.0;
        }
        let s = c.sigma();
        let mut z = 0.0;
        for r in 0..2 {
            let (lm, lf) = c.loadings(r);
            z += lm * self.grid.xv(g, r, F_MARKET) + lf * self.grid.xv(g, r, f_fx(c));
        }
        let tv = self.grid.tv[g];
        let k2 = FX_STRESS_SCALE * FX_STRESS_SCALE;
        (c.rate0().ln() + s * z - 0.5 * s * s * (tv[0] + k2 * tv[1])).exp()
    }

    fn write_tick(&mut self, u: &Universe, i: usize, g: usize, ts: Ts, out: &mut Out) -> Result<(), GenError> {
        let inst = &u.insts[i];
        let stressed = self.grid.regime_at(g) == 1;
        let mut iv = None;
        let price = match &inst.class {
            Class::Stock | Class::Index => quantize(self.spot(u, i, g), inst.tick),
            Class::Future { under, basis } => {
                let s = self.spot(u, *under, g);
                quantize(s * (1.0 + basis), inst.tick)
            }
            Class::Option { under, strike, expiry, kind, skew, curv } => {
                let s = self.spot(u, *under, g);
                let t = year_fraction(*expiry, ts).max(1.0 / 365.25);
                let base = u.insts[*under].sigma;
                let m = self.grid.ivm[g];
                let short = base * 1.05 * m;
                let long = base * 1.15 * (1.0 + 0.3 * (m - 1.0));
                let atm = long + (short - long) * (-t / 0.25).exp();
                let k = (strike / s).ln();
                let vol = (atm + skew * k + curv * k * k).clamp(0.05, 3.0);
                let vol = (vol * 10_000.0).round() / 10_000.0;
                iv = Some(vol);
                let g = black_scholes(*kind, s, *strike, t, 0.0, vol);
                quantize(g.price, inst.tick)
            }
            Class::Fx { base, quote } => {
                let p = self.rate(*base, g) / self.rate(*quote, g);
                quantize(p, inst.tick)
            }
        };
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"ts\":");
        push_u64(line, ts);
        line.extend_from_slice(b",\"instrument\":");
        line.extend_from_slice(&inst.json_id);
        line.extend_from_slice(b",\"price\":");
        push_fixed(line, price);
        if self.quotes && inst.half_spread > 0 {
            let mut h = inst.half_spread * if stressed { 2 } else { 1 };
            if iv.is_some() {
                // Options: about 1% wide, at least one increment each side.
                h = h.max(price / inst.tick / 200);
            }
            let bid = price - h * inst.tick;
            if bid > 0 {
                line.extend_from_slice(b",\"bid\":");
                push_fixed(line, bid);
            }
            line.extend_from_slice(b",\"ask\":");
            push_fixed(line, price + h * inst.tick);
        }
        if let Some(vol) = iv {
            line.extend_from_slice(b",\"iv\":");
            push_fixed(line, (vol * 10_000.0).round() as i64 * 10_000);
            self.last_iv[i] = vol;
        }
        line.extend_from_slice(b"}\n");
        out.buf.extend_from_slice(line);
        out.end_line()?;
        self.last_price[i] = price as f64 / UNIT as f64;
        self.ticks += 1;
        Ok(())
    }
}
