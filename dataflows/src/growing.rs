//! Containers for state that keeps growing while records flow (delta ids, positions,
//! tallies). A plain `Vec` or hash table doubles by copying everything at once: at a million
//! entries that stalls the live path for milliseconds, which is the latency tail. These grow
//! without that pause.

use std::hash::{BuildHasher, Hash};
use std::ops::{Index, IndexMut};

use rustc_hash::FxBuildHasher;

/// A hash map that, when it outgrows its table, moves entries to the larger one a few per
/// insert rather than all at once.
pub type GrowingMap<K, V> = griddle::HashMap<K, V, FxBuildHasher>;

/// Tables per [`GrowingSet`], each growing on its own. A [`GrowingMap`] that outgrows its table
/// moves its entries a few per insert, but it still allocates the larger table (and fills its
/// control bytes) in one step, and frees the old one in one step: for the book's delta ids,
/// a million or more in a day, ~0.8 ms and 0.4-0.8 ms of one record's time (timed in a
/// temporary build of the latency bench; docs/performance.md, "Latency"). Split 256 ways, each
/// such step is 1/256 of that.
const SHARDS: usize = 256;

/// A hash set that grows without a pause: [`SHARDS`] [`GrowingMap`]s, a key's chosen by bits
/// of its hash that its table does not use to place it (the low bits pick a bucket, the top
/// seven are its control byte).
pub struct GrowingSet<K> {
    shards: Vec<GrowingMap<K, ()>>,
}

impl<K> Default for GrowingSet<K> {
    fn default() -> Self {
        GrowingSet { shards: (0..SHARDS).map(|_| GrowingMap::default()).collect() }
    }
}

impl<K: Hash + Eq> GrowingSet<K> {
    /// True if the key was not in the set.
    pub fn insert(&mut self, key: K) -> bool {
        let shard = (FxBuildHasher.hash_one(&key) >> 40) as usize % SHARDS;
        self.shards[shard].insert(key, ()).is_none()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|t| t.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|t| t.is_empty())
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
    fn growing_set_holds_what_a_hash_set_holds() {
        let (mut set, mut plain) = (GrowingSet::default(), std::collections::HashSet::new());
        assert!(set.is_empty());
        // Enough keys that every shard outgrows its first tables, most of them inserted twice.
        for i in 0..100_000u64 {
            let key = (i * 7919) % 60_000;
            assert_eq!(set.insert(key), plain.insert(key), "insert {key}");
        }
        assert_eq!(set.len(), plain.len());
        assert!((0..60_000u64).all(|k| !set.insert(k)), "every key is in");
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
