//! The factor model: bar closes, returns, EWMA variance and covariance, the windowed variance
//! and the history of return vectors that historical VaR draws on (docs/analytics.md).

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use crate::formulas::ewma;

/// Σr² is kept exactly: each r² is quantised to this many units per 1.0 in an i128, so that a
/// return leaving the window subtracts exactly what it added.
const SQUARE_UNITS: f64 = 1e30;

/// Exposure vectors taken together in one pass over Σ by [`FactorModel::portfolio_variances`]:
/// at most this many, in a pass as wide as the next multiple of four of them.
const LANES: usize = 16;

/// A covariance not yet known counts as 0.
#[inline(always)]
fn known(c: f64) -> f64 {
    if c.is_nan() {
        0.0
    } else {
        c
    }
}

/// Up to `W` exposure vectors side by side, by factor: each lane's exposure (0.0 where it
/// holds none) and whether it holds one.
struct Lanes<const W: usize> {
    x: Vec<[f64; W]>,
    held: Vec<[bool; W]>,
}

impl<const W: usize> Lanes<W> {
    fn of(k: usize, es: &[&[(usize, f64)]]) -> Lanes<W> {
        let mut lanes = Lanes { x: vec![[0.0; W]; k], held: vec![[false; W]; k] };
        for (l, e) in es.iter().enumerate() {
            for &(i, ei) in e.iter() {
                (lanes.x[i][l], lanes.held[i][l]) = (ei, true);
            }
        }
        lanes
    }
}

/// eᵀΣe of up to [`LANES`] vectors in one pass over Σ, which takes Σ's pending step as well.
/// The width is the next multiple of four, four lanes to a register (AVX2); four rows are taken
/// together, two at the widest, so that their sums stay in the sixteen registers. (5k factors,
/// 11 vectors: the step and the sums of one pass at width 12 took 31–34 ms, against 17–19 ms
/// for the step and 36–38 ms for three passes at width 4, docs/performance.md.)
fn dense_pass(m: &mut FactorModel, es: &[&[(usize, f64)]], sparse: Option<&mut Sparse>) -> Vec<f64> {
    match es.len() {
        0..=4 => pass::<4, 4>(m, es, sparse),
        5..=8 => pass::<8, 4>(m, es, sparse),
        9..=12 => pass::<12, 4>(m, es, sparse),
        _ => pass::<16, 2>(m, es, sparse),
    }
}

/// [`FactorModel::pass`], compiled for AVX2 when the CPU has it (checked at each call): four
/// lanes of a row's sums then take one register instead of two. The operations and their
/// order are the same (Rust fuses no multiply and add), so the bits are too.
fn pass<const W: usize, const ROWS: usize>(
    m: &mut FactorModel,
    es: &[&[(usize, f64)]],
    sparse: Option<&mut Sparse>,
) -> Vec<f64> {
    let lanes = Lanes::<W>::of(m.cov.len(), es);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { pass_avx2::<W, ROWS>(m, &lanes, sparse) }[..es.len()].to_vec();
    }
    m.pass::<W, ROWS>(&lanes, sparse)[..es.len()].to_vec()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pass_avx2<const W: usize, const ROWS: usize>(
    m: &mut FactorModel,
    lanes: &Lanes<W>,
    sparse: Option<&mut Sparse>,
) -> [f64; W] {
    m.pass::<W, ROWS>(lanes, sparse)
}

/// The sums c_rj·x_j over the columns j of `rows` (as many as `x` has), by lane, for each of
/// `ROWS` rows at once; kept in locals of their own, so that they stay in registers. Meanwhile
/// the rows of the next block, `ahead`, are asked of memory a cache line at a time, so that
/// their step does not wait for them with nothing else to do.
#[inline(always)]
fn columns<const W: usize, const ROWS: usize>(
    rows: [&[f64]; ROWS],
    ahead: [&[f64]; ROWS],
    x: &[[f64; W]],
) -> [[f64; W]; ROWS] {
    let mut off = [[0.0; W]; ROWS];
    for (j, x) in x.iter().enumerate() {
        if j % LINE == 0 {
            ahead.iter().for_each(|row| prefetch(row, j));
        }
        for r in 0..ROWS {
            add(&mut off[r], known(rows[r][j]), x);
        }
    }
    off
}

/// f64s to a cache line.
const LINE: usize = 8;

/// Asks for the cache line that holds `row[j]`, if `row` has one there; no effect on any
/// result.
#[inline(always)]
fn prefetch(row: &[f64], j: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(c) = row.get(j) {
        // SAFETY: a prefetch loads nothing into the program and cannot fault; the address is
        // within `row` besides.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((c as *const f64).cast()) }
    }
}

