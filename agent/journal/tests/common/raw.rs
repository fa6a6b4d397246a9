//! Raw edits of journal files, to make what Debian's systemd cannot write (LZ4 and XZ DATA
//! objects) and what no writer should (corruption). Offsets per systemd's format document.

use std::path::Path;

pub const DATA: u8 = 1;
pub const ENTRY: u8 = 3;
pub const FLAG_XZ: u8 = 1;
pub const FLAG_LZ4: u8 = 2;
pub const FLAG_ZSTD: u8 = 4;

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

pub struct Object {
    pub offset: u64,
    pub kind: u8,
    pub flags: u8,
    pub size: u64,
}

pub fn compact(b: &[u8]) -> bool {
    u32::from_le_bytes(b[12..16].try_into().unwrap()) & (1 << 4) != 0
}

/// All objects from the header to the tail object, in file order.
pub fn objects(b: &[u8]) -> Vec<Object> {
    let mut off = le64(b, 88);
    let tail = le64(b, 136);
    let mut out = Vec::new();
    while off <= tail && off != 0 {
        let o = off as usize;
        let size = le64(b, o + 8);
        out.push(Object {
            offset: off,
            kind: b[o],
            flags: b[o + 1],
            size,
        });
        off += align8(size);
    }
    out
}

pub fn count_data_with_flag(path: &Path, flag: u8) -> usize {
    let b = std::fs::read(path).unwrap();
    objects(&b)
        .iter()
        .filter(|o| o.kind == DATA && o.flags == flag)
        .count()
}

/// Re-encodes every zstd DATA object with `flag` (LZ4 or XZ) as systemd would write it:
/// the new object is appended after the tail object and every ENTRY item is pointed at it.
/// Returns how many objects were re-encoded.
pub fn recompress(path: &Path, flag: u8) -> usize {
    let mut b = std::fs::read(path).unwrap();
    let compact = compact(&b);
    let po: u64 = if compact { 72 } else { 64 };
    let objs = objects(&b);
    let last = objs.last().unwrap();
    let mut end = last.offset + align8(last.size);
    let mut tail = last.offset;
    let mut map = std::collections::HashMap::new();
    for o in objs
        .iter()
        .filter(|o| o.kind == DATA && o.flags == FLAG_ZSTD)
    {
        let s = o.offset as usize;
        let payload = &b[s + po as usize..s + o.size as usize];
        let mut plain = Vec::new();
        let mut dec = ruzstd::decoding::StreamingDecoder::new(payload).unwrap();
        std::io::Read::read_to_end(&mut dec, &mut plain).unwrap();
        let enc = match flag {
            FLAG_LZ4 => {
                let mut v = (plain.len() as u64).to_le_bytes().to_vec();
                v.extend_from_slice(&lz4_flex::block::compress(&plain));
                v
            }
            FLAG_XZ => {
                let mut v = Vec::new();
                lzma_rs::xz_compress(&mut &plain[..], &mut v).unwrap();
                v
            }
            _ => panic!("flag {flag}"),
        };
        let mut obj = b[s..s + po as usize].to_vec();
        obj[1] = flag;
        let size = po + enc.len() as u64;
        obj[8..16].copy_from_slice(&size.to_le_bytes());
        obj.extend_from_slice(&enc);
        let at = end as usize;
        assert!(at + obj.len() <= b.len(), "no room left in the arena");
        b[at..at + obj.len()].copy_from_slice(&obj);
        map.insert(o.offset, end);
        tail = end;
        end += align8(size);
    }
    for o in objs.iter().filter(|o| o.kind == ENTRY) {
        let s = o.offset as usize;
        let stride = if compact { 4 } else { 16 };
        let n = (o.size as usize - 64) / stride;
        for k in 0..n {
            let at = s + 64 + k * stride;
            let old = if compact {
                u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
            } else {
                le64(&b, at)
            };
            if let Some(&new) = map.get(&old) {
                if compact {
                    b[at..at + 4].copy_from_slice(&(new as u32).to_le_bytes());
                } else {
                    put64(&mut b, at, new);
                }
            }
        }
    }
    put64(&mut b, 136, tail);
    let n_objects = le64(&b, 144) + map.len() as u64;
    put64(&mut b, 144, n_objects);
    let incompat = u32::from_le_bytes(b[12..16].try_into().unwrap())
        | match flag {
            FLAG_LZ4 => 1 << 1,
            _ => 1 << 0,
        };
    b[12..16].copy_from_slice(&incompat.to_le_bytes());
    std::fs::write(path, &b).unwrap();
    map.len()
}

/// Sets the header state byte (0 offline, 1 online, 2 archived), as journald does on
/// rotation before renaming the file.
pub fn set_state(path: &Path, state: u8) {
    let mut b = std::fs::read(path).unwrap();
    b[16] = state;
    std::fs::write(path, &b).unwrap();
}

/// The offset just past the tail object (the used part of the file).
pub fn used_end(path: &Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    let last = objects(&b).pop().unwrap();
    last.offset + align8(last.size)
}

/// Where the objects after the hash tables start (the entries' part of the file).
pub fn content_start(path: &Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    objects(&b)
        .iter()
        .find(|o| o.kind == DATA || o.kind == ENTRY)
        .map_or(0, |o| o.offset)
}
