//! An attempt's log: the guest's stdout, stderr and `log` calls, as bounded timestamped lines.
//!
//! Output past the byte budget is dropped (and one marker line says so) rather than failing
//! the guest's write: a chatty task must not fail because of its logging.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal progress (and the guest's stdout).
    Info,
    /// Recovered problems (and the guest's stderr).
    Warn,
    /// Failures.
    Error,
}

impl LogLevel {
    /// Lowercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// One line of an attempt's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the line was completed.
    pub at: SystemTime,
    /// Its severity.
    pub level: LogLevel,
    /// The text, without the trailing newline.
    pub message: String,
}

/// Bytes of stderr kept aside, unbounded by the log budget, to recover a panic message.
const STDERR_TAIL_BYTES: usize = 8 << 10;
/// Lines of stderr printed before a panic that its message carries.
const PANIC_CONTEXT_LINES: usize = 6;
/// Longest line kept whole; longer ones are cut.
const MAX_LINE_BYTES: usize = 16 << 10;

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<LogLine>,
    bytes: usize,
    limit: usize,
    truncated: bool,
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
    stderr_tail: Vec<u8>,
}

impl LogState {
    fn push(&mut self, level: LogLevel, message: String) {
        if self.truncated {
            return;
        }
        if self.bytes + message.len() > self.limit {
            self.truncated = true;
            self.lines.push(LogLine {
                at: SystemTime::now(),
                level: LogLevel::Warn,
                message: format!("log truncated: more than {} bytes", self.limit),
            });
            return;
        }
        self.bytes += message.len();
        self.lines.push(LogLine {
            at: SystemTime::now(),
            level,
            message,
        });
    }

    fn write_stream(&mut self, source: Source, bytes: &[u8]) {
        if source == Source::Stderr {
            self.stderr_tail.extend_from_slice(bytes);
            let excess = self.stderr_tail.len().saturating_sub(STDERR_TAIL_BYTES);
            self.stderr_tail.drain(..excess);
        }
        let (partial, level) = match source {
            Source::Stdout => (&mut self.partial_stdout, LogLevel::Info),
            Source::Stderr => (&mut self.partial_stderr, LogLevel::Warn),
        };
        partial.extend_from_slice(bytes);
        let mut complete = Vec::new();
        while let Some(newline) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=newline).collect();
            complete.push(line_text(&line[..line.len() - 1]));
        }
        if partial.len() > MAX_LINE_BYTES {
            complete.push(line_text(&std::mem::take(partial)));
        }
        for message in complete {
            self.push(level, message);
        }
    }

    fn flush_partials(&mut self) {
        for (source, level) in [
            (Source::Stdout, LogLevel::Info),
            (Source::Stderr, LogLevel::Warn),
        ] {
            let partial = match source {
                Source::Stdout => std::mem::take(&mut self.partial_stdout),
                Source::Stderr => std::mem::take(&mut self.partial_stderr),
            };
            if !partial.is_empty() {
                self.push(level, line_text(&partial));
            }
        }
    }
}

fn line_text(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_LINE_BYTES)];
    String::from_utf8_lossy(cut)
        .trim_end_matches('\r')
        .to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Stdout,
    Stderr,
}

/// The log of one attempt, shared by the WASI streams and the `log` import.
#[derive(Debug, Clone)]
pub struct AttemptLog(Arc<Mutex<LogState>>);