/// off += c·x, by four lanes: each four is one register's worth (AVX2).
#[inline(always)]
fn add<const W: usize>(off: &mut [f64; W], c: f64, x: &[f64; W]) {
    for (off, x) in off.chunks_exact_mut(4).zip(x.chunks_exact(4)) {
        for l in 0..4 {
            off[l] += c * x[l];
        }
    }
}

/// An exposure vector sorted by factor, as [`row_term`] reads it.
fn by_factor(e: &[(usize, f64)]) -> Vec<(usize, f64)> {
    let mut e = e.to_vec();
    e.sort_unstable_by_key(|&(i, _)| i);
    e
}

/// Row i's term of eᵀΣe, e sorted by factor with e[place] = (i, e_i): e_i·(c_ii·e_i +
/// 2·Σ_{j<i} c_ij·e_j), the terms of the sum in index order.
#[inline(always)]
fn row_term(row: &[f64], e: &[(usize, f64)], place: usize) -> f64 {
    let (i, ei) = e[place];
    let off: f64 = e[..place].iter().map(|&(j, ej)| known(row[j]) * ej).sum();
    ei * (known(row[i]) * ei + 2.0 * off)
}

/// The vectors too sparse for the lanes, each sorted by factor, with their eᵀΣe so far: each
/// adds its rows' terms ([`row_term`]) as [`FactorModel::portfolio_variance`] does, in the
/// same order (rows ascending), so to the same bits, but while the pass has the row in the
/// cache.
struct Sparse {
    es: Vec<Vec<(usize, f64)>>,
    /// Row a's (vector, place in it) at `at[starts[a]..starts[a + 1]]`.
    starts: Vec<usize>,
    at: Vec<(usize, usize)>,
    totals: Vec<f64>,
}

impl Sparse {
    fn of(k: usize, es: &[&[(usize, f64)]]) -> Sparse {
        let es: Vec<Vec<(usize, f64)>> = es.iter().map(|e| by_factor(e)).collect();
        // Counted by row, then placed: no sort of the (row, vector, place) list.
        let mut starts = vec![0; k + 1];
        es.iter().flatten().for_each(|&(i, _)| starts[i + 1] += 1);
        (0..k).for_each(|a| starts[a + 1] += starts[a]);
        let mut next = starts.clone();
        let mut at = vec![(0, 0); starts[k]];
        for (v, e) in es.iter().enumerate() {
            for (place, &(i, _)) in e.iter().enumerate() {
                at[next[i]] = (v, place);
                next[i] += 1;
            }
        }
        Sparse { totals: vec![0.0; es.len()], es, starts, at }
    }

    /// Adds rows [i, i + n) of Σ (stepped) to the vectors that hold them.
    #[inline(always)]
    fn add_rows(&mut self, cov: &[Vec<f64>], i: usize, n: usize) {
        for (a, row) in cov.iter().enumerate().skip(i).take(n) {
            for &(v, place) in &self.at[self.starts[a]..self.starts[a + 1]] {
                self.totals[v] += row_term(row, &self.es[v], place);
            }
        }
    }
}

/// Σ's step at a bar end: the returns of the bar by factor index.
#[derive(Clone, Debug, Default)]
struct Step {
    /// Each factor's return, 0.0 for those that had none.
    r: Vec<f64>,
    /// The factors that had a return, in index order, with their returns.
    rows: Vec<(usize, f64)>,
    /// Those factors as runs of consecutive indices, [start, end).
    runs: Vec<(usize, usize)>,
}

impl Step {
    /// Steps row `a` (return `ra`): each pair's entry takes its own update, so the row's
    /// entries are visited in index order; in a run they are one loop over contiguous memory.
    #[inline(always)]
    fn row(&self, row: &mut [f64], a: usize, ra: f64, lambda: f64) {
        for &(start, end) in self.runs.iter().take_while(|&&(start, _)| start <= a) {
            let end = end.min(a + 1);
            for (c, rb) in row[start..end].iter_mut().zip(&self.r[start..end]) {
                // Both sides computed and one kept, so that the loop has no branch.
                let (seed, step) = (ra * rb, ewma(Some(*c), lambda, ra * rb));
                *c = if c.is_nan() { seed } else { step };
            }
        }
    }
}

/// One factor's series.
#[derive(Clone, Debug, Default)]
pub struct Factor {
    pub name: String,
    /// Close at the last bar end, if it had a price by then.
    pub close: Option<f64>,
    /// Return at the last bar end.
    pub last_return: Option<f64>,
    pub returns: u64,
    pub ewma_var: Option<f64>,
    /// The last W returns with their quantised squares, oldest first.
    window: VecDeque<(f64, i128)>,
    window_sum: i128,
}

impl Factor {
    /// (n, (1/n)·Σr²) over the window, if it holds a return.
    pub fn window_var(&self) -> (usize, Option<f64>) {
        let n = self.window.len();
        (n, (n > 0).then(|| self.window_sum as f64 / SQUARE_UNITS / n as f64))
    }
}

