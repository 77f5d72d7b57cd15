//! The plain single-threaded baselines every benchmark measures riskflow against: the same
//! exposure and limit updates as the dataflow, with no dataflow, applied one record at a time.
//! [`Baseline`] keeps HashMaps keyed by the records' strings; [`Flat`] is the leanest loop
//! (ids interned to integers, FxHash, flat arrays, only the gross figure the limits read):
//! what one core does with this workload at best, whatever the engine's design. Both count
//! the same limit events, which checks that they do the same work.
//!
//! Their delta-id sets and position indexes are sized for the whole workload up front: a
//! table that doubles rehashes every entry at once (~0.1 s at a million ids), a pause that
//! would dominate the latency bench's tail (the engine's tables grow incrementally instead).

use std::collections::{HashMap, HashSet};

use riskflow_dataflows::event::Event;
use riskflow_dataflows::exposure::{mul_fixed_nanos, position_exposure, Sums};
use riskflow_dataflows::limits::LimitState;
use riskflow_dataflows::model::{Fixed, Instrument, Scope};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::workload::Workload;

/// HashMaps: ids interned on first sight, positions, last prices, positions per instrument,
/// account and desk gross/net sums, and the limit state machine on every change.
pub struct Baseline<'w> {
    instr: HashMap<&'w str, usize>,
    defs: Vec<&'w Instrument>,
    /// Account index and desk index.
    acct: HashMap<&'w str, (usize, usize)>,
    limit_of: HashMap<(u8, usize), f64>,
    price: Vec<Option<Fixed>>,
    in_instr: Vec<Vec<usize>>,
    /// (account, desk, instrument, quantity, exposure sums)
    positions: Vec<(usize, usize, usize, Fixed, Sums)>,
    pos_of: HashMap<(usize, usize), usize>,
    seen: HashSet<&'w str>,
    sums: HashMap<(u8, usize), (Sums, LimitState)>,
    pub events: u64,
}

impl<'w> Baseline<'w> {
    /// Takes the reference data (instruments, accounts, limits).
    pub fn new(w: &'w Workload) -> Baseline<'w> {
        let n = w.updates.len();
        let (mut instr, mut acct, mut desks) = (HashMap::new(), HashMap::new(), HashMap::new());
        let mut defs: Vec<&'w Instrument> = Vec::new();
        for e in &w.reference {
            match e {
                Event::Instrument(i) => {
                    instr.insert(i.id.as_str(), defs.len());
                    defs.push(i);
                }
                Event::Account(a) => {
                    let n = desks.len();
                    let desk = *desks.entry(a.desk.as_str()).or_insert(n);
                    let n = acct.len();
                    acct.insert(a.id.as_str(), (n, desk));
                }
                _ => {}
            }
        }
        let mut limit_of = HashMap::new();
        for e in &w.reference {
            if let Event::Limit(l) = e {
                let key = match l.scope {
                    Scope::Account => (0, acct[l.scope_id.as_str()].0),
                    _ => (1, desks[l.scope_id.as_str()]),
                };
                limit_of.insert(key, l.limit);
            }
        }
        Baseline {
            price: vec![None; defs.len()],
            in_instr: vec![Vec::new(); defs.len()],
            instr,
            defs,
            acct,
            limit_of,
            positions: Vec::new(),
            pos_of: HashMap::with_capacity(n),
            seen: HashSet::with_capacity(n),
            sums: HashMap::new(),
            events: 0,
        }
    }

    #[allow(dead_code)] // the throughput bench reports it; the latency bench does not
    pub fn positions(&self) -> usize {
        self.positions.len()
    }

    pub fn apply(&mut self, e: &'w Event) {
        match e {
            Event::Tick(t) => {
                let i = self.instr[t.instrument.as_str()];
                self.price[i] = Some(t.price);
                for n in 0..self.in_instr[i].len() {
                    self.revalue(self.in_instr[i][n]);
                }
            }
            Event::Delta(d) if self.seen.insert(&d.id) => {
                let (a, desk) = self.acct[d.account.as_str()];
                let i = self.instr[d.instrument.as_str()];
                let (positions, in_instr) = (&mut self.positions, &mut self.in_instr);
                let p = *self.pos_of.entry((a, i)).or_insert_with(|| {
                    positions.push((a, desk, i, Fixed::ZERO, Sums::default()));
                    in_instr[i].push(positions.len() - 1);
                    positions.len() - 1
                });
                self.positions[p].3 = Fixed(self.positions[p].3 .0 + d.qty.0);
                self.revalue(p);
            }
            _ => {}
        }
    }

    fn revalue(&mut self, p: usize) {
        let (a, desk, i, q, old) = self.positions[p];
        let Some(px) = self.price[i] else { return };
        let new =
            position_exposure(self.defs[i], q, px, None, 0, 0.0).map(|e| Sums::of_exposure(&e)).unwrap_or_default();
        let mut change = new;
        change.sub(&old);
        self.positions[p].4 = new;
        self.update((0, a), &change);
        self.update((1, desk), &change);
    }

    fn update(&mut self, key: (u8, usize), change: &Sums) {
        let entry = self.sums.entry(key).or_insert((Sums::default(), LimitState::Ok));
        entry.0.add(change);
        if let Some(limit) = self.limit_of.get(&key) {
            let u = (entry.0.gross as f64 / 1e9).abs() / limit;
            let next = LimitState::next(entry.1, u, 0.8, 0.05);
            if next != entry.1 {
                entry.1 = next;
                self.events += 1;
            }
        }
    }
}

/// The leanest loop: integer ids, flat arrays, FxHash.
pub struct Flat<'w> {
    instr: FxHashMap<&'w str, u32>,
    /// Account index and desk index.
    acct: FxHashMap<&'w str, (u32, u32)>,
    /// (gross in nanos, limit, state) per account, then per desk.
    scopes: Vec<(i128, f64, LimitState)>,
    first_desk: u32,
    price: Vec<Fixed>,
    in_instr: Vec<Vec<u32>>,
    /// (account, desk, instrument, quantity, exposure in nanos)
    positions: Vec<(u32, u32, u32, Fixed, i128)>,
    pos_of: FxHashMap<(u32, u32), u32>,
    seen: FxHashSet<&'w str>,
    pub events: u64,
}

