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

/// Starts loading every cache line `value` lies on: its first byte's, then the first byte of
/// each next line within it. A value that does not start a line can lie on one line more than
/// its size needs (a 368-byte scope state on seven rather than six), and steps of 64 bytes
/// from its start would miss the last.
#[inline]
pub(crate) fn prefetch_all<T>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    for offset in line_offsets(start as usize, std::mem::size_of::<T>()) {
        // SAFETY: the offset lies within `value`, which is a valid reference.
        prefetch(unsafe { &*start.add(offset) });
    }
}

/// The offsets [`prefetch_all`] loads in a value of `size` bytes at `addr`: one on each line.
fn line_offsets(addr: usize, size: usize) -> impl Iterator<Item = usize> {
    std::iter::once(0).chain((64 - addr % 64..size).step_by(64))
}

#[cfg(test)]
mod tests {
    /// Each line a value lies on is loaded once, wherever in a line it starts.
    #[test]
    fn prefetch_all_loads_each_line_a_value_lies_on() {
        for size in [1, 8, 63, 64, 65, 152, 368] {
            for addr in (4096..4096 + 64).step_by(8) {
                let loaded: Vec<usize> = super::line_offsets(addr, size).map(|o| (addr + o) / 64).collect();
                let lines: Vec<usize> = (addr / 64..=(addr + size - 1) / 64).collect();
                assert_eq!(loaded, lines, "{size} bytes at {addr}");
            }
        }
    }
}