/// Every factor, the EWMA covariance between them and the recent return vectors.
#[derive(Clone, Debug)]
pub struct FactorModel {
    lambda: f64,
    window: usize,
    pub factors: Vec<Factor>,
    index: HashMap<String, usize>,
    /// c_ij for i ≥ j at `cov[i][j]`; NaN until both have had a return at the same bar (a
    /// plain f64 keeps the rows dense for eᵀΣe).
    cov: Vec<Vec<f64>>,
    /// The last N bars that had any return (the historical P&L's sample), with their returns
    /// by factor, 0 where a factor had none (or was not yet known). A scope's P&L reads only
    /// the columns of its factors.
    past: Past,
    /// The last bar end closed.
    pub bar_end: Option<u64>,
    /// Σ's step at the last bar end, until a pass over Σ takes it: [`Self::portfolio_variances`]
    /// takes it in the same pass as the dense exposure vectors, [`Self::settle`] alone. Σ is
    /// larger than the caches, so a pass that does both reads it from memory once.
    pending: Option<Step>,
}

impl FactorModel {
    pub fn new(lambda: f64, window: usize, history: usize) -> FactorModel {
        FactorModel {
            lambda,
            window,
            factors: Vec::new(),
            index: HashMap::default(),
            cov: Vec::new(),
            past: Past { slots: history, ..Past::default() },
            bar_end: None,
            pending: None,
        }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    fn intern(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.factors.len();
        self.factors.push(Factor { name: name.to_owned(), ..Factor::default() });
        self.index.insert(name.to_owned(), i);
        self.cov.push(vec![f64::NAN; i + 1]);
        self.past.add_factor();
        i
    }

    /// c_ij (symmetric).
    pub fn cov(&self, i: usize, j: usize) -> Option<f64> {
        debug_assert!(self.pending.is_none(), "Σ read before its step");
        let (a, b) = if i >= j { (i, j) } else { (j, i) };
        Some(self.cov[a][b]).filter(|c| !c.is_nan())
    }

    /// Closes the bar ending at `bar_end` with each priced factor's current price (the close,
    /// carried forward by the caller passing every priced factor at every bar). Returns the
    /// indices of the factors that had a return at this bar, with their returns.
    pub fn close_bar(&mut self, bar_end: u64, closes: impl IntoIterator<Item = (String, f64)>) -> Vec<(usize, f64)> {
        let returns = self.close_bar_but_sigma(bar_end, closes);
        self.settle();
        returns
    }

    /// [`Self::close_bar`] but for Σ's step, which waits for the next
    /// [`Self::portfolio_variances`] or [`Self::settle`]; Σ must not be read before.
    pub fn close_bar_but_sigma(
        &mut self,
        bar_end: u64,
        closes: impl IntoIterator<Item = (String, f64)>,
    ) -> Vec<(usize, f64)> {
        self.settle();
        let mut returns = Vec::new();
        for (name, close) in closes {
            let i = self.intern(&name);
            let f = &mut self.factors[i];
            f.last_return = None;
            if let Some(prev) = f.close {
                let r = (close / prev).ln();
                f.last_return = Some(r);
                f.returns += 1;
                f.ewma_var = Some(ewma(f.ewma_var, self.lambda, r * r));
                let square = (r * r * SQUARE_UNITS).round() as i128;
                f.window.push_back((r, square));
                f.window_sum += square;
                if f.window.len() > self.window {
                    let (_, old) = f.window.pop_front().expect("non-empty");
                    f.window_sum -= old;
                }
                returns.push((i, r));
            }
            f.close = Some(close);
        }
        // Factors not priced at this bar (none, with carry-forward) have no return either. Σ's
        // step waits for the pass over Σ that takes it (see `Self::pending`).
        let mut step = Step { r: vec![0.0; self.factors.len()], ..Step::default() };
        step.rows = returns.clone();
        step.rows.sort_unstable_by_key(|&(i, _)| i);
        for &(i, ri) in &step.rows {
            step.r[i] = ri;
            match step.runs.last_mut() {
                Some((_, end)) if *end == i => *end = i + 1,
                _ => step.runs.push((i, i + 1)),
            }
        }
        self.pending = (!step.rows.is_empty()).then_some(step);
        if !returns.is_empty() {
            if let Some(slot) = self.past.add_bar() {
                for &(i, r) in &returns {
                    self.past.returns[i * self.past.slots + slot] = r;
                }
            }
        }
        self.bar_end = Some(bar_end);
        returns
    }

    /// Takes Σ's pending step, if any.
    pub fn settle(&mut self) {
        if let Some(step) = self.pending.take() {
            for &(a, ra) in &step.rows {
                step.row(&mut self.cov[a], a, ra, self.lambda);
            }
        }
    }

    /// ρ_ij, if both variances are positive.
    pub fn correlation(&self, i: usize, j: usize) -> Option<f64> {
        let (c, vi, vj) = (self.cov(i, j)?, self.cov(i, i)?, self.cov(j, j)?);
        (vi > 0.0 && vj > 0.0).then(|| c / (vi * vj).sqrt())
    }

    /// eᵀΣe over the factors of `e` (factor index, exposure) that have a covariance.
    /// `e` holds each factor once. Computed over the lower triangle, Σ_i e_i·(c_ii·e_i +
    /// 2·Σ_{j<i} c_ij·e_j), with the factors in index order so that each row is read forwards.
    pub fn portfolio_variance(&self, e: &[(usize, f64)]) -> f64 {
        debug_assert!(self.pending.is_none(), "Σ read before its step");
        let e = by_factor(e);
        (0..e.len()).map(|n| row_term(&self.cov[e[n].0], &e, n)).fold(0.0, |total, term| total + term)
    }

    /// eᵀΣe of each exposure vector, each the same f64 as [`Self::portfolio_variance`] gives it,
    /// after Σ's pending step. The vectors that hold a quarter of the factors or more (the
    /// firm's and the desks') are taken together, [`LANES`] at a time, in one pass over the
    /// triangle, the first of which takes the step and the sparser vectors as well: each entry
    /// of Σ is then loaded and checked once for all the dense ones, and Σ (5k factors: 100 MB)
    /// is read from memory once.
    pub fn portfolio_variances(&mut self, es: &[&[(usize, f64)]]) -> Vec<f64> {
        let k = self.cov.len();
        let (dense, sparse): (Vec<usize>, Vec<usize>) = (0..es.len()).partition(|&s| es[s].len() * 4 >= k && k > 0);
        let mut out = vec![0.0; es.len()];
        let sparse_es: Vec<&[(usize, f64)]> = sparse.iter().map(|&s| es[s]).collect();
        let mut sums = Sparse::of(k, &sparse_es);
        for (g, group) in dense.chunks(LANES).enumerate() {
            let group_es: Vec<_> = group.iter().map(|&s| es[s]).collect();
            for (&s, total) in group.iter().zip(dense_pass(self, &group_es, (g == 0).then_some(&mut sums))) {
                out[s] = total;
            }
        }
        if dense.is_empty() {
            self.settle();
            sums.add_rows(&self.cov, 0, k);
        }
        for (s, total) in sparse.into_iter().zip(sums.totals) {
            out[s] = total;
        }
        out
    }

    /// Σ's pending step, the lanes' eᵀΣe and the sparse vectors' sums in one pass over the
    /// triangle, inlined where [`pass`] picks. Rows are taken `ROWS` at a time: a block's rows
    /// are stepped, then the sparse vectors and the lanes read them from the cache, one read
    /// of x[j] serving each of the block's rows.
    #[inline(always)]
    fn pass<const W: usize, const ROWS: usize>(
        &mut self,
        lanes: &Lanes<W>,
        mut sparse: Option<&mut Sparse>,
    ) -> [f64; W] {
        let step = self.pending.take();
        let (k, x, held) = (self.cov.len(), &lanes.x, &lanes.held);
        let mut total = [0.0; W];
        let mut stepped = 0;
        let mut i = 0;
        while i < k {
            let n = ROWS.min(k - i);
            if let Some(step) = &step {
                while let Some(&(a, ra)) = step.rows.get(stepped).filter(|&&(a, _)| a < i + n) {
                    step.row(&mut self.cov[a], a, ra, self.lambda);
                    stepped += 1;
                }
            }
            if let Some(sparse) = sparse.as_deref_mut() {
                sparse.add_rows(&self.cov, i, n);
            }
            // A block none of the lanes holds adds nothing. Each row's sums run in index order:
            // a lane adds the sparse sum's terms in the same order and, between them, zeros, so
            // a row's sum can differ from the sparse one only in the sign of a zero, and a zero
            // added to the total (from +0.0) leaves its bits.
            if held[i..i + n].iter().all(|h| *h == [false; W]) {
                i += n;
                continue;
            }
            let mut off = [[0.0; W]; ROWS];
            if n == ROWS {
                let ahead = std::array::from_fn(|r| self.cov.get(i + n + r).map_or(&[][..], |row| &row[..]));
                off = columns(std::array::from_fn(|r| &self.cov[i + r][..i]), ahead, &x[..i]);
            } else {
                for (r, off) in off[..n].iter_mut().enumerate() {
                    for (c, x) in self.cov[i + r][..i].iter().zip(&x[..i]) {
                        add(off, known(*c), x);
                    }
                }
            }
            // The block's own triangle, after the columns before it.
            for (r, off) in off[..n].iter_mut().enumerate().skip(1) {
                for (c, x) in self.cov[i + r][i..i + r].iter().zip(&x[i..i + r]) {
                    add(off, known(*c), x);
                }
            }
            for (r, off) in off[..n].iter().enumerate() {
                let d = i + r;
                let c = known(self.cov[d][d]);
                for l in 0..W {
                    if held[d][l] {
                        total[l] += x[d][l] * (c * x[d][l] + 2.0 * off[l]);
                    }
                }
            }
            i += n;
        }
        total
    }

    /// How many bars, of the last N, had any return: the historical P&L's sample.
    pub fn history_bars(&self) -> usize {
        self.past.bars
    }

    /// P&L_s = Σ_f e_f·r_f,s over the bars of the history, oldest first.
    pub fn historical_pnl(&self, e: &[(usize, f64)]) -> Vec<f64> {
        self.historical_pnls(&[e]).swap_remove(0)
    }

    /// [`Self::historical_pnl`] of each exposure vector; compiled for AVX2 when the CPU has it
    /// (checked at each call), four bars to a register instead of two. The operations and
    /// their order are the same either way, so the bits are too.
    pub fn historical_pnls(&self, es: &[&[(usize, f64)]]) -> Vec<Vec<f64>> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.historical_pnls_avx2(es) };
        }
        self.pnls(es)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn historical_pnls_avx2(&self, es: &[&[(usize, f64)]]) -> Vec<Vec<f64>> {
        self.pnls(es)
    }

    /// Each vector's sums [`PNL_BARS`] bars at a time, kept in registers over its factors
    /// ([`bars`]) where a sum per bar used to be loaded and stored back at each factor. Each
    /// bar's sum still adds e's terms in e's order, from the value an empty f64 sum starts
    /// from: the same bits as summing each bar's terms in turn.
    #[inline(always)]
    fn pnls(&self, es: &[&[(usize, f64)]]) -> Vec<Vec<f64>> {
        let past = &self.past;
        let empty = std::iter::empty::<f64>().sum::<f64>();
        let mut out = vec![vec![empty; past.bars]; es.len()];
        let mut done = 0;
        for (from, to) in past.runs() {
            for b0 in (from..to).step_by(PNL_BARS) {
                let b1 = (b0 + PNL_BARS).min(to);
                let at = done + b0 - from;
                // Every vector takes the block in turn, so that its returns stay in the cache.
                for (pnl, e) in out.iter_mut().zip(es) {
                    if past.slots >= PNL_BARS {
                        // A block of a whole register's width, moved back to end at the column's
                        // end if need be: its other bars are summed and dropped.
                        let w0 = b0.min(past.slots - PNL_BARS);
                        pnl[at..at + b1 - b0].copy_from_slice(&bars(past, e, w0, empty)[b0 - w0..b1 - w0]);
                    } else {
                        for (b, sum) in (b0..b1).zip(&mut pnl[at..]) {
                            e.iter().for_each(|&(i, ei)| *sum += ei * past.returns[i * past.slots + b]);
                        }
                    }
                }
            }
            done += to - from;
        }
        out
    }
}

