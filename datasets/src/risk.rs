//! Limit sizing: an approximate, generator-side view of the risk the engine will report,
//! taken at checkpoints during generation, so that some limits are sized to breach during
//! the run and the others are not.
//!
//! Exposures follow DESIGN.md §3 on the last ticked prices (options: Black-Scholes delta with
//! the tick's implied vol). VaR/ES use the generator's own factor model (the true covariance
//! of the current regime) rather than the engine's EWMA estimate, and `stress` uses three
//! proxy scenarios (equities −10 % with vol +10 points, equities +7 % with vol −3 points,
//! every currency −5 % against USD), so those limits breach "by design" only approximately.
//! Gross and concentration at desk and firm level are tracked both with positions netted per
//! instrument and without, and a limit is designed to breach only if it breaches under both.

use riskflow_dataflows::formulas::{black_scholes, year_fraction};
use riskflow_dataflows::model::{Scope, Ts};
use serde::Serialize;

use crate::market::{Market, STRESS_VOL};
use crate::rng::Rng;
use crate::universe::{f_fx, Acct, Ccy, Class, Desk, Universe, F_MARKET, NF};

/// One-sided normal quantile at 0.99 (VaR) and the ES multiplier φ(z)/(1−α) at 0.975.
const Z_VAR: f64 = 2.326_347_874;
const K_ES: f64 = 2.337_802_7;

const GROSS: usize = 0;
const GROSS_NETTED: usize = 1;
const NET: usize = 2;
const VAR: usize = 3;
const ES: usize = 4;
const STRESS: usize = 5;
const CONC: usize = 6;
const CONC_NETTED: usize = 7;
const NM: usize = 8;

/// |metric| at the first checkpoint and its maximum over the run.
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct Range {
    pub x0: f64,
    pub max: f64,
}

impl Range {
    fn update(&mut self, x: f64, first: bool) {
        let x = x.abs();
        if first {
            *self = Range { x0: x, max: x };
        } else if x > self.max {
            self.max = x;
        }
    }
}

/// Per-unit risk of one instrument at a checkpoint.
#[derive(Copy, Clone, Debug, Default)]
struct Unit {
    /// Delta exposure in USD per unit of quantity.
    e: f64,
    /// Concentration key (the underlying, or the instrument itself).
    key: usize,
    /// Scenario P&L per unit.
    stress: [f64; 3],
    /// FX legs: (base ccy, USD per unit, quote ccy, USD per unit).
    fx: Option<(Ccy, f64, Ccy, f64)>,
}

#[derive(Default)]
struct Metrics {
    gross: f64,
    net: f64,
    var: f64,
    es: f64,
    stress: f64,
    conc: f64,
}

pub(crate) struct Tracker {
    checkpoints: u64,
    pub acct: Vec<[Range; NM]>,
    pub acct_pos: Vec<Vec<Range>>,
    pub desk: Vec<[Range; NM]>,
    pub desk_pos: Vec<Vec<Range>>,
    pub firm: [Range; NM],
    pub firm_pos: Vec<Range>,
    unit: Vec<Unit>,
    desk_qty: Vec<Vec<f64>>,
    key_sum: Vec<f64>,
    mark: Vec<u64>,
    stamp: u64,
    touched: Vec<usize>,
    pos_buf: Vec<(usize, f64)>,
}

impl Tracker {
    pub fn new(u: &Universe, desks: &[Desk], accounts: &[Acct]) -> Tracker {
        let n = u.insts.len();
        Tracker {
            checkpoints: 0,
            acct: vec![[Range::default(); NM]; accounts.len()],
            acct_pos: accounts.iter().map(|a| vec![Range::default(); a.book.len()]).collect(),
            desk: vec![[Range::default(); NM]; desks.len()],
            desk_pos: vec![vec![Range::default(); n]; desks.len()],
            firm: [Range::default(); NM],
            firm_pos: vec![Range::default(); n],
            unit: vec![Unit::default(); n],
            desk_qty: vec![vec![0.0; n]; desks.len()],
            key_sum: vec![0.0; n],
            mark: vec![0; n],
            stamp: 0,
            touched: Vec::new(),
            pos_buf: Vec::new(),
        }
    }

