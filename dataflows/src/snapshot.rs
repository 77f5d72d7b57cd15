//! Snapshot tables (DESIGN.md §5): the rows the book emits at each boundary, and the
//! operator that merges every worker's part into one complete [`Snapshot`] per `as_of`.
//!
//! ```text
//!   Book (worker 0..n) ── SnapshotPart @ as_of ──exchange(→0)──> assemble ──> Snapshot @ as_of
//! ```
//!
//! Partial aggregates arrive as exact nanos per currency and are summed here before they are
//! converted to the base currency, so the figures do not depend on the number of workers.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use crate::analytics::AnalyticsTables;
use crate::exposure::{BaseSums, Ccy, Sums};
use crate::limits::{ActionEvent, BreachEvent};
use crate::model::{AssetClass, Fixed, Scope, Ts};

/// One position at `as_of`. Its names are the book's own, shared: a snapshot's rows copy no
/// strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionRow {
    pub account: Arc<str>,
    pub desk: Arc<str>,
    pub firm: Arc<str>,
    pub instrument: Arc<str>,
    pub asset_class: AssetClass,
    pub underlying: Arc<str>,
    pub currency: Ccy,
    pub qty: Fixed,
    /// The instrument's last price at or before `as_of`; `None` if it has none yet.
    pub price: Option<Fixed>,
    /// Currency of the delta leg (the base currency of an fx pair, else `currency`).
    pub exposure_currency: Ccy,
    /// Delta exposure in `exposure_currency`, nanos.
    pub exposure_local: Option<i128>,
    /// Delta exposure, gamma and vega exposure in the base currency.
    pub exposure: Option<f64>,
    pub gamma: Option<f64>,
    pub vega: Option<f64>,
    /// The fx quote leg, in the base currency.
    pub quote_exposure: Option<f64>,
}

/// What a total is broken down by.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dim {
    Total,
    AssetClass,
    Underlying,
    Currency,
    Factor,
}

impl Dim {
    pub fn as_str(self) -> &'static str {
        match self {
            Dim::Total => "total",
            Dim::AssetClass => "asset_class",
            Dim::Underlying => "underlying",
            Dim::Currency => "currency",
            Dim::Factor => "factor",
        }
    }
}

/// The key of a partial aggregate: one bucket of one scope, in one currency.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AggKey {
    pub scope: Scope,
    pub scope_id: Arc<str>,
    pub dim: Dim,
    /// The bucket within `dim` (asset class, underlying, currency, factor); empty for totals.
    pub bucket: Arc<str>,
    pub ccy: Ccy,
}

/// A part of the snapshot at the message's time, from one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SnapshotPart {
    /// A worker's position rows, each table whole: its rows are moved, not copied, on their
    /// way to the snapshot.
    Positions(Vec<PositionRow>),
    /// A worker's partial aggregates.
    Aggregates(Vec<(AggKey, Sums)>),
    /// Base-currency units per unit of a currency, at `as_of`.
    Rate(Ccy, f64),
    /// A worker took a snapshot at this time; `unpriced` positions had no exposure figure.
    Marker {
        unpriced: u64,
    },
    /// Limit events, written with the first snapshot at or after their time.
    Breach(BreachEvent),
    Action(ActionEvent),
    /// The analytics tables at this time (from worker 0).
    Analytics(Box<AnalyticsTables>),
}

/// One bucket of one scope, in every currency: (scope, scope id, dim, bucket).
type BucketKey = (Scope, Arc<str>, Dim, Arc<str>);

/// One row of the `exposures` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExposureRow {
    pub scope: Scope,
    pub scope_id: Arc<str>,
    pub dim: Dim,
    pub bucket: Arc<str>,
    pub sums: BaseSums,
    /// Max single-underlying |net| / gross, on `Total` rows.
    pub concentration: Option<f64>,
}

/// One row of the `factor_exposures` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactorRow {
    pub scope: Scope,
    pub scope_id: Arc<str>,
    pub factor: Arc<str>,
    pub exposure: f64,
}

