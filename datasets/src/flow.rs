//! The position-delta stream: start-of-day positions, then fills over the session, with a
//! few redelivered duplicates and (sample preset) a handful of deliberately bad lines.
//!
//! Start-of-day positions are one delta per (account, book instrument) at t0. Fills pick an
//! account by activity (an alias table), an instrument of its book, a side and a realistic
//! size: equities in lots of 100 shares (now and then a fractional-share fill), futures and
//! options in contracts, FX in round amounts of the base currency (now and then an odd amount
//! with up to eight decimals). Accumulating accounts keep adding to one position, which is
//! what makes some limits breach. Duplicates are chosen by selection sampling so their count
//! is exact; a fill's redelivery follows it at the same event time, a start-of-day
//! redelivery comes at the end of the start-of-day block, so the file stays sorted by `ts`.

use std::collections::VecDeque;

use riskflow_dataflows::model::Ts;

use crate::rng::{Alias, Rng};
use crate::universe::{Acct, Class, Universe, UNIT};
use crate::write::{push_fixed, push_u64, Frag, Line, Out};
use crate::{BadLine, GenError, Plan};

/// Largest quantity of one delta, in 1e-8 units (50 million): far inside the exact range
/// of an `f64`, so every quantity round-trips through JSON.
const MAX_QTY: i64 = 50_000_000 * UNIT;

/// One delta.
#[derive(Clone, Copy, Debug)]
struct Rec {
    id: u64,
    ts: Ts,
    acct: u32,
    pos: u32,
    qty: i64,
}

/// A bad delta line of the sample preset.
#[derive(Clone, Copy, Debug)]
enum BadDelta {
    Malformed,
    UnknownAccount,
    MissingQty,
    UnknownInstrument,
}

impl BadDelta {
    fn reason(self) -> &'static str {
        match self {
            BadDelta::Malformed => "malformed JSON",
            BadDelta::UnknownAccount => "unknown account",
            BadDelta::MissingQty => "missing qty",
            BadDelta::UnknownInstrument => "unknown instrument",
        }
    }
}

/// The instrument id of the sample's delta for an instrument that is not in the universe.
pub const UNKNOWN_INSTRUMENT: &str = "NOT-LISTED";

enum Item {
    /// A new delta; `Some(k)` for the k-th fill.
    Orig(Rec, Option<u64>),
    Dup(Rec),
    Bad(BadDelta, Rec),
}

impl Item {
    fn ts(&self) -> Ts {
        match self {
            Item::Orig(r, _) | Item::Dup(r) | Item::Bad(_, r) => r.ts,
        }
    }
}

pub(crate) struct Flow {
    pub accounts: Vec<Acct>,
    rng: Rng,
    alias: Alias,
    /// Lognormal size multipliers, drawn once.
    sizes: Vec<f64>,
    queue: VecDeque<Item>,
    sod_next: (usize, usize),
    sod_done: bool,
    sod_dups: Vec<Rec>,
    pub sod: u64,
    pub fills: u64,
    fill_next: u64,
    originals_left: u64,
    dups_left: u64,
    next_id: u64,
    bad: Vec<(u64, BadDelta)>,
    checkpoints: u64,
    ckpt_next: u64,
    unknown_account: Vec<u8>,
    acct_frag: Vec<Frag>,
    inst_frag: Vec<Frag>,
    line: Vec<u8>,
    /// Valid delta lines written (duplicates included) and duplicates among them.
    pub written: u64,
    pub duplicates: u64,
}

impl Flow {
    pub fn new(plan: &Plan, u: &Universe, accounts: Vec<Acct>, mut rng: Rng) -> Flow {
        let sod: u64 = accounts.iter().map(|a| a.book.len() as u64).sum();
        let originals = plan.deltas - plan.duplicates;
        let fills = originals - sod;
        let weights: Vec<f64> = accounts.iter().map(|a| a.activity).collect();
        let mut sizes: Vec<f64> = (0..4096).map(|_| (0.9 * rng.normal() - 0.4).exp()).collect();
        sizes.sort_by(f64::total_cmp);
        let mut bad = Vec::new();
        if plan.bad_lines {
            bad = vec![
                (fills * 2 / 10, BadDelta::Malformed),
                (fills * 4 / 10, BadDelta::UnknownAccount),
                (fills * 6 / 10, BadDelta::MissingQty),
                (fills * 8 / 10, BadDelta::UnknownInstrument),
            ];
        }
        let unknown_account = crate::write::json_str(&plan.unknown_account());
        // Ids are short (at most ~25 bytes), so the fragments fit.
        let acct_frag = accounts
            .iter()
            .map(|a| Frag::new(&[&b",\"account\":"[..], &a.json_id, b",\"instrument\":"].concat()))
            .collect::<Option<Vec<_>>>()
            .expect("account ids are short");
        let inst_frag = u
            .insts
            .iter()
            .map(|i| Frag::new(&[&i.json_id[..], b",\"qty\":"].concat()))
            .collect::<Option<Vec<_>>>()
            .expect("instrument ids are short");
        Flow {
            alias: Alias::new(&weights),
            accounts,
            rng,
            sizes,
            queue: VecDeque::new(),
            sod_next: (0, 0),
            sod_done: false,
            sod_dups: Vec::new(),
            sod,
            fills,
            fill_next: 0,
            originals_left: originals,
            dups_left: plan.duplicates,
            next_id: 1,
            bad,
            checkpoints: plan.checkpoints.min(fills.max(1)),
            ckpt_next: 0,
            unknown_account,
            acct_frag,
            inst_frag,
            line: Vec::with_capacity(256),
            written: 0,
            duplicates: 0,
        }
    }

