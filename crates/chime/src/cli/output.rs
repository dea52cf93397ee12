//! Output helpers shared by the client commands: colour (only on a terminal, never with
//! `NO_COLOR`), aligned tables, JSON, progress bars and local clock times.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use serde::Serialize;

/// Whether stdout is a terminal (decides table vs. JSON lines for `listen`, colour for all).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// ANSI colouring, switched off when the stream is not a terminal or `NO_COLOR` is set (per
/// no-color.org: any non-empty value).
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Style {
    pub fn stdout() -> Self {
        Self {
            color: stdout_is_terminal() && !no_color_env(),
        }
    }

    pub fn stderr() -> Self {
        Self {
            color: std::io::stderr().is_terminal() && !no_color_env(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }
    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }
    pub fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }
    pub fn cyan(&self, text: &str) -> String {
        self.paint("36", text)
    }
}

/// Prints a value as indented JSON on stdout (what `--json` shows for API answers). Object
/// keys keep their order, so a server answer (a `Reply`) is shown as the server wrote it.
pub fn print_json(value: &impl Serialize) {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
    println_safe(&pretty(&text));
}

/// Removes the whitespace between JSON tokens (never inside strings).
pub fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// Indents valid JSON text by two spaces per level, keeping keys in their order (unlike a
/// round trip through `serde_json::Value`, which sorts them).
pub fn pretty(json: &str) -> String {
    let compact = minify(json);
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    let (mut in_string, mut escaped) = (false, false);
    let mut chars = compact.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            other => out.push(other),
        }
    }
    out
}

/// `println!` that ignores a closed stdout (`chime … | head`) instead of panicking.
pub fn println_safe(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// A plain left-aligned table; headers bold on a terminal.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table. Widths count characters of the uncoloured text, so cells must be
    /// given plain; `paint(row, column, padded cell)` may colour a cell after padding.
    pub fn render(
        &self,
        style: Style,
        mut paint: impl FnMut(usize, usize, &str) -> String,
    ) -> String {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let pad = |text: &str, width: usize| {
            let n = text.chars().count();
            format!("{text}{}", " ".repeat(width.saturating_sub(n)))
        };
        let mut out = String::new();
        let header: Vec<String> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| style.bold(&pad(h, widths[i])))
            .collect();
        out.push_str(header.join("  ").trim_end());
        out.push('\n');
        for (r, row) in self.rows.iter().enumerate() {
            let cells: Vec<String> = (0..cols)
                .map(|i| {
                    let cell = row.get(i).map(String::as_str).unwrap_or("");
                    // The last column is not padded, so lines carry no trailing spaces.
                    let padded = if i + 1 == cols {
                        cell.to_owned()
                    } else {
                        pad(cell, widths[i])
                    };
                    paint(r, i, &padded)
                })
                .collect();
            // An empty last cell would leave the padding of the one before it.
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self, style: Style) {
        print!("{}", self.render(style, |_, _, c| c.to_owned()));
    }
}

/// Cuts `text` to `max` characters, marking the cut, so one long value cannot wreck a table.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > max => format!("{}…", &text[..cut]),
        _ => text.to_owned(),
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal (CI logs, pipes), so
/// scripted runs see only the summary.
pub fn progress_bar(len: Option<u64>, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} {msg} ({per_sec})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(what.to_owned());
    bar
}

static LOCAL_OFFSET: OnceLock<time::UtcOffset> = OnceLock::new();

/// Reads the local UTC offset. Call it before any thread starts: the `time` crate refuses to
/// read it once the process has several threads (the libc call is not thread-safe there).
pub fn init_local_offset() {
    let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
    let _ = LOCAL_OFFSET.set(offset);
}

/// `HH:MM:SS` of a unix-millisecond time in local time (UTC if the offset is unknown).
pub fn clock_time(ms: i64) -> String {
    let offset = LOCAL_OFFSET.get().copied().unwrap_or(time::UtcOffset::UTC);
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset);
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_without_trailing_spaces() {
        let mut t = Table::new(&["ID", "URL"]);
        t.row(vec!["ep_1".into(), "http://a".into()]);
        t.row(vec!["ep_long".into(), "http://b".into()]);
        let text = t.render(Style { color: false }, |_, _, c| c.to_owned());
        assert_eq!(text, "ID       URL\nep_1     http://a\nep_long  http://b\n");
    }

    #[test]
    fn pretty_keeps_key_order() {
        assert_eq!(
            pretty(r#"{"z": 1, "a": [ ], "m": {"s": "a, b: {c}", "e": {}}, "l": [1,2]}"#),
            "{\n  \"z\": 1,\n  \"a\": [],\n  \"m\": {\n    \"s\": \"a, b: {c}\",\n    \"e\": {}\n  },\n  \"l\": [\n    1,\n    2\n  ]\n}"
        );
        assert_eq!(
            minify("{ \"a b\" : [1, 2],\n\t\"c\\\" d\": \" \" }"),
            r#"{"a b":[1,2],"c\" d":" "}"#
        );
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcd", 4), "abcd");
        assert_eq!(truncate("héllo wörld", 6), "héllo…");
    }
}
