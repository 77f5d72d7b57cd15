//! Containers for state that keeps growing while records flow (delta ids, positions,
//! tallies). A plain `Vec` or hash table doubles by copying everything at once: at a million
//! entries that stalls the live path for milliseconds, which is the latency tail. These grow
//! without that pause.

use std::ops::{Index, IndexMut};

/// A hash map that, when it outgrows its table, moves entries to the larger one a few per
/// insert rather than all at once.
pub type GrowingMap<K, V> = griddle::HashMap<K, V, rustc_hash::FxBuildHasher>;

/// The set counterpart of [`GrowingMap`].
pub type GrowingSet<K> = griddle::HashSet<K, rustc_hash::FxBuildHasher>;

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
