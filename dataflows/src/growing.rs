//! Containers for state that keeps growing while records flow (delta ids, positions,
//! tallies). A plain `Vec` or hash table doubles by copying everything at once: at a million
//! entries that stalls the live path for milliseconds, which is the latency tail. These grow
//! without that pause.

use std::ops::{Index, IndexMut};

use rustc_hash::FxBuildHasher;

/// A hash map that, when it outgrows its table, moves entries to the larger one a few per
/// insert rather than all at once.
pub type GrowingMap<K, V> = griddle::HashMap<K, V, FxBuildHasher>;

/// Shards per [`IdSet`], each growing on its own: a step of growth (allocating the larger
/// table, freeing the smaller) is a 256th of the set's.
const SHARDS: usize = 256;

/// Keys per line of an [`IdSet`]'s table: a line is one cache line.
const PER_LINE: usize = 4;

/// Lines a shard's first table has.
const FIRST_LINES: usize = 4;

/// Lines of the old table moved to the new one per insert while a shard grows. The new table
/// fills from 3/8 to 3/4 in three inserts per old line, so the old one is gone well before.
const MOVE_PER_INSERT: usize = 2;

/// Lines of the next table zeroed per insert once a shard's table is 5/8 full. A table of L
/// lines takes L/2 inserts from 5/8 to 3/4 full, and the next one has 2L lines.
const ZERO_PER_INSERT: usize = 4;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u128; PER_LINE]);

const EMPTY: Line = Line([0; PER_LINE]);

/// The set of the book's delta ids, as 128-bit hashes: one cache line read per insert, at an
/// address known before, so that [`IdSet::prefetch`] can start loading it and the misses of
/// many inserts overlap instead of following one another. A day holds millions of ids, far
/// more than the cache does: the general hash set this replaces read two lines per insert
/// (control bytes, then the key) and gave no address to prefetch; the throughput bench ran
/// ~1.4× as fast with no set at all, ~1.2× with this one (docs/performance.md).
///
/// The keys must be uniform, as hashes are: a shard is chosen by a key's top byte and its
/// place by its low bits. Open addressing over lines of four keys, probing line after line, at
/// most 3/4 full; 0 marks an empty place, so the key 0 is kept as 1. It grows without a
/// pause: a shard that outgrows its table gets one twice as large, keeps the old one readable
/// and moves a few of its lines per insert; until all are moved, a key is looked up in both.
pub struct IdSet {
    shards: Vec<Shard>,
}

#[derive(Default)]
struct Shard {
    lines: Box<[Line]>,
    /// Keys in the shard, those still only in `old` included.
    len: usize,
    /// The table before the last growth while its lines are moved, `moved` of them so far.
    old: Box<[Line]>,
    moved: usize,
    /// The table that comes next, twice as large, zeroed a few lines per insert from 5/8 full
    /// on. Taken zeroed from the allocator at once, a large table was a pause: for memory it
    /// reuses, the allocator zeroes it then (1.7 ms for 4 MB, a shard's table at ~30M ids).
    next: Vec<Line>,
}

/// Where a key is, or the empty place it would take.
enum Probe {
    Found,
    Empty(usize, usize),
}

fn home(lines: &[Line], key: u128) -> usize {
    key as usize & (lines.len() - 1)
}

fn probe(lines: &[Line], key: u128) -> Probe {
    let mut l = home(lines, key);
    loop {
        for (s, &k) in lines[l].0.iter().enumerate() {
            if k == key {
                return Probe::Found;
            }
            if k == 0 {
                return Probe::Empty(l, s);
            }
        }
        l = (l + 1) & (lines.len() - 1);
    }
}

impl Shard {
    fn insert(&mut self, key: u128) -> bool {
        if !self.old.is_empty() {
            self.carry(MOVE_PER_INSERT);
        }
        if self.len * 8 > self.lines.len() * PER_LINE * 5 {
            let size = self.next_size();
            // Its memory is taken when zeroing starts, and not written at once: the allocator
            // has nothing to zero.
            self.next.reserve_exact(size - self.next.len());
            self.next.extend(std::iter::repeat_n(EMPTY, (size - self.next.len()).min(ZERO_PER_INSERT)));
        }
        if (self.len + 1) * 4 > self.lines.len() * PER_LINE * 3 {
            self.grow();
        }
        let Probe::Empty(l, s) = probe(&self.lines, key) else { return false };
        if !self.old.is_empty() && matches!(probe(&self.old, key), Probe::Found) {
            return false;
        }
        self.lines[l].0[s] = key;
        self.len += 1;
        true
    }