/// The sums Σ e_f·r_f,b over the factors of `e`, in e's order, for the bars at slots
/// [b0, b0 + PNL_BARS); in locals of their own, so that they stay in registers.
#[inline(always)]
fn bars(past: &Past, e: &[(usize, f64)], b0: usize, empty: f64) -> [f64; PNL_BARS] {
    let mut sums = [empty; PNL_BARS];
    for &(i, ei) in e {
        let at = i * past.slots + b0;
        let returns: &[f64; PNL_BARS] = past.returns[at..at + PNL_BARS].try_into().expect("a block");
        for (sum, r) in sums.iter_mut().zip(returns) {
            *sum += ei * r;
        }
    }
    sums
}

/// Bars of the history summed at a time by [`FactorModel::historical_pnls`]: eight AVX2
/// registers.
const PNL_BARS: usize = 32;

/// The returns of the last bars: one ring for every factor, so that a bar has the same slot
/// in every factor's column.
#[derive(Clone, Debug, Default)]
struct Past {
    /// Slots in a column: the history's length.
    slots: usize,
    /// Bars held (at most `slots`), and the slot of the oldest.
    bars: usize,
    oldest: usize,
    /// Factor i's column at [i·slots, (i + 1)·slots).
    returns: Vec<f64>,
}

impl Past {
    fn add_factor(&mut self) {
        self.returns.resize(self.returns.len() + self.slots, 0.0);
    }