    fn prepare(&mut self, u: &Universe, m: &Market, now: Ts) {
        let px = &m.last_price;
        let mut rate = [1.0; 4];
        for &f in &u.fx {
            if let Class::Fx { base, quote } = u.insts[f].class {
                match (base, quote) {
                    (Ccy::Eur, Ccy::Usd) | (Ccy::Gbp, Ccy::Usd) => rate[base as usize] = px[f],
                    (Ccy::Usd, Ccy::Jpy) => rate[Ccy::Jpy as usize] = 1.0 / px[f],
                    _ => {}
                }
            }
        }
        for (i, inst) in u.insts.iter().enumerate() {
            let r = rate[inst.ccy as usize];
            let lin = |e: f64| [-0.10 * e, 0.07 * e, 0.0];
            self.unit[i] = match &inst.class {
                Class::Stock | Class::Index => {
                    let e = px[i] * r;
                    Unit { e, key: i, stress: lin(e), fx: None }
                }
                Class::Future { under, .. } => {
                    let e = inst.mult * px[i] * r;
                    Unit { e, key: *under, stress: lin(e), fx: None }
                }
                Class::Option { under, strike, expiry, kind, .. } => {
                    let s = px[*under];
                    let iv = m.last_iv[i];
                    let t = year_fraction(*expiry, now);
                    let g = black_scholes(*kind, s, *strike, t, 0.0, iv);
                    let up = black_scholes(*kind, s * 1.07, *strike, t, 0.0, (iv - 0.03).max(0.05));
                    let down = black_scholes(*kind, s * 0.9, *strike, t, 0.0, iv + 0.10);
                    let k = inst.mult * r;
                    let e = k * g.delta * s;
                    let stress = [k * (down.price - g.price), k * (up.price - g.price), 0.0];
                    if [e, stress[0], stress[1]].iter().all(|x| x.is_finite()) {
                        Unit { e, key: *under, stress, fx: None }
                    } else {
                        Unit { key: *under, ..Unit::default() }
                    }
                }
                Class::Fx { base, quote } => {
                    let eb = rate[*base as usize];
                    let eq = -px[i] * rate[*quote as usize];
                    let shock = |c: Ccy, e: f64| if c == Ccy::Usd { 0.0 } else { -0.05 * e };
                    Unit {
                        e: eb,
                        key: i,
                        stress: [0.0, 0.0, shock(*base, eb) + shock(*quote, eq)],
                        fx: Some((*base, eb, *quote, eq)),
                    }
                }
            };
        }
    }

    /// Risk of a list of (instrument, quantity) positions, each instrument at most once.
    fn eval(&mut self, u: &Universe, pos: &[(usize, f64)], regime: u8) -> Metrics {
        self.stamp += 1;
        self.touched.clear();
        let (mut gross, mut net, mut stress, mut ccy) = (0.0, 0.0, [0.0; 3], [0.0; 4]);
        for &(i, q) in pos {
            let un = &self.unit[i];
            let e = q * un.e;
            gross += e.abs();
            net += e;
            for (s, x) in stress.iter_mut().zip(un.stress) {
                *s += q * x;
            }
            if let Some((b, eb, qc, eq)) = un.fx {
                ccy[b as usize] += q * eb;
                ccy[qc as usize] += q * eq;
            }
            if self.mark[un.key] != self.stamp {
                self.mark[un.key] = self.stamp;
                self.key_sum[un.key] = 0.0;
                self.touched.push(un.key);
            }
            self.key_sum[un.key] += e;
        }
        let r = regime as usize;
        let mut common = [0.0; NF];
        let mut idio = 0.0;
        let mut top: f64 = 0.0;
        for &k in &self.touched {
            let e = self.key_sum[k];
            top = top.max(e.abs());
            if let Some(load) = &u.insts[k].load {
                let s = e * u.insts[k].sigma;
                for &(f, l) in &load.factors {
                    common[f] += s * l[r];
                }
                idio += s * s * load.idio[r];
            }
        }
        for c in [Ccy::Eur, Ccy::Gbp, Ccy::Jpy] {
            let s = ccy[c as usize] * c.sigma();
            let (lm, lf) = c.loadings(r);
            common[F_MARKET] += s * lm;
            common[f_fx(c)] += s * lf;
        }
        let vs = if r == 0 { 1.0 } else { STRESS_VOL };
        let var_year = vs * vs * (common.iter().map(|x| x * x).sum::<f64>() + idio);
        let sd = (var_year / 252.0).sqrt();
        let worst = stress.iter().copied().fold(0.0, f64::min);
        Metrics {
            gross,
            net,
            var: Z_VAR * sd,
            es: K_ES * sd,
            stress: -worst,
            conc: if gross > 0.0 { top / gross } else { 0.0 },
        }
    }

