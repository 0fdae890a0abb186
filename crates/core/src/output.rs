//! Bounds on process output, shared by the runner (its children's output), the server
//! (what a runner reports, what the local executor reads of a runner) and the store.
//!
//! A line is cut to [`MAX_LINE_CHARS`] characters, and a reader never holds more than
//! [`MAX_LINE_BYTES`] of a line: output without a newline (a minified bundle, a binary
//! written to stdout) costs no more memory than a long line.

use std::borrow::Cow;

/// A single line is cut to this many characters.
pub const MAX_LINE_CHARS: usize = 2000;
/// At most this many bytes of a line are kept while it is read: a character is at most
/// four bytes, so a cut line still holds its first [`MAX_LINE_CHARS`] characters, and the
/// margin lets a secret that straddles that point be redacted whole before the line is
/// clipped.
pub const MAX_LINE_BYTES: usize = MAX_LINE_CHARS * 4 + 1024;
/// Appended to a line that was cut.
pub const CUT_MARKER: &str = "… [line cut]";

/// `line` cut to `max_chars` characters (on a character boundary), with [`CUT_MARKER`]
/// when something was cut.
pub fn clip_line(line: &str, max_chars: usize) -> Cow<'_, str> {
    match line.char_indices().nth(max_chars) {
        Some((cut, _)) => Cow::Owned(format!("{}{CUT_MARKER}", &line[..cut])),
        None => Cow::Borrowed(line),
    }
}

/// The line standing for `dropped` lines left out of a log.
pub fn dropped_marker(dropped: u64) -> String {
    match dropped {
        1 => "[bg-agent: 1 earlier line was dropped; the log keeps the last lines]".to_owned(),
        n => format!("[bg-agent: {n} earlier lines were dropped; the log keeps the last lines]"),
    }
}

/// Splits a byte stream into lines, keeping at most `max_bytes` of each. A line ends at
/// `\n` (a `\r` before it is dropped); a progress display redrawn with `\r` keeps its
/// last state. Invalid UTF-8 is replaced. Lines are not clipped to characters here: the
/// caller redacts first, then clips ([`clip_line`]).
#[derive(Debug)]
pub struct LineSplitter {
    max_bytes: usize,
    buf: Vec<u8>,
    cut: bool,
    after_cr: bool,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE_BYTES)
    }
}

impl LineSplitter {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            buf: Vec::new(),
            cut: false,
            after_cr: false,
        }
    }

    /// Feeds the next chunk; returns the lines it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in chunk {
            match byte {
                b'\n' => {
                    self.after_cr = false;
                    lines.push(self.take());
                }
                b'\r' => self.after_cr = true,
                _ => {
                    if self.after_cr {
                        // Redrawn: only the new state counts.
                        self.after_cr = false;
                        self.buf.clear();
                        self.cut = false;
                    }
                    if self.buf.len() < self.max_bytes {
                        self.buf.push(byte);
                    } else {
                        self.cut = true;
                    }
                }
            }
        }
        lines
    }

    /// The last line, if the stream did not end with a newline.
    pub fn finish(mut self) -> Option<String> {
        (!self.buf.is_empty() || self.cut).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut line = String::from_utf8_lossy(&self.buf).into_owned();
        if self.cut {
            line.push_str(CUT_MARKER);
        }
        self.buf.clear();
        self.cut = false;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::new(max);
        let mut lines: Vec<String> = chunks.iter().flat_map(|c| splitter.feed(c)).collect();
        lines.extend(splitter.finish());
        lines
    }

    #[test]
    fn lines_are_split_across_chunks() {
        assert_eq!(
            split(100, &[b"one\ntw", b"o\r\nthree"]),
            ["one", "two", "three"]
        );
        assert_eq!(split(100, &[b"a\n\n"]), ["a", ""]);
        assert!(split(100, &[b""]).is_empty());
    }

    #[test]
    fn a_redrawn_line_keeps_its_last_state() {
        assert_eq!(
            split(100, &[b"10%\r50%\r", b"100%\r\n", b"done"]),
            ["100%", "done"]
        );
    }

    #[test]
    fn a_long_line_keeps_its_beginning_and_is_marked() {
        let long = vec![b'x'; 100_000];
        let lines = split(10, &[&long, &long, b"\nnext\n"]);
        assert_eq!(
            lines,
            [format!("{}{CUT_MARKER}", "x".repeat(10)), "next".into()]
        );
        // Without a newline at all.
        let lines = split(10, &[&long]);
        assert_eq!(lines, [format!("{}{CUT_MARKER}", "x".repeat(10))]);
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let line = "é".repeat(MAX_LINE_CHARS + 5);
        let clipped = clip_line(&line, MAX_LINE_CHARS);
        assert_eq!(
            clipped,
            format!("{}{CUT_MARKER}", "é".repeat(MAX_LINE_CHARS))
        );
        // The byte bound keeps at least MAX_LINE_CHARS characters of any text, so the
        // clip after it marks a cut line once.
        let wide = "😀".repeat(MAX_LINE_CHARS * 2);
        let lines = split(MAX_LINE_BYTES, &[wide.as_bytes()]);
        assert_eq!(
            clip_line(&lines[0], MAX_LINE_CHARS),
            format!("{}{CUT_MARKER}", "😀".repeat(MAX_LINE_CHARS))
        );
        assert_eq!(clip_line("short", 10), "short");
        // A multi-byte character cut by the byte bound becomes a replacement character,
        // never a panic or invalid text.
        let lines = split(3, &["éé".as_bytes()]);
        assert_eq!(lines, [format!("é\u{fffd}{CUT_MARKER}")]);
    }

    #[test]
    fn the_dropped_marker_counts() {
        assert_eq!(
            dropped_marker(3),
            "[bg-agent: 3 earlier lines were dropped; the log keeps the last lines]"
        );
        assert!(dropped_marker(1).contains("1 earlier line was"));
    }
}