    /// A new bar, 0 in every column until set, the oldest leaving once every slot is taken;
    /// its slot, if the history keeps any bar.
    fn add_bar(&mut self) -> Option<usize> {
        if self.slots == 0 {
            return None;
        }
        let slot = (self.oldest + self.bars) % self.slots;
        if self.bars == self.slots {
            self.oldest = (self.oldest + 1) % self.slots;
        } else {
            self.bars += 1;
        }
        self.returns.chunks_exact_mut(self.slots).for_each(|column| column[slot] = 0.0);
        Some(slot)
    }

    /// The bars' slots, oldest first, as two runs [from, to) (the second empty unless the
    /// ring wraps).
    fn runs(&self) -> [(usize, usize); 2] {
        let end = self.oldest + self.bars;
        if end <= self.slots {
            [(self.oldest, end), (0, 0)]
        } else {
            [(self.oldest, self.slots), (0, end - self.slots)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-14 * a.abs().max(b.abs())
    }

    fn close(m: &mut FactorModel, t: u64, closes: &[(&str, f64)]) -> Vec<(usize, f64)> {
        m.close_bar(t, closes.iter().map(|(n, c)| (n.to_string(), *c)))
    }

    #[test]
    fn returns_ewma_and_covariance_by_hand() {
        let mut m = FactorModel::new(0.9, 2, 10);
        // Bar 1: first closes, no returns.
        assert!(close(&mut m, 1, &[("A", 100.0), ("B", 50.0)]).is_empty());
        // Bar 2: rA = ln(1.1), rB = ln(0.9).
        let (ra, rb) = (1.1f64.ln(), 0.9f64.ln());
        close(&mut m, 2, &[("A", 110.0), ("B", 45.0)]);
        assert_eq!(m.factors[0].ewma_var, Some(ra * ra));
        assert_eq!(m.cov(0, 1), Some(ra * rb));
        // Bar 3: A unchanged (r = 0), B back to 50: rB2 = ln(50/45).
        let rb2 = (50.0f64 / 45.0).ln();
        close(&mut m, 3, &[("A", 110.0), ("B", 50.0)]);
        assert_eq!(m.factors[0].ewma_var, Some(0.9 * ra * ra));
        let vb = 0.9 * rb * rb + 0.1 * rb2 * rb2;
        assert!(near(m.factors[1].ewma_var.unwrap(), vb));
        assert!(near(m.cov(1, 0).unwrap(), 0.9 * ra * rb));
        let rho = 0.9 * ra * rb / (0.9 * ra * ra * vb).sqrt();
        assert!(near(m.correlation(0, 1).unwrap(), rho));
        // Window of 2: B's returns rb, rb2 → mean square.
        let (n, v) = m.factors[1].window_var();
        assert_eq!(n, 2);
        assert!(near(v.unwrap(), (rb * rb + rb2 * rb2) / 2.0));
        // Bar 4: rb leaves the window, exactly.
        close(&mut m, 4, &[("A", 110.0), ("B", 50.0)]);
        let (n, v) = m.factors[1].window_var();
        assert_eq!(n, 2);
        assert_eq!(m.factors[1].window_sum, (rb2 * rb2 * SQUARE_UNITS).round() as i128);
        assert!(near(v.unwrap(), rb2 * rb2 / 2.0));
        assert_eq!(m.history_bars(), 3);
    }

    #[test]
    fn historical_pnl_keeps_the_last_bars_and_counts_a_late_factor_from_its_first_return() {
        let mut m = FactorModel::new(0.94, 250, 2);
        close(&mut m, 1, &[("A", 100.0)]);
        close(&mut m, 2, &[("A", 110.0)]);
        close(&mut m, 3, &[("A", 121.0), ("B", 10.0)]);
        close(&mut m, 4, &[("A", 110.0), ("B", 12.0)]);
        // Three bars had returns; two are kept: bar 3 (B not yet returned: 0) and bar 4.
        assert_eq!(m.history_bars(), 2);
        let (a3, a4, b4) = (1.1f64.ln(), (110.0f64 / 121.0).ln(), 1.2f64.ln());
        let pnl = m.historical_pnl(&[(1, -500.0), (0, 1000.0)]);
        assert_eq!(pnl, vec![-500.0 * 0.0 + 1000.0 * a3, -500.0 * b4 + 1000.0 * a4]);
        assert_eq!(m.historical_pnl(&[]), vec![0.0, 0.0]);
    }

    #[test]
    fn historical_pnl_equals_each_bar_summed_in_turn_bit_for_bit() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        // Histories shorter than a block of bars, not a multiple of one, and two blocks long;
        // 100 bars, so that each ring wraps. "F5" starts at bar 20, "F4" skips every third
        // bar (its returns then span two bars), and bar 50 has no return at all.
        for history in [10, 40, 64] {
            let mut m = FactorModel::new(0.94, 250, history);
            let mut rng = SmallRng::seed_from_u64(history as u64);
            let mut last: Vec<Option<f64>> = vec![None; 6];
            let mut bars: Vec<Vec<f64>> = Vec::new();
            for t in 1..=100u64 {
                let mut closes = Vec::new();
                for f in 0..6 {
                    if (f == 5 && t < 20) || (f == 4 && t % 3 == 0) || t == 50 {
                        continue;
                    }
                    closes.push((format!("F{f}"), 100.0 * (1.0 + rng.random::<f64>() / 20.0)));
                }
                // Factors are numbered as first closed; every close but F5's comes first at bar 1.
                let (mut r, mut returned) = (vec![0.0; 6], false);
                for (name, close) in &closes {
                    let f: usize = name[1..].parse().unwrap();
                    if let Some(prev) = last[f] {
                        (r[f], returned) = ((close / prev).ln(), true);
                    }
                    last[f] = Some(*close);
                }
                m.close_bar(t, closes);
                if returned {
                    bars.push(r);
                }
                let kept = &bars[bars.len().saturating_sub(history)..];
                assert_eq!(m.history_bars(), kept.len(), "history {history}, bar {t}");
                // Only factors the model has numbered (F5 from bar 20).
                let known = |e: Vec<(usize, f64)>| -> Vec<(usize, f64)> {
                    e.into_iter().filter(|&(f, _)| f < m.factors.len()).collect()
                };
                let es: Vec<Vec<(usize, f64)>> = vec![
                    known(vec![(3, 2.5e6), (0, -1.0e6), (5, 7.0e5)]),
                    known((0..6).rev().map(|f| (f, 1e5 * f as f64 - 2e5)).collect()),
                    vec![],
                ];
                let refs: Vec<&[(usize, f64)]> = es.iter().map(|e| &e[..]).collect();
                let together = m.historical_pnls(&refs);
                for (e, pnl) in es.iter().zip(&together) {
                    let expected: Vec<u64> = (kept.iter())
                        .map(|r| {
                            e.iter().fold(std::iter::empty::<f64>().sum::<f64>(), |s, &(f, ef)| s + ef * r[f]).to_bits()
                        })
                        .collect();
                    let got: Vec<u64> = pnl.iter().map(|p| p.to_bits()).collect();
                    assert_eq!(got, expected, "history {history}, bar {t}, {e:?}");
                    assert_eq!(m.historical_pnl(e), *pnl);
                }
            }
        }
    }

    #[test]
    fn a_late_factor_seeds_its_covariances_when_it_first_returns() {
        let mut m = FactorModel::new(0.94, 250, 250);
        close(&mut m, 1, &[("A", 100.0)]);
        close(&mut m, 2, &[("A", 101.0), ("C", 10.0)]);
        assert_eq!(m.cov(0, 1), None);
        close(&mut m, 3, &[("A", 102.0), ("C", 11.0)]);
        let (ra, rc) = ((102.0f64 / 101.0).ln(), 1.1f64.ln());
        assert_eq!(m.cov(0, 1), Some(ra * rc));
        // Historical P&L of e = (A: 1000, C: -500) over the two bars with returns.
        let pnl = m.historical_pnl(&[(0, 1000.0), (1, -500.0)]);
        assert_eq!(pnl, vec![1000.0 * 1.01f64.ln(), 1000.0 * ra - 500.0 * rc]);
    }

    #[test]
    fn covariances_step_pair_by_pair_when_factors_skip_bars() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        // Seven factors; at each bar some leave out (a gap anywhere in the index order), so the
        // returns come in several runs. Each pair is stepped alone beside the model.
        let (lambda, k) = (0.9, 7);
        let mut m = FactorModel::new(lambda, 5, 5);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut last: Vec<Option<f64>> = vec![None; k];
        let mut cov: Vec<Vec<Option<f64>>> = vec![vec![None; k]; k];
        for t in 1..40u64 {
            let mut closes: Vec<(String, f64)> = Vec::new();
            for i in 0..k {
                if t == 1 || rng.random::<f64>() < 0.7 {
                    closes.push((format!("F{i}"), 100.0 * (1.0 + rng.random::<f64>() / 20.0)));
                }
            }
            let mut r: Vec<Option<f64>> = vec![None; k];
            for (name, close) in &closes {
                let i: usize = name[1..].parse().unwrap();
                r[i] = last[i].map(|p| (close / p).ln());
                last[i] = Some(*close);
            }
            for (a, row) in cov.iter_mut().enumerate() {
                for (b, c) in row[..=a].iter_mut().enumerate() {
                    if let (Some(ra), Some(rb)) = (r[a], r[b]) {
                        *c = Some(ewma(*c, lambda, ra * rb));
                    }
                }
            }
            m.close_bar(t, closes);
            for (a, row) in cov.iter().enumerate() {
                for (b, c) in row[..=a].iter().enumerate() {
                    assert_eq!(m.cov(a, b).map(f64::to_bits), c.map(f64::to_bits), "bar {t}, ({a}, {b})");
                }
            }
        }
    }