    /// A quantity of `i` in 1e-8 units (unsigned): `scale` × a typical fill.
    fn size(&mut self, u: &Universe, i: usize, scale: f64) -> i64 {
        let inst = &u.insts[i];
        match inst.class {
            Class::Stock if self.rng.chance(0.01) => {
                // A fractional-share fill: up to four decimals.
                (1 + self.rng.below(500) as i64) * UNIT + self.rng.below(10_000) as i64 * 10_000
            }
            Class::Fx { .. } if self.rng.chance(0.03) => {
                // An odd amount, to the 1e-8 (kept below 5 million for exactness).
                (1 + self.rng.below(5_000_000) as i64) * UNIT + self.rng.below(UNIT as u64) as i64
            }
            _ => {
                let m = self.sizes[self.rng.index(self.sizes.len())];
                let max_lots = (MAX_QTY / inst.lot).min(5000);
                let lots = ((inst.lots * m * scale).round() as i64).clamp(1, max_lots);
                lots * inst.lot
            }
        }
    }

    /// Decides (exactly `dups` out of all originals) whether this original is redelivered.
    fn dup_chosen(&mut self) -> bool {
        let pick = self.dups_left > 0 && self.rng.below(self.originals_left) < self.dups_left;
        self.originals_left -= 1;
        if pick {
            self.dups_left -= 1;
        }
        pick
    }

