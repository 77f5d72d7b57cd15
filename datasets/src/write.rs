//! Output files: a buffered writer that hashes (SHA-256) and counts what it writes, and the
//! hand-rolled JSON formatting of the two large files (ticks and deltas).
//!
//! The hot path formats numbers itself rather than going through `serde_json` per line; the
//! lines are ordinary JSON that the model types of `riskflow_dataflows::model` parse (the
//! tests check every line). Prices and quantities are written as exact decimals of their
//! 1e-8 integer units, which parse to the same `f64` — and so the same `Fixed` — as the
//! `f64` that `serde` would have printed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::GenError;

/// Bytes buffered before a write to the file.
const CHUNK: usize = 1 << 20;

/// A file being written: buffered, hashed and counted.
pub(crate) struct Out {
    path: PathBuf,
    name: String,
    file: File,
    hasher: Sha256,
    pub buf: Vec<u8>,
    bytes: u64,
    /// Lines completed so far (the caller counts them with [`Out::end_line`]).
    pub lines: u64,
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
        let file = File::create(&path).map_err(|e| GenError::io(&path, e))?;
        Ok(Out {
            path,
            name: name.to_string(),
            file,
            hasher: Sha256::new(),
            buf: Vec::with_capacity(CHUNK + 4096),
            bytes: 0,
            lines: 0,
        })
    }

    /// Counts a line the caller just appended to `buf` (ending in `\n`) and flushes a full
    /// buffer.
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
        self.hasher.update(&self.buf);
        self.file
            .write_all(&self.buf)
            .map_err(|e| GenError::io(&self.path, e))?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    pub fn finish(mut self) -> Result<Written, GenError> {
        self.flush_buf()?;
        self.file.flush().map_err(|e| GenError::io(&self.path, e))?;
        Ok(Written {
            name: self.name,
            bytes: self.bytes,
            sha256: hex(&self.hasher.finalize()),
        })
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

/// Appends the decimal digits of `n`.
#[inline]
pub(crate) fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
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
        while frac % 10 == 0 {
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
    fn integers_format() {
        let mut buf = Vec::new();
        push_u64(&mut buf, 0);
        buf.push(b' ');
        push_u64(&mut buf, u64::MAX);
        assert_eq!(buf, b"0 18446744073709551615");
    }
}