    #[test]
    fn portfolio_variance_is_the_full_double_sum() {
        // Seeded closes; "E" starts late and "F" has only its first close, so no covariance.
        let mut m = FactorModel::new(0.9, 10, 10);
        let mut x = 7u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            1.0 + ((x >> 33) % 1000) as f64 / 10_000.0
        };
        for t in 1..8u64 {
            let mut closes: Vec<(String, f64)> = ["A", "B", "C", "D"].iter().map(|f| (f.to_string(), 0.0)).collect();
            if t >= 6 {
                closes.push(("E".into(), 0.0));
            }
            if t == 7 {
                closes.push(("F".into(), 0.0));
            }
            for c in &mut closes {
                c.1 = 100.0 * next();
            }
            m.close_bar(t, closes);
        }
        // Unsorted, with a factor that has no covariance with some others.
        let e = [(3, 2.5e6), (0, -1.0e6), (5, 1.0e6), (4, 7.0e5), (1, 3.0e5), (2, -4.0e6)];
        let mut full = 0.0;
        for &(i, ei) in &e {
            for &(j, ej) in &e {
                full += ei * ej * m.cov(i, j).unwrap_or(0.0);
            }
        }
        assert!(m.cov(4, 0).is_some() && m.cov(5, 0).is_none());
        assert!(near(m.portfolio_variance(&e), full), "{} vs {full}", m.portfolio_variance(&e));
    }

    #[test]
    fn variances_taken_together_equal_each_taken_alone_bit_for_bit() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        // 42 factors (ten blocks of rows and a short one), three of them late (no covariance
        // with the rest before bar 10), one never returned; 21 vectors, all but every fifth dense
        // enough to share a pass over Σ. The last bar is closed twice: once with Σ's step taken
        // alone, once with the step left to the pass that takes the vectors.
        let mut m = FactorModel::new(0.94, 10, 10);
        let mut rng = SmallRng::seed_from_u64(11);
        let mut next = || rng.random::<f64>();
        let names: Vec<String> = (0..42).map(|i| format!("F{i:02}")).collect();
        let mut last = Vec::new();
        for t in 1..12u64 {
            let listed = [38, 38, 38, 38, 38, 38, 38, 38, 41, 41, 42][t as usize - 1];
            last = names[..listed].iter().map(|n| (n.clone(), 100.0 * (1.0 + next() / 50.0))).collect();
            if t < 11 {
                m.close_bar(t, last.clone());
            }
        }
        let before = m.clone();
        m.close_bar(11, last.clone());
        assert!(m.cov(39, 0).is_some() && m.cov(41, 0).is_none());
        let mut vectors: Vec<Vec<(usize, f64)>> = Vec::new();
        for v in 0..21 {
            // Held with a probability of 1 in 6 for every fifth vector (too sparse for the
            // lanes), all of the first 30 factors for the second (the pass skips the blocks
            // after them), 2 in 3 for the others; some exposures exactly zero or negative;
            // unsorted.
            let mut e: Vec<(usize, f64)> = (0..42)
                .filter_map(|i| {
                    let held = match v {
                        _ if v % 5 == 0 => next() < 1.0 / 6.0,
                        1 => i < 30,
                        _ => next() < 2.0 / 3.0,
                    };
                    let value = if next() < 0.1 { 0.0 } else { (next() - 0.4) * 1e7 };
                    held.then_some((i, value))
                })
                .collect();
            e.reverse();
            vectors.push(e);
        }
        let refs: Vec<&[(usize, f64)]> = vectors.iter().map(|e| &e[..]).collect();
        let bits = |m: &FactorModel| -> Vec<Vec<u64>> {
            m.cov.iter().map(|row| row.iter().map(|c| c.to_bits()).collect()).collect()
        };
        // No dense vector, then passes 4, 8, 12 and 16 wide (the sparse vectors in the first),
        // then a second pass.
        assert!(vectors.iter().enumerate().all(|(v, e)| (e.len() * 4 < 42) == (v % 5 == 0)));
        for n in 1..=21 {
            let mut lazy = before.clone();
            lazy.close_bar_but_sigma(11, last.clone());
            let together = lazy.portfolio_variances(&refs[..n]);
            for (e, v) in vectors.iter().zip(&together) {
                assert_eq!(v.to_bits(), m.portfolio_variance(e).to_bits(), "{n} vectors: {e:?}");
            }
            assert!(bits(&lazy) == bits(&m), "{n} vectors: Σ's step");
        }
        // Exposures that are all -0.0, in a dense group: the same bits as alone too.
        let zeros: Vec<(usize, f64)> = (0..20).map(|i| (i, -0.0)).collect();
        let alone = m.portfolio_variance(&zeros);
        assert_eq!(m.portfolio_variances(&[&zeros[..], refs[1], refs[2]])[0].to_bits(), alone.to_bits());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "Σ read before its step")]
    fn sigma_is_not_read_before_its_step() {
        let mut m = FactorModel::new(0.94, 10, 10);
        m.close_bar(1, [("A".to_string(), 100.0)]);
        m.close_bar_but_sigma(2, [("A".to_string(), 101.0)]);
        m.cov(0, 0);
    }
}