/// Every table of one snapshot, rows sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub as_of: Ts,
    pub positions: Vec<PositionRow>,
    pub exposures: Vec<ExposureRow>,
    pub factors: Vec<FactorRow>,
    pub rates: Vec<(Ccy, f64)>,
    /// Limit state changes and trading-state actions since the previous snapshot.
    pub breaches: Vec<BreachEvent>,
    pub actions: Vec<ActionEvent>,
    /// Positions left out of the aggregates for want of a price (or of a rate).
    pub unpriced: u64,
    /// Volatility, correlation, risk, stress and regimes.
    pub analytics: AnalyticsTables,
}

impl Snapshot {
    /// The row of `dim`/`bucket` for one scope, if any.
    pub fn exposure(&self, scope: Scope, scope_id: &str, dim: Dim, bucket: &str) -> Option<&ExposureRow> {
        self.exposures
            .iter()
            .find(|r| r.scope == scope && *r.scope_id == *scope_id && r.dim == dim && *r.bucket == *bucket)
    }
}

#[derive(Clone, Default)]
struct Pending {
    /// Whether any worker took a snapshot at this time (else it holds only events).
    snapshot: bool,
    breaches: Vec<BreachEvent>,
    actions: Vec<ActionEvent>,
    positions: Vec<PositionRow>,
    /// Every worker's partial aggregates, merged by key in [`Pending::finish`].
    aggregates: Vec<(AggKey, Sums)>,
    rates: BTreeMap<Ccy, f64>,
    unpriced: u64,
    analytics: AnalyticsTables,
}

impl Pending {
    fn add(&mut self, part: SnapshotPart) {
        match part {
            SnapshotPart::Positions(rows) => adopt(&mut self.positions, rows),
            SnapshotPart::Aggregates(rows) => adopt(&mut self.aggregates, rows),
            SnapshotPart::Rate(ccy, rate) => {
                self.rates.insert(ccy, rate);
            }
            SnapshotPart::Marker { unpriced } => {
                self.snapshot = true;
                self.unpriced += unpriced;
            }
            SnapshotPart::Breach(b) => self.breaches.push(b),
            SnapshotPart::Action(a) => self.actions.push(a),
            SnapshotPart::Analytics(t) => self.analytics = *t,
        }
    }

    /// Takes over the events of an earlier time that had no snapshot.
    fn absorb(&mut self, earlier: Pending) {
        let (mut b, mut a) = (earlier.breaches, earlier.actions);
        b.append(&mut self.breaches);
        a.append(&mut self.actions);
        self.breaches = b;
        self.actions = a;
    }

