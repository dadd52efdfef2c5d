//! The manifest inside a backup object, so that the object describes itself even without
//! PostgreSQL or the manifest object beside it: after the compressed stream comes one frame its
//! decompressor skips, holding the manifest as JSON: a zstd skippable frame, or an empty gzip
//! member with the manifest as its comment. `zstd -d` and `gzip -d` output the stream alone.
//!
//! The manifest's `sha256` and `bytes` cover the stream before the frame. JSON text never holds
//! the frames' first bytes (0x18 ends the zstd magic, 0x1f starts gzip: control characters are
//! escaped in JSON), so the last frame start in an object is the manifest's.

use crate::db::backups::Compression;
use serde_json::Value;

/// A skippable frame's magic (0x184D2A50..=0x184D2A5F); little-endian on the wire.
const ZSTD_MAGIC: [u8; 4] = 0x184D2A53u32.to_le_bytes();
/// gzip id, deflate, FCOMMENT set; then mtime 0, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0x10, 0, 0, 0, 0, 0, 0xff];
/// After the comment's NUL: an empty final stored block, CRC32 0, size 0.
const GZIP_END: [u8; 10] = [3, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// The frame carrying `manifest`, for a stream compressed with `compression` (zstd or gzip).
pub fn encode(compression: Compression, manifest: &Value) -> Vec<u8> {
    let json = serde_json::to_vec(manifest).expect("a JSON value serializes");
    let mut out = Vec::with_capacity(json.len() + 24);
    if compression == Compression::Zstd {
        out.extend_from_slice(&ZSTD_MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
    } else {
        out.extend_from_slice(&GZIP_HEADER);
        out.extend_from_slice(&json);
        out.push(0);
        out.extend_from_slice(&GZIP_END);
    }
    out
}

/// The manifest in the last bytes of a backup object (its tail is enough), if it has one.
pub fn decode(tail: &[u8]) -> Option<Value> {
    // Where `magic` last starts in the tail.
    let last = |magic: &[u8]| {
        (0..tail.len())
            .rev()
            .find(|&i| tail[i..].starts_with(magic))
    };
    let zstd = || {
        let i = last(&ZSTD_MAGIC)?;
        let len = u32::from_le_bytes(tail.get(i + 4..i + 8)?.try_into().ok()?) as usize;
        let body = &tail[i + 8..];
        (len == body.len()).then_some(body)
    };
    let gzip = || {
        let i = last(&GZIP_HEADER[..4])?;
        let end = tail.len().checked_sub(GZIP_END.len() + 1)?;
        let ok = tail.ends_with(&GZIP_END) && tail[end] == 0;
        ok.then(|| tail.get(i + GZIP_HEADER.len()..end)).flatten()
    };
    serde_json::from_slice(zstd().or_else(gzip)?).ok()
}

#[cfg(test)]
mod tests {
    use std::{io::Write, process::Command};

    use serde_json::json;

    use super::*;

    /// Compress `data` with the real tool, append the frame, decompress with the real tool.
    fn round_trip(tool: &str, data: &[u8], manifest: &Value) -> (Vec<u8>, Option<Value>) {
        let run = |args: &[&str], input: &[u8]| {
            let mut child = Command::new(tool)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect(tool);
            child.stdin.take().unwrap().write_all(input).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{tool} {args:?} failed");
            out.stdout
        };
        let mut object = run(&["-q", "-c"], data);
        object.extend_from_slice(&encode(compression(tool), manifest));
        let tail = &object[object.len().saturating_sub(4096)..];
        (run(&["-d", "-q", "-c"], &object), decode(tail))
    }

    fn compression(tool: &str) -> Compression {
        serde_json::from_value(json!(tool)).unwrap()
    }

    #[test]
    fn decompressors_skip_the_frame_and_it_reads_back() {
        let manifest = json!({"id": 7, "server": "db\u{1f}1\u{18}", "gtid": "0-1-5", "tables": {"shop.orders": 1200}});
        let data = b"row 1\n".repeat(1000);
        for tool in ["zstd", "gzip"] {
            let (out, read) = round_trip(tool, &data, &manifest);
            assert_eq!(out, data, "{tool} output");
            assert_eq!(read.as_ref(), Some(&manifest), "{tool} manifest");
            // Compressed bytes that happen to look like a frame's start come before it.
            let mut tail = [&ZSTD_MAGIC[..], &GZIP_HEADER, b"x"].concat();
            tail.extend_from_slice(&encode(compression(tool), &manifest));
            assert_eq!(
                decode(&tail).as_ref(),
                Some(&manifest),
                "{tool} after lookalikes"
            );
        }
        assert_eq!(decode(b"just some bytes"), None);
        assert_eq!(decode(&ZSTD_MAGIC), None);
    }
}