    /// Takes a checkpoint of every account, desk and the firm.
    pub fn checkpoint(&mut self, u: &Universe, accounts: &[Acct], m: &Market, now: Ts) {
        let first = self.checkpoints == 0;
        self.checkpoints += 1;
        self.prepare(u, m, now);
        let regime = m.grid.regime_at(m.point_of(now));
        let nd = self.desk.len();
        let mut desk_gross = vec![0.0; nd];
        for q in &mut self.desk_qty {
            q.iter_mut().for_each(|x| *x = 0.0);
        }
        let mut buf = std::mem::take(&mut self.pos_buf);
        for (a, acct) in accounts.iter().enumerate() {
            buf.clear();
            for (p, (&i, &q)) in acct.book.iter().zip(&acct.qty).enumerate() {
                let qf = q as f64 / 1e8;
                self.acct_pos[a][p].update(qf, first);
                if q != 0 {
                    buf.push((i as usize, qf));
                    self.desk_qty[acct.desk][i as usize] += qf;
                }
            }
            let mx = self.eval(u, &buf, regime);
            desk_gross[acct.desk] += mx.gross;
            let r = &mut self.acct[a];
            for (k, x) in [
                (GROSS, mx.gross),
                (GROSS_NETTED, mx.gross),
                (NET, mx.net),
                (VAR, mx.var),
                (ES, mx.es),
                (STRESS, mx.stress),
                (CONC, mx.conc),
                (CONC_NETTED, mx.conc),
            ] {
                r[k].update(x, first);
            }
        }
        let n = u.insts.len();
        let mut firm_qty = vec![0.0; n];
        for (d, &gross) in desk_gross.iter().enumerate() {
            buf.clear();
            let (qty, pos) = (&self.desk_qty[d], &mut self.desk_pos[d]);
            for (i, ((&q, p), f)) in qty.iter().zip(pos.iter_mut()).zip(firm_qty.iter_mut()).enumerate() {
                p.update(q, first);
                *f += q;
                if q != 0.0 {
                    buf.push((i, q));
                }
            }
            let mx = self.eval(u, &buf, regime);
            let unnetted_conc = if gross > 0.0 { mx.conc * mx.gross / gross } else { 0.0 };
            let r = &mut self.desk[d];
            for (k, x) in [
                (GROSS, gross),
                (GROSS_NETTED, mx.gross),
                (NET, mx.net),
                (VAR, mx.var),
                (ES, mx.es),
                (STRESS, mx.stress),
                (CONC, unnetted_conc),
                (CONC_NETTED, mx.conc),
            ] {
                r[k].update(x, first);
            }
        }
        buf.clear();
        for (i, &q) in firm_qty.iter().enumerate() {
            self.firm_pos[i].update(q, first);
            if q != 0.0 {
                buf.push((i, q));
            }
        }
        let mx = self.eval(u, &buf, regime);
        let total: f64 = desk_gross.iter().sum();
        let unnetted_conc = if total > 0.0 { mx.conc * mx.gross / total } else { 0.0 };
        for (k, x) in [
            (GROSS, total),
            (GROSS_NETTED, mx.gross),
            (NET, mx.net),
            (VAR, mx.var),
            (ES, mx.es),
            (STRESS, mx.stress),
            (CONC, unnetted_conc),
            (CONC_NETTED, mx.conc),
        ] {
            self.firm[k].update(x, first);
        }
        self.pos_buf = buf;
    }
}

/// A scope-level metric.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum M {
    Gross,
    Net,
    Var,
    Es,
    Stress,
    Conc,
}

