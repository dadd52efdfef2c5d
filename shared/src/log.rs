//! Action log lines and their rendering in the seed's format:
//! `[2007-04-19 16:24:45] [ServerActionsWorker] : Executing: '...'` for system lines, script
//! output as the script printed it.

use chrono::{DateTime, Utc};
use serde::Serialize;

pub const SOURCE: &str = "ServerActionsWorker";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(i16)]
pub enum Stream {
    System = 0,
    Stdout = 1,
    Stderr = 2,
}

impl Stream {
    pub fn from_i16(v: i16) -> Stream {
        match v {
            1 => Stream::Stdout,
            2 => Stream::Stderr,
            _ => Stream::System,
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LogLine {
    pub seq: i32,
    pub ts: DateTime<Utc>,
    pub stream: Stream,
    pub line: String,
}

impl LogLine {
    /// The line as the viewer and `GET /v1/actions/{id}/log` show it (no trailing newline).
    pub fn render(&self) -> String {
        match self.stream {
            Stream::System => system_line(self.ts, &self.line),
            Stream::Stdout | Stream::Stderr => self.line.clone(),
        }
    }
}

pub const HEADER_LINES: u64 = 2;

/// The two lines that open the log of an action when its worker takes the server's lock.
pub fn header(title: &str, urgent: bool, pid: u32) -> Vec<String> {
    let others = if urgent { " terminating others." } else { "" };
    vec![
        format!("Executing: 'Executing action: {title}'"),
        format!("Process {pid} has the lock.{others}"),
    ]
}

pub fn system_line(ts: DateTime<Utc>, msg: &str) -> String {
    format!("[{}] [{SOURCE}] : {msg}", ts.format("%Y-%m-%d %H:%M:%S"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn system_lines_match_the_seed_format() {
        let ts = Utc.with_ymd_and_hms(2007, 4, 19, 16, 24, 45).unwrap();
        let line = LogLine {
            seq: 1,
            ts,
            stream: Stream::System,
            line: "Executing: 'Executing action: DB promote to master'".into(),
        };
        assert_eq!(
            line.render(),
            "[2007-04-19 16:24:45] [ServerActionsWorker] : Executing: 'Executing action: DB promote to master'"
        );
        let out = LogLine {
            stream: Stream::Stdout,
            line: "Promoting slave...".into(),
            ..line
        };
        assert_eq!(out.render(), "Promoting slave...");
    }
}