impl AttemptLog {
    /// A log keeping at most `limit` bytes of text.
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Mutex::new(LogState {
            limit,
            ..LogState::default()
        })))
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        // A poisoned lock only means a writer panicked mid-push; the lines are still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a line from the `log` import.
    pub fn push(&self, level: LogLevel, message: String) {
        let mut message = message.replace('\0', "\u{FFFD}");
        message.truncate(message.floor_char_boundary(MAX_LINE_BYTES));
        self.state().push(level, message);
    }

    /// The guest's stdout, as a WASI output stream.
    pub fn stdout(&self) -> CapturedStream {
        CapturedStream {
            log: self.clone(),
            source: Source::Stdout,
        }
    }

    /// The guest's stderr, as a WASI output stream.
    pub fn stderr(&self) -> CapturedStream {
        CapturedStream {
            log: self.clone(),
            source: Source::Stderr,
        }
    }

    /// Ends the log: unterminated output becomes a last line; returns all lines.
    pub fn finish(&self) -> Vec<LogLine> {
        let mut state = self.state();
        state.flush_partials();
        std::mem::take(&mut state.lines)
    }

    /// The last `lines` non-empty lines the guest wrote to stderr, if it wrote any: what an
    /// interpreter prints before it traps (a Python traceback, a JS exception).
    pub fn stderr_tail(&self, lines: usize) -> Option<String> {
        let state = self.state();
        let tail = String::from_utf8_lossy(&state.stderr_tail);
        let kept: Vec<&str> = tail
            .lines()
            .rev()
            .filter(|line| !line.trim().is_empty())
            .take(lines)
            .collect();
        if kept.is_empty() {
            return None;
        }
        let mut kept: Vec<String> = kept.into_iter().rev().map(str::to_owned).collect();
        // Keep the message readable when a line is huge (a minified stack trace).
        for line in &mut kept {
            if line.len() > 500 {
                let mut end = 500;
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                line.truncate(end);
                line.push('…');
            }
        }
        Some(kept.join("\n"))
    }

    /// The message of a Rust guest panic, if its panic hook printed one to stderr.
    ///
    /// The hook prints `thread '…' panicked at file:line:col:` then the message, then a `note:`
    /// line; everything between the first and the note is the message.
    pub fn panic_message(&self) -> Option<String> {
        let state = self.state();
        let tail = String::from_utf8_lossy(&state.stderr_tail);
        let start = tail.find("panicked at ")?;
        let after_location = tail[start..].find('\n')? + start + 1;
        let message: Vec<&str> = tail[after_location..]
            .lines()
            .take_while(|line| !line.starts_with("note: "))
            .collect();
        let message = message.join("\n").trim().to_owned();
        // An interpreter's runtime panics after printing the error it could not handle (a
        // Python traceback): keep the last lines of that too.
        let panic_line = tail[..start].rfind('\n').map_or(0, |i| i + 1);
        let before: Vec<&str> = tail[..panic_line]
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        let before = &before[before.len().saturating_sub(PANIC_CONTEXT_LINES)..];
        if before.is_empty() {
            return Some(message);
        }
        Some(format!(
            "{message}; the guest's stderr before it:\n{}",
            before.join("\n")
        ))
    }
}

/// stdout or stderr of one attempt, captured into its `AttemptLog`.
#[derive(Debug, Clone)]
pub struct CapturedStream {
    log: AttemptLog,
    source: Source,
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Room reported to the guest per write; the capture itself never refuses bytes.
const WRITE_BUDGET: usize = 64 << 10;

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log.state().write_stream(self.source, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl tokio::io::AsyncWrite for CapturedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.state().write_stream(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_become_lines_with_levels() {
        let log = AttemptLog::new(1 << 10);
        log.stdout()
            .write(Bytes::from_static(b"one\ntw"))
            .expect("write");
        log.stdout()
            .write(Bytes::from_static(b"o\n"))
            .expect("write");
        log.stderr()
            .write(Bytes::from_static(b"oops"))
            .expect("write");
        log.push(LogLevel::Debug, "direct".into());
        let lines: Vec<(LogLevel, String)> = log
            .finish()
            .into_iter()
            .map(|l| (l.level, l.message))
            .collect();
        assert_eq!(
            lines,
            [
                (LogLevel::Info, "one".to_owned()),
                (LogLevel::Info, "two".to_owned()),
                (LogLevel::Debug, "direct".to_owned()),
                (LogLevel::Warn, "oops".to_owned()),
            ]
        );
    }

    #[test]
    fn the_budget_truncates_once_and_keeps_the_panic_message() {
        let log = AttemptLog::new(10);
        log.stdout()
            .write(Bytes::from_static(b"0123456789abc\n"))
            .expect("write");
        log.stdout()
            .write(Bytes::from_static(b"more\n"))
            .expect("write");
        log.stderr()
            .write(Bytes::from_static(
                b"\nthread '<unnamed>' panicked at src/lib.rs:3:5:\nboom\nnote: run with `RUST_BACKTRACE=1`\n",
            ))
            .expect("write");
        let lines = log.finish();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].message, "log truncated: more than 10 bytes");
        assert_eq!(log.panic_message().as_deref(), Some("boom"));
    }
}