    fn next_size(&self) -> usize {
        (self.lines.len() * 2).max(FIRST_LINES)
    }

    fn grow(&mut self) {
        self.carry(self.old.len());
        let size = self.next_size();
        let mut next = std::mem::take(&mut self.next);
        // Only the first, small tables are not all zeroed ahead.
        next.resize(size, EMPTY);
        self.old = std::mem::replace(&mut self.lines, next.into_boxed_slice());
        self.moved = 0;
    }

    /// Moves up to `n` lines of the old table to the new one; frees it once all are.
    fn carry(&mut self, n: usize) {
        let end = (self.moved + n).min(self.old.len());
        for l in self.moved..end {
            // A key of the old table is not in the new one: an insert checks both.
            for key in self.old[l].0.into_iter().filter(|&k| k != 0) {
                if let Probe::Empty(l, s) = probe(&self.lines, key) {
                    self.lines[l].0[s] = key;
                }
            }
        }
        self.moved = end;
        if self.moved == self.old.len() {
            self.old = Box::default();
        }
    }
}

impl Default for IdSet {
    fn default() -> Self {
        IdSet { shards: (0..SHARDS).map(|_| Shard::default()).collect() }
    }
}

impl IdSet {
    fn shard(key: u128) -> (usize, u128) {
        ((key >> 120) as usize % SHARDS, key.max(1))
    }

    /// True if the key was not in the set.
    pub fn insert(&mut self, key: u128) -> bool {
        let (shard, key) = IdSet::shard(key);
        self.shards[shard].insert(key)
    }

    /// Starts loading the line(s) an insert of `key` will read first.
    pub fn prefetch(&self, key: u128) {
        let (shard, key) = IdSet::shard(key);
        let shard = &self.shards[shard];
        for lines in [&shard.lines, &shard.old] {
            if !lines.is_empty() {
                crate::prefetch(&lines[home(lines, key)]);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|t| t.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Elements per chunk of a [`Chunked`].
const CHUNK: usize = 1 << 12;

/// A vector stored in fixed-size chunks: pushing never moves the elements already stored.
pub struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { chunks: Vec::new(), len: 0 }
    }
}

impl<T> Chunked<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, value: T) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("a chunk with room").push(value);
        self.len += 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_set_holds_what_a_hash_set_holds() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let keys: Vec<u128> = (0..60_000).map(|_| rng.random()).collect();
        let (mut set, mut plain) = (IdSet::default(), std::collections::HashSet::new());
        assert!(set.is_empty());
        // Enough keys that every shard grows several times, most of them inserted twice, some
        // while their shard still moves its old table.
        for i in 0..100_000usize {
            let key = keys[(i * 7919) % keys.len()];
            set.prefetch(key);
            assert_eq!(set.insert(key), plain.insert(key), "insert {i}: {key}");
        }
        assert_eq!(set.len(), plain.len());
        assert!(keys.iter().all(|&k| !set.insert(k)), "every key is in");
        assert_eq!(set.len(), keys.len());
    }

    #[test]
    fn id_set_keeps_keys_that_share_a_place() {
        // One shard and one home line, the last: the keys overflow into the first lines.
        let mut set = IdSet::default();
        let keys: Vec<u128> = (1..=40u128).map(|i| (i << 64) | u64::MAX as u128).collect();
        assert!(keys.iter().all(|&k| set.insert(k)));
        assert!(keys.iter().all(|&k| !set.insert(k)));
        assert!(set.insert(0) && !set.insert(1), "0 is kept as 1");
        assert_eq!(set.len(), 41);
    }

    #[test]
    fn chunked_indexes_and_iterates_like_a_vec() {
        let (mut chunked, mut plain) = (Chunked::default(), Vec::new());
        for i in 0..3 * CHUNK + 5 {
            chunked.push(i * 7);
            plain.push(i * 7);
        }
        chunked[CHUNK] += 1;
        plain[CHUNK] += 1;
        assert_eq!(chunked.len(), plain.len());
        assert!((0..plain.len()).all(|i| chunked[i] == plain[i]));
        assert!(chunked.iter().eq(plain.iter()));
        assert!(Chunked::<u8>::default().is_empty());
    }
}
