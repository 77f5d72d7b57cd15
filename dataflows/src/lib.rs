//! riskflow's dataflow graph and the risk math it needs.
//!
//! Each measure is a function from streams to streams ([`book::book`],
//! [`snapshot::collect_snapshots`]); the binary's wiring creates the inputs, probes and sinks.
//! Formula code ([`formulas`], [`exposure`]) holds no dataflow state and is shared with the
//! batch reconciliation.

pub mod analytics;
pub mod book;
pub mod clock;
pub mod engine;
pub mod event;
pub mod exposure;
pub mod formulas;
pub mod growing;
pub mod limits;
pub mod model;
pub mod snapshot;

use timely::dataflow::operators::InputCapability;

/// The time of a message with a totally ordered timestamp.
pub(crate) fn time_of(cap: &InputCapability<model::Ts>) -> model::Ts {
    *cap.least().expect("a message carries a time")
}

/// A stable 64-bit FNV-1a hash, used to route records to workers identically in every process.
pub fn route_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Starts loading `value`'s cache line; no effect on the program's meaning.
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints the cache; `value` is a valid reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Starts loading every cache line of `value`.
#[inline]
pub(crate) fn prefetch_all<T>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    for offset in (0..std::mem::size_of::<T>()).step_by(64) {
        // SAFETY: the offset lies within `value`, which is a valid reference.
        prefetch(unsafe { &*start.add(offset) });
    }
}
