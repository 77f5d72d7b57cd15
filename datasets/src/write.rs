//! Output files: a buffered writer that hashes (SHA-256) and counts what it writes, and the
//! hand-rolled JSON formatting of the two large files (ticks and deltas).
//!
//! Each file gets a writer thread that hashes and writes full 1 MiB buffers while the
//! generator formats the next ones (bounded: at most a few buffers in flight).
//!
//! The hot path formats numbers itself rather than going through `serde_json` per line; the
//! lines are ordinary JSON that the model types of `riskflow_dataflows::model` parse (the
//! tests check every line). Prices and quantities are written as exact decimals of their
//! 1e-8 integer units, which parse to the same `f64` — and so the same `Fixed` — as the
//! `f64` that `serde` would have printed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::GenError;

/// Bytes buffered before they are handed to the file's writer thread.
const CHUNK: usize = 1 << 20;
/// Full buffers queued for the writer thread at most (bounds memory to a few MiB per file).
const QUEUE: usize = 2;

type Worker = JoinHandle<Result<(u64, String), std::io::Error>>;

/// A file being written: lines are formatted into `buf`; full buffers go to a thread that
/// hashes (SHA-256) and writes them, so formatting, hashing and writing overlap.
pub(crate) struct Out {
    path: PathBuf,
    name: String,
    pub buf: Vec<u8>,
    /// Lines completed so far (the caller counts them with [`Out::end_line`]).
    pub lines: u64,
    tx: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    worker: Option<Worker>,
}

/// A finished file: name, size and SHA-256 (lowercase hex).
pub(crate) struct Written {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

impl Out {
    pub fn create(dir: &Path, name: &str) -> Result<Out, GenError> {
        let path = dir.join(name);
        let mut file = File::create(&path).map_err(|e| GenError::io(&path, e))?;
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let (spare_tx, spare) = channel::<Vec<u8>>();
        let worker = std::thread::Builder::new()
            .name(format!("write {name}"))
            .spawn(move || {
                let mut hasher = Sha256::new();
                let mut bytes = 0u64;
                for mut buf in rx {
                    hasher.update(&buf);
                    file.write_all(&buf)?;
                    bytes += buf.len() as u64;
                    buf.clear();
                    let _ = spare_tx.send(buf);
                }
                file.flush()?;
                Ok((bytes, hex(&hasher.finalize())))
            })
            .map_err(|e| GenError::io(&path, e))?;
        Ok(Out {
            path,
            name: name.to_string(),
            buf: Vec::with_capacity(CHUNK + 4096),
            lines: 0,
            tx: Some(tx),
            spare,
            worker: Some(worker),
        })
    }

    /// Counts a line the caller just appended to `buf` (ending in `\n`) and hands a full
    /// buffer to the writer thread.
    #[inline]
    pub fn end_line(&mut self) -> Result<(), GenError> {
        self.lines += 1;
        if self.buf.len() >= CHUNK {
            self.flush_buf()?;
        }
        Ok(())
    }

    /// Appends a whole line (without its `\n`).
    pub fn line(&mut self, s: &[u8]) -> Result<(), GenError> {
        self.buf.extend_from_slice(s);
        self.buf.push(b'\n');
        self.end_line()
    }