impl M {
    fn name(self) -> &'static str {
        match self {
            M::Gross => "gross",
            M::Net => "net",
            M::Var => "var",
            M::Es => "es",
            M::Stress => "stress",
            M::Conc => "concentration",
        }
    }

    /// The tracked figures of this metric (netted and not, where they differ).
    fn slots(self) -> (usize, usize) {
        match self {
            M::Gross => (GROSS, GROSS_NETTED),
            M::Net => (NET, NET),
            M::Var => (VAR, VAR),
            M::Es => (ES, ES),
            M::Stress => (STRESS, STRESS),
            M::Conc => (CONC, CONC_NETTED),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Metric(M),
    PosQty,
}

struct Cand {
    scope: Scope,
    scope_id: String,
    metric: String,
    kind: Kind,
    x0: f64,
    /// The smallest and largest maximum over the interpretations tracked.
    lo_max: f64,
    hi_max: f64,
    /// Part of an accumulating account's story.
    focus: bool,
}

fn cand_of(scope: Scope, id: &str, m: M, r: &[Range; NM], focus: bool) -> Cand {
    let (a, b) = m.slots();
    Cand {
        scope,
        scope_id: id.into(),
        metric: m.name().into(),
        kind: Kind::Metric(m),
        x0: r[a].x0.max(r[b].x0),
        lo_max: r[a].max.min(r[b].max),
        hi_max: r[a].max.max(r[b].max),
        focus,
    }
}

fn pos_cand(scope: Scope, id: &str, inst: &str, r: Range, focus: bool) -> Cand {
    Cand {
        scope,
        scope_id: id.into(),
        metric: format!("position_qty:{inst}"),
        kind: Kind::PosQty,
        x0: r.x0,
        lo_max: r.max,
        hi_max: r.max,
        focus,
    }
}

/// Rounds to `digits` significant digits.
fn round_sig(x: f64, digits: i32) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return x;
    }
    let e = x.log10().floor() as i32 - (digits - 1);
    if e >= 0 {
        let p = 10f64.powi(e);
        (x / p).round() * p
    } else {
        let p = 10f64.powi(-e);
        (x * p).round() / p
    }
}

/// A limit record (DESIGN.md §2); written from this struct so that fields the engine's model
/// may add later (all optional) do not change the dataset.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Limit {
    pub id: String,
    pub scope: Scope,
    pub scope_id: String,
    pub metric: String,
    pub limit: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warn_at: Option<f64>,
}

/// The limits, with the ids of those designed to breach and of those designed to reach WARN
/// without breaching.
pub(crate) struct LimitSet {
    pub limits: Vec<Limit>,
    pub breach: Vec<String>,
    pub warn: Vec<String>,
}