    fn finish(mut self, as_of: Ts) -> Snapshot {
        self.positions.sort_by(|a, b| (&a.account, &a.instrument).cmp(&(&b.account, &b.instrument)));
        // In key order, so that the parts of one key from several workers lie together and
        // the base-currency sums add up in the same order on every run.
        let order = key_order(&self.aggregates);
        let mut aggregates = order.iter().map(|&(_, at)| &self.aggregates[at as usize]).peekable();
        // One entry per (scope, scope id, dim, bucket), in key order: its currencies' exact
        // sums, each converted once and added in currency order.
        let mut buckets: Vec<(BucketKey, BaseSums)> = Vec::new();
        let mut unconverted = 0;
        while let Some((key, sums)) = aggregates.next() {
            let mut sums = *sums;
            while let Some((_, more)) = aggregates.next_if(|(next, _)| next == key) {
                sums.add(more);
            }
            let Some(rate) = self.rates.get(&key.ccy) else {
                unconverted += sums.positions.max(0) as u64;
                continue;
            };
            let AggKey { scope, scope_id, dim, bucket, .. } = key;
            match buckets.last_mut() {
                Some((k, base)) if (k.0, &k.1, k.2, &k.3) == (*scope, scope_id, *dim, bucket) => {
                    base.add(&sums.to_base(*rate))
                }
                _ => {
                    let mut base = BaseSums::default();
                    base.add(&sums.to_base(*rate));
                    buckets.push(((*scope, scope_id.clone(), *dim, bucket.clone()), base));
                }
            }
        }
        let mut exposures = Vec::new();
        let mut factors = Vec::new();
        // A scope's buckets lie together: its largest single-underlying |net| is known before
        // its rows are written.
        let mut rest = &mut buckets[..];
        while let Some(((scope, scope_id, ..), _)) = rest.first() {
            let n = rest.iter().take_while(|((s, id, ..), _)| (s, id) == (scope, scope_id)).count();
            let (group, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            let max_underlying = group
                .iter()
                .filter(|((.., dim, _), _)| *dim == Dim::Underlying)
                .fold(0.0, |m: f64, (_, sums)| m.max(sums.net.abs()));
            for ((scope, scope_id, dim, bucket), sums) in group.iter_mut() {
                let (scope, scope_id, dim, bucket, sums) = (*scope, scope_id.clone(), *dim, bucket.clone(), *sums);
                if dim == Dim::Factor {
                    factors.push(FactorRow { scope, scope_id, factor: bucket, exposure: sums.net });
                    continue;
                }
                let concentration = (dim == Dim::Total && sums.gross > 0.0).then(|| max_underlying / sums.gross);
                exposures.push(ExposureRow { scope, scope_id, dim, bucket, sums, concentration });
            }
        }
        Snapshot {
            as_of,
            breaches: self.breaches,
            actions: self.actions,
            positions: self.positions,
            exposures,
            factors,
            rates: self.rates.into_iter().collect(),
            unpriced: self.unpriced + unconverted,
            analytics: self.analytics,
        }
    }
}

/// The places of `aggregates` in key order, each with a key that orders like [`AggKey`]: its
/// strings replaced by their ranks in lexical order. Sorting the entries themselves compared
/// two strings reached through pointers at every step and moved 160-byte entries; here each
/// distinct string is compared only while ranking them (in one snapshot a worker's book sends
/// each name and label as one `Arc`: as many per name as workers).
fn key_order(aggregates: &[(AggKey, Sums)]) -> Vec<(u128, u32)> {
    let mut places: FxHashMap<*const u8, u32> = FxHashMap::default();
    let mut names: Vec<&str> = Vec::new();
    let mut keys: Vec<[u32; 2]> = Vec::with_capacity(aggregates.len());
    for (k, _) in aggregates {
        keys.push([&k.scope_id, &k.bucket].map(|name| {
            *places.entry(name.as_ptr()).or_insert_with(|| {
                names.push(name);
                names.len() as u32 - 1
            })
        }));
    }
    let rank = lexical_ranks(&names);
    let mut order: Vec<(u128, u32)> = aggregates
        .iter()
        .zip(keys)
        .enumerate()
        .map(|(at, ((k, _), [id, bucket]))| {
            let key = (k.scope as u128) << 120
                | (rank[id as usize] as u128) << 80
                | (k.dim as u128) << 72
                | (rank[bucket as usize] as u128) << 32
                | k.ccy.to_bits() as u128;
            (key, at as u32)
        })
        .collect();
    order.sort_unstable();
    order
}

/// Each name's place among `names` in lexical order; equal names share one.
pub(crate) fn lexical_ranks<S: AsRef<str>>(names: &[S]) -> Vec<u32> {
    let mut by_name: Vec<u32> = (0..names.len() as u32).collect();
    by_name.sort_unstable_by(|&x, &y| names[x as usize].as_ref().cmp(names[y as usize].as_ref()));
    let mut rank = vec![0u32; names.len()];
    let mut last: Option<(&str, u32)> = None;
    for (place, &n) in by_name.iter().enumerate() {
        let name = names[n as usize].as_ref();
        let r = match last {
            Some((prev, r)) if prev == name => r,
            _ => place as u32,
        };
        rank[n as usize] = r;
        last = Some((name, r));
    }
    rank
}

/// Adds `rows` to `table`: the first worker's table is taken as it is.
fn adopt<T>(table: &mut Vec<T>, mut rows: Vec<T>) {
    if table.is_empty() {
        *table = rows;
    } else {
        table.append(&mut rows);
    }
}

/// Every worker's parts of one snapshot, gathered but not yet sorted into tables: the
/// assembly ([`Collected::finish`]) is left to whoever writes it, off the worker's thread.
#[derive(Clone)]
pub struct Collected {
    pub as_of: Ts,
    parts: Pending,
}

impl Collected {
    /// Sums each bucket across currencies and sorts every table by key.
    pub fn finish(self) -> Snapshot {
        self.parts.finish(self.as_of)
    }
}

/// Merges every worker's [`SnapshotPart`]s into one [`Snapshot`] per time, on worker 0, once
/// the frontier has passed that time.
pub fn assemble_snapshots<'scope>(parts: StreamVec<'scope, Ts, SnapshotPart>) -> StreamVec<'scope, Ts, Snapshot> {
    use timely::dataflow::operators::vec::Map;
    collect_snapshots(parts).map(Collected::finish)
}

