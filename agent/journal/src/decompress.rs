//! DATA payload decompression with pure-Rust decoders, each bounded by a decompressed-size
//! cap so a hostile object cannot make us allocate more than `cap` bytes.
//!
//! systemd's encodings (src/basic/compress.c): zstd is one plain frame; LZ4 is an le64
//! uncompressed size followed by one LZ4 block; XZ is an .xz stream (CHECK_NONE).

use std::io::{Read, Write};

use crate::error::Corruption;
use crate::format::{OBJECT_COMPRESSED_LZ4, OBJECT_COMPRESSED_XZ, OBJECT_COMPRESSED_ZSTD};

/// Appends the decompressed `src` to `out`. `flags` is the object's compression flag (exactly
/// one bit); at most `cap` bytes are appended, more is [`Corruption::TooLarge`].
pub fn decompress_into(
    flags: u8,
    src: &[u8],
    cap: usize,
    out: &mut Vec<u8>,
) -> Result<(), Corruption> {
    match flags {
        OBJECT_COMPRESSED_ZSTD => zstd(src, cap, out),
        OBJECT_COMPRESSED_LZ4 => lz4(src, cap, out),
        OBJECT_COMPRESSED_XZ => xz(src, cap, out),
        other => Err(Corruption::Bad(format!("compression flags {other:#x}"))),
    }
}

fn too_large(algo: &str, cap: usize) -> Corruption {
    Corruption::TooLarge(format!(
        "{algo} payload decompresses to more than {cap} bytes"
    ))
}