    fn flush_buf(&mut self) -> Result<(), GenError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK + 4096));
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(full).is_ok());
        if !sent {
            // The writer stopped: it has the error.
            self.join()?;
            return Err(GenError::io(&self.path, std::io::Error::other("writer thread stopped")));
        }
        Ok(())
    }

    fn join(&mut self) -> Result<(u64, String), GenError> {
        self.tx = None;
        let worker = self.worker.take().expect("joined once");
        match worker.join() {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(GenError::io(&self.path, e)),
            Err(_) => Err(GenError::io(&self.path, std::io::Error::other("writer thread panicked"))),
        }
    }

    pub fn finish(mut self) -> Result<Written, GenError> {
        self.flush_buf()?;
        let (bytes, sha256) = self.join()?;
        Ok(Written { name: std::mem::take(&mut self.name), bytes, sha256 })
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        // An abandoned file (an error elsewhere): let the writer finish and stop.
        self.tx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Lowercase hex of a byte string.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Two-digit decimal strings "00".."99".
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends the decimal digits of `n`.
#[inline]
pub(crate) fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    while n >= 100 {
        let d = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    if n >= 10 {
        let d = n as usize * 2;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    } else {
        i -= 1;
        tmp[i] = b'0' + n as u8;
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Appends a count of 1e-8 units as a decimal: integer part, then up to eight fractional
/// digits without trailing zeros (`-12.5`, `100`, `0.00000001`), exactly what
/// `riskflow_dataflows::model::Fixed` displays.
#[inline]
pub(crate) fn push_fixed(buf: &mut Vec<u8>, units: i64) {
    if units < 0 {
        buf.push(b'-');
    }
    let abs = units.unsigned_abs();
    push_u64(buf, abs / 100_000_000);
    let mut frac = abs % 100_000_000;
    if frac != 0 {
        let mut digits = 8;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        buf.push(b'.');
        let mut tmp = [b'0'; 8];
        let mut i = digits;
        while frac > 0 {
            i -= 1;
            tmp[i] = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        buf.extend_from_slice(&tmp[..digits]);
    }
}

/// A pre-formatted piece of a line of at most 64 bytes, copied with one fixed-size move.
#[derive(Clone, Debug)]
pub(crate) struct Frag([u8; 64], u8);

impl Frag {
    /// `None` if `s` is longer than 64 bytes.
    pub fn new(s: &[u8]) -> Option<Frag> {
        let mut b = [0u8; 64];
        b.get_mut(..s.len())?.copy_from_slice(s);
        Some(Frag(b, s.len() as u8))
    }
}

/// One line assembled on the stack with fixed-size copies, then appended to a buffer in a
/// single move (variable-length appends cost a `memmove` call each).
pub(crate) struct Line {
    b: [u8; 256],
    n: usize,
}

impl Line {
    #[inline]
    pub fn new() -> Line {
        Line { b: [0; 256], n: 0 }
    }

    #[inline]
    pub fn lit<const N: usize>(&mut self, s: &[u8; N]) {
        self.b[self.n..self.n + N].copy_from_slice(s);
        self.n += N;
    }

    #[inline]
    pub fn frag(&mut self, f: &Frag) {
        self.b[self.n..self.n + 64].copy_from_slice(&f.0);
        self.n += f.1 as usize;
    }

    /// Decimal digits of `v`.
    #[inline]
    pub fn u64(&mut self, mut v: u64) {
        let mut digits = 1;
        let mut t = v;
        while t >= 10 {
            t /= 10;
            digits += 1;
        }
        let mut i = self.n + digits;
        self.n = i;
        while v >= 100 {
            let d = (v % 100) as usize * 2;
            v /= 100;
            i -= 2;
            self.b[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
        }
        if v >= 10 {
            let d = v as usize * 2;
            self.b[i - 2..i].copy_from_slice(&PAIRS[d..d + 2]);
        } else {
            self.b[i - 1] = b'0' + v as u8;
        }
    }

    /// A count of 1e-8 units, formatted like [`push_fixed`].
    #[inline]
    pub fn fixed(&mut self, units: i64) {
        if units < 0 {
            self.b[self.n] = b'-';
            self.n += 1;
        }
        let abs = units.unsigned_abs();
        self.u64(abs / 100_000_000);
        let mut frac = abs % 100_000_000;
        if frac != 0 {
            let mut digits = 8;
            while frac.is_multiple_of(10) {
                frac /= 10;
                digits -= 1;
            }
            self.b[self.n] = b'.';
            let mut i = self.n + 1 + digits;
            self.n = i;
            for _ in 0..digits {
                i -= 1;
                self.b[i] = b'0' + (frac % 10) as u8;
                frac /= 10;
            }
        }
    }

    /// Appends the line to `buf`.
    #[inline]
    pub fn append_to(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.b[..self.n]);
    }
}

/// A string as a JSON string literal (quotes included).
pub(crate) fn json_str(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).expect("a string serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use riskflow_dataflows::model::Fixed;

    #[test]
    fn fixed_formatting_matches_the_model() {
        for units in [
            0,
            1,
            -1,
            100_000_000,
            -250_000_000,
            12_345_678_901,
            123_456_700_000,
            99_999_999_999_999,
            -4_200_000_000,
            10,
        ] {
            let mut buf = Vec::new();
            push_fixed(&mut buf, units);
            let s = String::from_utf8(buf).unwrap();
            assert_eq!(s, Fixed(units).to_string());
            let back: Fixed = serde_json::from_str(&s).unwrap();
            assert_eq!(back, Fixed(units), "{s}");
        }
    }

    #[test]
    fn stack_lines_format_like_the_buffer_helpers() {
        let f = Frag::new(b",\"x\":").unwrap();
        assert!(Frag::new(&[b'a'; 65]).is_none());
        for (n, units) in [
            (0u64, 0i64),
            (9, -1),
            (10, 123_456_700_000),
            (u64::MAX, -99_999_999_999_999),
            (1_772_461_800_000_000_000, 100_000_000),
        ] {
            let mut l = Line::new();
            l.lit(b"{");
            l.u64(n);
            l.frag(&f);
            l.fixed(units);
            let mut got = Vec::new();
            l.append_to(&mut got);
            let mut want = b"{".to_vec();
            push_u64(&mut want, n);
            want.extend_from_slice(b",\"x\":");
            push_fixed(&mut want, units);
            assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
        }
    }

    #[test]
    fn integers_format() {
        let mut buf = Vec::new();
        for n in [0, 7, 10, 99, 100, 101, 12_345, 1_772_461_800_000_000_000, u64::MAX] {
            buf.clear();
            push_u64(&mut buf, n);
            assert_eq!(String::from_utf8(buf.clone()).unwrap(), n.to_string());
        }
    }
}