pub(crate) fn build_limits(
    u: &Universe,
    desks: &[Desk],
    accounts: &[Acct],
    t: &Tracker,
    target_breaches: usize,
    rng: &mut Rng,
) -> LimitSet {
    use M::*;
    let mut cands = Vec::new();
    let firm = riskflow_dataflows::model::Account::DEFAULT_FIRM;
    for k in [Gross, Net, Var, Es, Stress, Conc] {
        cands.push(cand_of(Scope::Firm, firm, k, &t.firm, false));
    }
    for (d, desk) in desks.iter().enumerate() {
        for k in [Gross, Net, Var, Es, Stress, Conc] {
            cands.push(cand_of(Scope::Desk, desk.name, k, &t.desk[d], false));
        }
        let mut mains: Vec<usize> =
            accounts.iter().filter(|a| a.desk == d).filter_map(|a| a.main.map(|(p, _)| a.book[p] as usize)).collect();
        mains.sort_unstable();
        mains.dedup();
        for &i in mains.iter().take(3) {
            cands.push(pos_cand(Scope::Desk, desk.name, &u.insts[i].record.id, t.desk_pos[d][i], true));
        }
        let biggest = (0..u.insts.len())
            .filter(|i| !mains.contains(i))
            .max_by(|&a, &b| t.desk_pos[d][a].x0.total_cmp(&t.desk_pos[d][b].x0).then(b.cmp(&a)));
        if let Some(i) = biggest.filter(|&i| t.desk_pos[d][i].x0 > 0.0) {
            cands.push(pos_cand(Scope::Desk, desk.name, &u.insts[i].record.id, t.desk_pos[d][i], false));
        }
    }
    for (a, acct) in accounts.iter().enumerate() {
        let id = &acct.record.id;
        let r = &t.acct[a];
        if let Some((p, _)) = acct.main {
            for k in [Gross, Net, Var, Conc] {
                cands.push(cand_of(Scope::Account, id, k, r, true));
            }
            let inst = &u.insts[acct.book[p] as usize].record.id;
            cands.push(pos_cand(Scope::Account, id, inst, t.acct_pos[a][p], true));
            continue;
        }
        cands.push(cand_of(Scope::Account, id, Gross, r, false));
        match a % 4 {
            0 => cands.push(cand_of(Scope::Account, id, Net, r, false)),
            1 => cands.push(cand_of(Scope::Account, id, Var, r, false)),
            2 => {
                cands.push(cand_of(Scope::Account, id, Es, r, false));
                cands.push(cand_of(Scope::Account, id, Stress, r, false));
            }
            _ => cands.push(cand_of(Scope::Account, id, Conc, r, false)),
        }
        if a % 10 == 9 {
            let p = (0..acct.book.len())
                .max_by(|&x, &y| t.acct_pos[a][x].x0.total_cmp(&t.acct_pos[a][y].x0).then(y.cmp(&x)));
            if let Some(p) = p {
                let inst = &u.insts[acct.book[p] as usize].record.id;
                cands.push(pos_cand(Scope::Account, id, inst, t.acct_pos[a][p], false));
            }
        }
    }
    // A limit with nothing to measure, or a concentration of a single-underlying scope, is
    // not worth setting.
    cands.retain(|c| c.hi_max > 0.0 && c.hi_max.is_finite() && !(c.kind == Kind::Metric(Conc) && c.x0 > 0.7));

    // Choose the limits that breach: eligible ones grow to at least 1.5× their start value
    // under every interpretation; accumulating accounts first, then one of each
    // (scope, metric) kind, then by growth.
    let eligible = |c: &Cand| c.lo_max >= 1.5 * c.x0 && c.lo_max > 0.0;
    let mut order: Vec<usize> = (0..cands.len()).filter(|&i| eligible(&cands[i])).collect();
    let growth = |c: &Cand| {
        if c.x0 > 0.0 {
            c.lo_max / c.x0
        } else {
            f64::INFINITY
        }
    };
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&cands[a], &cands[b]);
        cb.focus.cmp(&ca.focus).then(growth(cb).total_cmp(&growth(ca))).then(a.cmp(&b))
    });
    let mut chosen = vec![false; cands.len()];
    let mut seen: Vec<(Scope, Kind)> = Vec::new();
    let mut n = 0;
    for &i in &order {
        let key = (cands[i].scope, cands[i].kind);
        if n < target_breaches && !seen.contains(&key) {
            seen.push(key);
            chosen[i] = true;
            n += 1;
        }
    }
    for &i in &order {
        if n >= target_breaches {
            break;
        }
        if !chosen[i] {
            chosen[i] = true;
            n += 1;
        }
    }

    let width = 4.max(cands.len().to_string().len());
    let mut set = LimitSet { limits: Vec::new(), breach: Vec::new(), warn: Vec::new() };
    for (i, c) in cands.iter().enumerate() {
        let id = format!("L-{:0width$}", set.limits.len() + 1);
        let (limit, warn_at) = if chosen[i] {
            let lo = c.x0 / 0.75;
            let hi = 0.92 * c.lo_max;
            let mid = if lo > 0.0 { (lo * hi).sqrt() } else { 0.6 * hi };
            let mut l = round_sig(mid, 3);
            if !(l > lo && l < hi) {
                l = round_sig(mid, 8);
            }
            set.breach.push(id.clone());
            (l, if rng.chance(0.2) { Some(0.9) } else { None })
        } else if c.lo_max == c.hi_max && c.x0 <= 0.7 * c.hi_max && rng.chance(0.1) {
            // Reaches WARN (u = 0.9 at the peak) but never breaches.
            set.warn.push(id.clone());
            let l = round_sig(c.hi_max / 0.9, 3);
            (l, if rng.chance(0.3) { Some(0.75) } else { None })
        } else {
            let l = round_sig(c.hi_max * rng.range(1.3, 2.5), 3);
            let w = match rng.index(20) {
                0..=2 => Some(0.9),
                3..=5 => Some(0.75),
                _ => None,
            };
            (l, w)
        };
        if c.kind == Kind::Metric(Conc) && limit >= 1.0 {
            set.breach.retain(|b| *b != id);
            set.warn.retain(|b| *b != id);
            continue;
        }
        set.limits.push(Limit {
            id,
            scope: c.scope,
            scope_id: c.scope_id.clone(),
            metric: c.metric.clone(),
            limit,
            warn_at,
        });
    }
    set
}

#[cfg(test)]
mod tests {
    use super::round_sig;

    #[test]
    fn rounds_to_significant_digits() {
        assert_eq!(round_sig(1_234_567.0, 3), 1_230_000.0);
        assert_eq!(round_sig(0.72345, 3), 0.723);
        assert_eq!(round_sig(99.96, 3), 100.0);
    }
}