    fn refill(&mut self, plan: &Plan, u: &Universe) {
        if !self.queue.is_empty() {
            return;
        }
        if !self.sod_done {
            let (a, p) = self.sod_next;
            if a < self.accounts.len() {
                let i = self.accounts[a].book[p] as usize;
                let long = match u.insts[i].class {
                    Class::Stock => 0.75,
                    Class::Future { .. } => 0.6,
                    _ => 0.5,
                };
                let mut scale = self.rng.range(3.0, 15.0);
                if self.accounts[a].main.is_some_and(|(mp, _)| mp == p) {
                    scale = self.rng.range(1.0, 3.0);
                }
                let sign = if self.rng.chance(long) { 1 } else { -1 };
                let qty = sign * self.size(u, i, scale);
                let rec = Rec { id: self.take_id(), ts: plan.start_ts, acct: a as u32, pos: p as u32, qty };
                self.queue.push_back(Item::Orig(rec, None));
                if self.dup_chosen() {
                    self.sod_dups.push(rec);
                }
                self.sod_next = if p + 1 < self.accounts[a].book.len() { (a, p + 1) } else { (a + 1, 0) };
                return;
            }
            self.sod_done = true;
            for rec in std::mem::take(&mut self.sod_dups) {
                self.queue.push_back(Item::Dup(rec));
            }
            if !self.queue.is_empty() {
                return;
            }
        }
        if self.fill_next < self.fills {
            let k = self.fill_next;
            self.fill_next += 1;
            let ts = plan.axis.fill_ts(plan.start_ts, k, self.fills, plan.seed);
            let a = self.alias.sample(&mut self.rng);
            let acct = &self.accounts[a];
            let (pos, sign, scale) = match acct.main {
                Some((mp, ms)) if self.rng.chance(0.5) => {
                    let s = if self.rng.chance(0.85) { ms } else { -ms };
                    (mp, s, 1.5)
                }
                _ => {
                    let p = self.rng.index(acct.book.len());
                    (p, if self.rng.chance(0.5) { 1 } else { -1 }, 1.0)
                }
            };
            let i = acct.book[pos] as usize;
            let qty = sign * self.size(u, i, scale);
            let rec = Rec { id: self.take_id(), ts, acct: a as u32, pos: pos as u32, qty };
            self.queue.push_back(Item::Orig(rec, Some(k)));
            if self.dup_chosen() {
                self.queue.push_back(Item::Dup(rec));
            }
            while self.bad.first().is_some_and(|&(at, _)| at == k) {
                let (_, kind) = self.bad.remove(0);
                let bad = Rec { id: self.take_id(), ..rec };
                self.queue.push_back(Item::Bad(kind, bad));
            }
            return;
        }
        // Bad lines that found no fill to follow.
        for (_, kind) in std::mem::take(&mut self.bad) {
            let acct = &self.accounts[0];
            let rec = Rec { id: self.next_id, ts: plan.start_ts, acct: 0, pos: 0, qty: acct.book.len() as i64 * UNIT };
            self.next_id += 1;
            self.queue.push_back(Item::Bad(kind, rec));
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn peek_ts(&mut self, plan: &Plan, u: &Universe) -> Option<Ts> {
        self.refill(plan, u);
        self.queue.front().map(Item::ts)
    }

    /// True if the risk tracker should take a checkpoint before the next line: before the
    /// first fill (after the start-of-day positions), then at evenly spaced fills.
    pub fn checkpoint_due(&mut self, plan: &Plan, u: &Universe) -> bool {
        self.refill(plan, u);
        let Some(Item::Orig(_, Some(k))) = self.queue.front() else {
            return false;
        };
        if self.ckpt_next < self.checkpoints && *k >= self.ckpt_next * self.fills / self.checkpoints {
            while self.ckpt_next < self.checkpoints && *k >= self.ckpt_next * self.fills / self.checkpoints {
                self.ckpt_next += 1;
            }
            return true;
        }
        false
    }

    /// Writes the next line; returns its ts.
    pub fn emit(
        &mut self,
        plan: &Plan,
        u: &Universe,
        out: &mut Out,
        bad_lines: &mut Vec<BadLine>,
    ) -> Result<Option<Ts>, GenError> {
        self.refill(plan, u);
        let Some(item) = self.queue.pop_front() else {
            return Ok(None);
        };
        let ts = item.ts();
        match item {
            Item::Orig(rec, _) => {
                let acct = &mut self.accounts[rec.acct as usize];
                acct.qty[rec.pos as usize] += rec.qty;
                self.write(&rec, out)?;
            }
            Item::Dup(rec) => {
                self.duplicates += 1;
                self.write(&rec, out)?;
            }
            Item::Bad(kind, rec) => {
                self.write_bad(u, kind, &rec, out)?;
                bad_lines.push(BadLine {
                    file: "positions.jsonl".into(),
                    line: out.lines,
                    reason: kind.reason().into(),
                });
            }
        }
        Ok(Some(ts))
    }

    fn write(&mut self, rec: &Rec, out: &mut Out) -> Result<(), GenError> {
        let i = self.accounts[rec.acct as usize].book[rec.pos as usize] as usize;
        let mut l = Line::new();
        l.lit(b"{\"id\":\"F-");
        l.u64(rec.id);
        l.lit(b"\",\"ts\":");
        l.u64(rec.ts);
        // `,"account":"ACC-0001","instrument":` and `"AAPL","qty":`, prepared once.
        l.frag(&self.acct_frag[rec.acct as usize]);
        l.frag(&self.inst_frag[i]);
        l.fixed(rec.qty);
        l.lit(b"}\n");
        l.append_to(&mut out.buf);
        self.written += 1;
        out.end_line()
    }

    fn write_bad(&mut self, u: &Universe, kind: BadDelta, rec: &Rec, out: &mut Out) -> Result<(), GenError> {
        let acct = &self.accounts[rec.acct as usize];
        let inst = &u.insts[acct.book[rec.pos as usize] as usize];
        let l = &mut self.line;
        l.clear();
        l.extend_from_slice(b"{\"id\":\"F-");
        push_u64(l, rec.id);
        l.extend_from_slice(b"\",\"ts\":");
        push_u64(l, rec.ts);
        l.extend_from_slice(b",\"account\":");
        match kind {
            BadDelta::UnknownAccount => l.extend_from_slice(&self.unknown_account),
            _ => l.extend_from_slice(&acct.json_id),
        }
        l.extend_from_slice(b",\"instrument\":");
        match kind {
            BadDelta::UnknownInstrument => l.extend_from_slice(&crate::write::json_str(UNKNOWN_INSTRUMENT)),
            _ => l.extend_from_slice(&inst.json_id),
        }
        match kind {
            BadDelta::Malformed => l.extend_from_slice(b",\"qty\":"),
            BadDelta::MissingQty => l.push(b'}'),
            _ => {
                l.extend_from_slice(b",\"qty\":");
                push_fixed(l, inst.lot);
                l.push(b'}');
            }
        }
        out.line(l)
    }
}