/// Gathers every worker's [`SnapshotPart`]s of each time on worker 0, once the frontier has
/// passed that time; the limit events of times without a snapshot go with the next one.
pub fn collect_snapshots<'scope>(parts: StreamVec<'scope, Ts, SnapshotPart>) -> StreamVec<'scope, Ts, Collected> {
    parts.unary_frontier(Exchange::new(|_: &SnapshotPart| 0), "CollectSnapshots", |_cap, _info| {
        let mut pending: BTreeMap<Ts, (timely::dataflow::operators::Capability<Ts>, Pending)> = BTreeMap::new();
        // Events of times without a snapshot wait for the next snapshot.
        let mut carry = Pending::default();
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let time = crate::time_of(&cap);
                let entry = pending
                    .entry(time)
                    .or_insert_with(|| (cap.delayed(&time, output.output_index()), Pending::default()));
                for part in data.drain(..) {
                    entry.1.add(part);
                }
            });
            while let Some(entry) = pending.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                let (as_of, (cap, mut parts)) = entry.remove_entry();
                if parts.snapshot {
                    parts.absorb(std::mem::take(&mut carry));
                    output.session(&cap).give(Collected { as_of, parts });
                } else {
                    carry.breaches.extend(parts.breaches);
                    carry.actions.extend(parts.actions);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Keys drawn from a few names, each name held in two different `Arc`s, with repeats.
    fn keys() -> impl Strategy<Value = Vec<(u8, u8, u8, u8, u8, u8)>> {
        prop::collection::vec((0..3u8, 0..6u8, 0..2u8, 0..5u8, 0..6u8, 0..3u8), 0..200)
    }

    proptest! {
        #[test]
        fn key_order_is_the_keys_order(drawn in keys()) {
            let names = ["", "ACC-1", "ACC-10", "ACC-2", "EQ", "USD"];
            let held: Vec<[Arc<str>; 2]> = names.iter().map(|n| [Arc::from(*n), Arc::from(*n)]).collect();
            let scopes = [Scope::Account, Scope::Desk, Scope::Firm];
            let dims = [Dim::Total, Dim::AssetClass, Dim::Underlying, Dim::Currency, Dim::Factor];
            let ccys = [Ccy(*b"EUR"), Ccy(*b"GBP"), Ccy::USD];
            let aggregates: Vec<(AggKey, Sums)> = drawn
                .iter()
                .enumerate()
                .map(|(n, &(scope, id, copy, dim, bucket, ccy))| {
                    let key = AggKey {
                        scope: scopes[scope as usize],
                        scope_id: held[id as usize][copy as usize].clone(),
                        dim: dims[dim as usize],
                        bucket: held[bucket as usize][1 - copy as usize].clone(),
                        ccy: ccys[ccy as usize],
                    };
                    (key, Sums { positions: n as i64, ..Sums::default() })
                })
                .collect();
            let order = key_order(&aggregates);
            let got: Vec<&AggKey> = order.iter().map(|&(_, at)| &aggregates[at as usize].0).collect();
            let mut want: Vec<&AggKey> = aggregates.iter().map(|(k, _)| k).collect();
            want.sort();
            prop_assert_eq!(got, want);
            // Equal keys get equal integer keys, and unequal ones unequal.
            for pair in order.windows(2) {
                let (a, b) = (&aggregates[pair[0].1 as usize].0, &aggregates[pair[1].1 as usize].0);
                prop_assert_eq!(pair[0].0 == pair[1].0, a == b);
            }
        }
    }
}
