//! The allocator riskflow runs with, shared by the `riskflow` binary and the benches so that
//! they measure what ships.
//!
//! mimalloc rather than glibc's malloc: a replay allocates and frees the strings of every
//! record and a snapshot's parts at every boundary, and glibc spent ~5% of the worker in its
//! free lists and ~5% faulting in pages it had given back. Measured, with the options below,
//! in the allocator's entry in docs/performance-notes.md; its options in docs/configuration.md.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`: its place in mimalloc v2's `mi_option_t` (mimalloc.h), for which
/// the crate names no constant. The test below checks that it reads the documented default.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long, in ms, freed memory stays with the process before mimalloc gives it back to the
/// OS. At its default, 10 ms, what a snapshot freed went back before the next one allocated it
/// again, and was faulted in anew.
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Sets the allocator up; call first thing in `main`. Variables `MIMALLOC_*` in the
/// environment still set mimalloc's options.
///
/// Transparent huge pages are turned off for the process: with them (this machine's setting,
/// `always`), each huge page mimalloc touched was zeroed or compacted first, ~1.6 s of system
/// time in the 1M-delta day's live path against ~0.6 s without.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option, before any other thread runs.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: a flag of this process's memory map; a failure leaves it as it was.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn configure_sets_the_purge_delay_option_and_turns_huge_pages_off() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() || std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        // SAFETY: reads an integer option; reads a flag of this process.
        let delay = || unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        let thp_off = || unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(delay(), 10, "not mimalloc's purge delay, or not its default");
        super::configure();
        assert_eq!(delay(), super::PURGE_DELAY_MS);
        assert_eq!(thp_off(), 1);
    }
}