impl<'w> Flat<'w> {
    pub fn new(w: &'w Workload) -> Flat<'w> {
        let n = w.updates.len();
        let (mut instr, mut acct, mut desks) = (FxHashMap::default(), FxHashMap::default(), FxHashMap::default());
        for e in &w.reference {
            match e {
                Event::Instrument(i) => {
                    let n = instr.len() as u32;
                    instr.insert(i.id.as_str(), n);
                }
                Event::Account(a) => {
                    let n = desks.len() as u32;
                    let desk = *desks.entry(a.desk.as_str()).or_insert(n);
                    let n = acct.len() as u32;
                    acct.insert(a.id.as_str(), (n, desk));
                }
                _ => {}
            }
        }
        let mut scopes = vec![(0, f64::INFINITY, LimitState::Ok); acct.len() + desks.len()];
        for e in &w.reference {
            if let Event::Limit(l) = e {
                let s = match l.scope {
                    Scope::Account => acct[l.scope_id.as_str()].0,
                    _ => acct.len() as u32 + desks[l.scope_id.as_str()],
                };
                scopes[s as usize].1 = l.limit;
            }
        }
        Flat {
            first_desk: acct.len() as u32,
            price: vec![Fixed::ZERO; instr.len()],
            in_instr: vec![Vec::new(); instr.len()],
            instr,
            acct,
            scopes,
            positions: Vec::new(),
            pos_of: FxHashMap::with_capacity_and_hasher(n, Default::default()),
            seen: FxHashSet::with_capacity_and_hasher(n, Default::default()),
            events: 0,
        }
    }

    pub fn apply(&mut self, e: &'w Event) {
        match e {
            Event::Tick(t) => {
                let i = self.instr[t.instrument.as_str()] as usize;
                self.price[i] = t.price;
                for n in 0..self.in_instr[i].len() {
                    self.revalue(self.in_instr[i][n] as usize);
                }
            }
            Event::Delta(d) if self.seen.insert(&d.id) => {
                let (a, desk) = self.acct[d.account.as_str()];
                let i = self.instr[d.instrument.as_str()];
                let (positions, in_instr) = (&mut self.positions, &mut self.in_instr);
                let p = *self.pos_of.entry((a, i)).or_insert_with(|| {
                    positions.push((a, desk, i, Fixed::ZERO, 0));
                    in_instr[i as usize].push(positions.len() as u32 - 1);
                    positions.len() as u32 - 1
                }) as usize;
                self.positions[p].3 = Fixed(self.positions[p].3 .0 + d.qty.0);
                self.revalue(p);
            }
            _ => {}
        }
    }

    fn revalue(&mut self, p: usize) {
        let (a, desk, i, q, old) = self.positions[p];
        let new = mul_fixed_nanos(q, self.price[i as usize]);
        self.positions[p].4 = new;
        for s in [a, self.first_desk + desk] {
            let scope = &mut self.scopes[s as usize];
            scope.0 += new.abs() - old.abs();
            let next = LimitState::next(scope.2, scope.0 as f64 / 1e9 / scope.1, 0.8, 0.05);
            if next != scope.2 {
                scope.2 = next;
                self.events += 1;
            }
        }
    }
}