fn zstd(src: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<(), Corruption> {
    let err = |e: &dyn std::fmt::Display| Corruption::Decompress {
        algo: "zstd",
        reason: e.to_string(),
    };
    // The window is the decoder's own buffer: never larger than what we would accept.
    let window = u64::try_from(cap.max(1 << 10)).unwrap_or(u64::MAX);
    let mut decoder = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(src, window)
        .map_err(|e| err(&e))?;
    let start = out.len();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = decoder.read(&mut chunk).map_err(|e| err(&e))?;
        if n == 0 {
            return Ok(());
        }
        if out.len() - start + n > cap {
            out.truncate(start);
            return Err(too_large("zstd", cap));
        }
        out.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

fn lz4(src: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<(), Corruption> {
    let err = |reason: String| Corruption::Decompress {
        algo: "lz4",
        reason,
    };
    let size = crate::format::le64(src, 0).ok_or_else(|| err("no size prefix".into()))?;
    let size = usize::try_from(size).map_err(|_| too_large("lz4", cap))?;
    if size > cap {
        return Err(too_large("lz4", cap));
    }
    let block = src.get(8..).unwrap_or_default();
    let start = out.len();
    out.resize(start + size, 0);
    let target = out.get_mut(start..).unwrap_or_default();
    match lz4_flex::block::decompress_into(block, target) {
        Ok(n) if n == size => Ok(()),
        Ok(n) => {
            out.truncate(start);
            Err(err(format!("{n} bytes where the prefix says {size}")))
        }
        Err(e) => {
            out.truncate(start);
            Err(err(e.to_string()))
        }
    }
}

/// Writes into `out` until `left` is used up; then fails, which stops the decoder.
struct Capped<'a> {
    out: &'a mut Vec<u8>,
    left: usize,
}

impl Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.left {
            return Err(std::io::Error::other("decompressed-size cap"));
        }
        self.left -= buf.len();
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn xz(src: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<(), Corruption> {
    // lzma-rs buffers a whole LZMA2 block in memory before writing it out, so the output cap
    // alone would come too late: sum the chunks' declared sizes first.
    let declared = xz_unpacked_size(src).map_err(|reason| Corruption::Decompress {
        algo: "xz",
        reason: reason.into(),
    })?;
    if declared > cap as u64 {
        return Err(too_large("xz", cap));
    }
    let start = out.len();
    let mut input = src;
    let mut sink = Capped { out, left: cap };
    let result = lzma_rs::xz_decompress(&mut input, &mut sink);
    if let Err(e) = result {
        out.truncate(start);
        return Err(Corruption::Decompress {
            algo: "xz",
            reason: e.to_string(),
        });
    }
    Ok(())
}

/// Walks an .xz stream's blocks and LZMA2 chunk headers (without decoding) and returns the
/// total uncompressed size they declare. Every LZMA2 chunk states its unpacked size up front.
fn xz_unpacked_size(s: &[u8]) -> Result<u64, &'static str> {
    const MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0];
    if s.get(..6) != Some(MAGIC) {
        return Err("bad stream magic");
    }
    let check_len: usize = match s.get(7).ok_or("short stream header")? & 0x0F {
        0 => 0,
        1..=3 => 4,
        4..=6 => 8,
        7..=9 => 16,
        10..=12 => 32,
        _ => 64,
    };
    let byte = |p: usize| s.get(p).copied().ok_or("stream ends early");
    let be16 = |p: usize| -> Result<u64, &'static str> {
        Ok(u64::from(byte(p)?) << 8 | u64::from(byte(p + 1)?))
    };
    let mut pos = 12usize;
    let mut total = 0u64;
    // Each loop turn consumes at least one byte, so this ends within `s.len()` turns.
    loop {
        let header = byte(pos)?;
        if header == 0 {
            return Ok(total); // the index follows
        }
        let block_start = pos;
        pos = pos
            .checked_add((usize::from(header) + 1) * 4)
            .ok_or("overflow")?;
        loop {
            let control = byte(pos)?;
            pos += 1;
            match control {
                0x00 => break,
                0x01 | 0x02 => {
                    let size = be16(pos)? + 1;
                    total = total.saturating_add(size);
                    pos = pos.checked_add(2 + size as usize).ok_or("overflow")?;
                }
                0x80..=0xFF => {
                    let unpacked = (u64::from(control & 0x1F) << 16 | be16(pos)?) + 1;
                    let packed = be16(pos + 2)? + 1;
                    let props = usize::from(control >= 0xC0);
                    total = total.saturating_add(unpacked);
                    pos = pos
                        .checked_add(4 + props + packed as usize)
                        .ok_or("overflow")?;
                }
                _ => return Err("bad LZMA2 control byte"),
            }
        }
        // Block padding to a multiple of four, then the block check.
        let padded = block_start + (pos - block_start).div_ceil(4) * 4;
        pos = padded.checked_add(check_len).ok_or("overflow")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_round_trip_cap_and_garbage() {
        let plain = b"kubelet: the quick brown fox ".repeat(50);
        let mut enc = (plain.len() as u64).to_le_bytes().to_vec();
        enc.extend_from_slice(&lz4_flex::block::compress(&plain));
        let mut out = b"MESSAGE=".to_vec();
        decompress_into(OBJECT_COMPRESSED_LZ4, &enc, plain.len(), &mut out).unwrap();
        assert_eq!(&out[8..], &plain[..]);

        let mut out = Vec::new();
        let e = decompress_into(OBJECT_COMPRESSED_LZ4, &enc, plain.len() - 1, &mut out);
        assert!(matches!(e, Err(Corruption::TooLarge(_))), "{e:?}");
        assert!(out.is_empty());

        // A huge declared size is refused before any allocation.
        let mut bomb = u64::MAX.to_le_bytes().to_vec();
        bomb.extend_from_slice(&[0u8; 16]);
        assert!(decompress_into(OBJECT_COMPRESSED_LZ4, &bomb, 1 << 20, &mut out).is_err());
        let mut bad = 100u64.to_le_bytes().to_vec();
        bad.extend_from_slice(&[0xFF; 10]);
        assert!(matches!(
            decompress_into(OBJECT_COMPRESSED_LZ4, &bad, 1 << 20, &mut out),
            Err(Corruption::Decompress { .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn zstd_rejects_garbage_and_truncation() {
        let mut out = Vec::new();
        assert!(matches!(
            decompress_into(
                OBJECT_COMPRESSED_ZSTD,
                b"not zstd at all",
                1 << 20,
                &mut out
            ),
            Err(Corruption::Decompress { .. })
        ));
        // A frame header claiming a 1 GiB window is refused (no giant buffer).
        let frame = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0xA8, 0, 0, 0, 0];
        assert!(decompress_into(OBJECT_COMPRESSED_ZSTD, &frame, 1 << 20, &mut out).is_err());
    }

    #[test]
    fn xz_round_trip_cap_and_garbage() {
        let plain = b"containerd: level=info msg=\"pulled image\" ".repeat(40);
        let mut enc = Vec::new();
        lzma_rs::xz_compress(&mut &plain[..], &mut enc).unwrap();
        assert_eq!(xz_unpacked_size(&enc), Ok(plain.len() as u64));
        let mut out = Vec::new();
        decompress_into(OBJECT_COMPRESSED_XZ, &enc, plain.len(), &mut out).unwrap();
        assert_eq!(out, plain);

        out.clear();
        assert!(matches!(
            decompress_into(OBJECT_COMPRESSED_XZ, &enc, plain.len() - 1, &mut out),
            Err(Corruption::TooLarge(_))
        ));
        assert!(out.is_empty());
        for cut in [3, 12, 20, enc.len() - 3] {
            assert!(decompress_into(OBJECT_COMPRESSED_XZ, &enc[..cut], 1 << 20, &mut out).is_err());
        }
        assert!(out.is_empty());
    }

    #[test]
    fn xz_bomb_declared_size_is_refused_before_decoding() {
        // One stream, one block, LZMA2 chunks each declaring 2 MiB unpacked (with no data).
        let mut s = vec![0xFD, b'7', b'z', b'X', b'Z', 0, 0, 0, 0, 0, 0, 0];
        s.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // block header, 8 bytes
        for _ in 0..1000 {
            // control (LZMA, props reset), unpacked-1 = 0x1FFFFF, packed-1 = 0, props
            s.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x5D]);
            s.push(0); // the one packed byte
        }
        s.push(0); // end of LZMA2 data
        while (s.len() - 12) % 4 != 0 {
            s.push(0); // block padding
        }
        s.push(0); // index indicator
        assert!(xz_unpacked_size(&s).unwrap() > 1 << 30);
        let mut out = Vec::new();
        assert!(matches!(
            decompress_into(OBJECT_COMPRESSED_XZ, &s, 1 << 24, &mut out),
            Err(Corruption::TooLarge(_))
        ));
    }

    #[test]
    fn unknown_or_multiple_flags_are_corrupt() {
        let mut out = Vec::new();
        assert!(matches!(
            decompress_into(3, b"x", 10, &mut out),
            Err(Corruption::Bad(_))
        ));
    }
}
