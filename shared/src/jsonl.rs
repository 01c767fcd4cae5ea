//! JSON lines: the contract between pgshift tools.
//!
//! Every tool writes one compact JSON object per line on stdout, `"type"` first, and ends the
//! stream with one `summary` record. Consumers read with [`records`] and skip types (and
//! fields) they do not know, so producers may add both without breaking anyone. The record
//! types are documented in `shared/PROTOCOL.md`; a breaking change bumps [`FORMAT_VERSION`].
//!
//! [`Output`] is the writer. It is also the place that remembers per-item failures (ripgrep's
//! "errored" flag): a tool reports a failed table with [`Output::error`] and keeps going, and
//! [`Output::finish`] turns the worst failure into the exit status.
//!
//! A reader that goes away (`tool | head -1`) changes nothing but the output: `Output` writes
//! nothing more and the tool runs on to its real exit status. After a fatal error,
//! [`crate::run_main`] ends the stream with [`end_after_fatal`] unless a summary was written.

use std::io::{self, BufRead, BufWriter, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::exit::{classify, ErrorKind, Status};

/// The version of the wire format, carried by every `summary` record. Producers only add types
/// and fields; a change that removes or re-means one bumps this number.
pub const FORMAT_VERSION: u32 = 1;

/// A record type: a serialisable struct with its `"type"` tag.
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Segment { name: String, bytes: u64 }
/// impl shared::jsonl::Record for Segment { const TYPE: &'static str = "segment"; }
/// ```
pub trait Record: Serialize {
    /// The value of the `"type"` field.
    const TYPE: &'static str;
}

/// Serialises `{"type": kind, ...body}` with the tag first.
#[derive(Serialize)]
struct Tagged<'a, T: ?Sized> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// Render one record as a line (without the newline). `body` must serialise as a JSON object.
pub fn to_line<T: Serialize + ?Sized>(kind: &str, body: &T) -> anyhow::Result<String> {
    serde_json::to_string(&Tagged { kind, body })
        .with_context(|| format!("serialising a {kind} record"))
}

/// The `error` record: one per failed item, or one for the failure that ended the run.
#[derive(Debug, Serialize)]
pub struct ErrorRecord<'a> {
    /// The error class, e.g. `unavailable`.
    pub kind: ErrorKind,
    /// The exit code this class maps to.
    pub exit_code: u8,
    /// The whole error chain on one line.
    pub message: String,
    /// What the error is about (e.g. `{"table": "public.t"}`), flattened into the record.
    #[serde(flatten)]
    pub about: &'a Map<String, Value>,
}

/// Set once this process's stdout stream has ended: a `summary` was written to it, or the tool
/// writes no records there (`--quiet`, CSV). Nothing is added after a fatal error then.
static STDOUT_ENDED: AtomicBool = AtomicBool::new(false);
/// `error` records written to stdout so far, for the `errors` of a summary after a fatal error.
static STDOUT_ERRORS: AtomicU64 = AtomicU64::new(0);

/// When the process started (set by [`crate::run_main`]): `elapsed_ms` is the whole run's,
/// however late a tool makes its `Output`.
static STARTED: OnceLock<Instant> = OnceLock::new();

pub(crate) fn set_started(at: Instant) {
    let _ = STARTED.set(at);
}

/// The JSON-lines writer for stdout, with per-item failure tracking.
pub struct Output {
    w: Box<dyn Write + Send>,
    /// Writes this process's stdout stream (see [`STDOUT_ENDED`]).
    on_stdout: bool,
    /// Writes text for a person instead of JSON (see [`crate::human`]).
    text: bool,
    records: u64,
    errors: u64,
    worst: Option<ErrorKind>,
    differences: bool,
    started: Instant,
}

impl Output {
    /// Write to stdout (buffered; every record is flushed so that a pipeline sees it at once).
    pub fn stdout() -> Output {
        Output {
            on_stdout: true,
            text: crate::human::mode() == crate::human::Mode::Text,
            ..Output::new(BufWriter::new(io::stdout()))
        }
    }

    /// Write nothing, and nothing after a fatal error either: for a run whose stdout carries no
    /// records (`--quiet`, CSV). Make it before anything can fail.
    pub fn discard() -> Output {
        STDOUT_ENDED.store(true, Ordering::SeqCst);
        Output::new(io::sink())
    }

    /// Write to any writer (tests, files).
    pub fn new(w: impl Write + Send + 'static) -> Output {
        Output {
            w: Box::new(w),
            on_stdout: false,
            text: false,
            records: 0,
            errors: 0,
            worst: None,
            differences: false,
            started: STARTED.get().copied().unwrap_or_else(Instant::now),
        }
    }

    /// Write one record of a known type.
    pub fn emit<R: Record>(&mut self, record: &R) -> anyhow::Result<()> {
        self.emit_as(R::TYPE, record)
    }

    /// Write one record with the given type tag; `body` must serialise as a JSON object.
    pub fn emit_as<T: Serialize + ?Sized>(&mut self, kind: &str, body: &T) -> anyhow::Result<()> {
        let line = to_line(kind, body)?;
        self.write_line(&line)
    }

    /// Write a line that is already JSON (e.g. a record passed through from stdin).
    pub fn write_line(&mut self, line: &str) -> anyhow::Result<()> {
        if self.text {
            return self.write_text(line);
        }
        self.write_raw(line)
    }

    /// Write `line` and a newline, as one write.
    fn write_raw(&mut self, line: &str) -> anyhow::Result<()> {
        // One write of the whole line: stdout's lock is then held for the whole record, so a
        // summary written by the signal thread (crate::signals) never lands inside one.
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let res = terminal_write(|| self.w.write_all(&buf).and_then(|()| self.w.flush()));
        match res {
            Ok(()) => {
                self.records += 1;
                Ok(())
            }
            // The reader went away (`| head -1`): not a failure. Write nothing more and let
            // the run go on to its real exit status.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.w = Box::new(io::sink());
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
        }
    }

    /// Text mode: the record's text (see [`crate::human`]), or nothing.
    fn write_text(&mut self, line: &str) -> anyhow::Result<()> {
        let Ok(Value::Object(mut rec)) = serde_json::from_str::<Value>(line) else {
            return self.write_raw(line);
        };
        let kind = match rec.remove("type") {
            Some(Value::String(k)) => k,
            _ => return self.write_raw(line),
        };
        match crate::human::render_record(&kind, &rec) {
            Some(text) => self.write_raw(&text),
            None => Ok(()),
        }
    }

    /// Report a per-item failure and keep going: one line on stderr (`tool: message`) and one
    /// `error` record carrying `about` (e.g. `json!({"table": "public.t"})`). The final status
    /// is then at least this bad.
    pub fn error(&mut self, err: &anyhow::Error, about: Value) -> anyhow::Result<()> {
        let kind = classify(err);
        self.error_of_kind(kind, err, about)
    }

    /// Like [`Output::error`] with an explicit class.
    pub fn error_of_kind(
        &mut self,
        kind: ErrorKind,
        err: &anyhow::Error,
        about: Value,
    ) -> anyhow::Result<()> {
        let message = format!("{err:#}");
        crate::msg::error_line(&message);
        self.error_record(kind, message, about)
    }

    /// The `error` record alone (the stderr line is the caller's).
    fn error_record(
        &mut self,
        kind: ErrorKind,
        message: String,
        about: Value,
    ) -> anyhow::Result<()> {
        self.errors += 1;
        if self.on_stdout {
            STDOUT_ERRORS.fetch_add(1, Ordering::SeqCst);
        }
        self.worst = Some(self.worst.map_or(kind, |w| w.worst(kind)));
        let about = match about {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                let mut m = Map::new();
                m.insert("about".into(), other);
                m
            }
        };
        self.emit_as(
            "error",
            &ErrorRecord {
                kind,
                exit_code: kind.code(),
                message,
                about: &about,
            },
        )
    }

    /// Say something a reader must not miss that is neither a failure nor a difference
    /// (`code` is stable snake_case, e.g. `no_tables`): a `note` record, and a warning line
    /// on stderr.
    pub fn note(&mut self, code: &str, message: &str) -> anyhow::Result<()> {
        crate::warn!("{message}");
        self.emit_as(
            "note",
            &serde_json::json!({"code": code, "message": message}),
        )
    }

    /// Note that the run found differences (exit 1 unless something failed).
    pub fn mark_differences(&mut self) {
        self.differences = true;
    }

    /// The exit status so far: the worst reported failure, else differences, else ok.
    pub fn status(&self) -> Status {
        match self.worst {
            Some(kind) => Status::Failed(kind),
            None if self.differences => Status::Differences,
            None => Status::Ok,
        }
    }

    /// Number of `error` records written so far.
    pub fn error_count(&self) -> u64 {
        self.errors
    }

    /// Write the final `summary` record and return the exit status. `extra` (a struct or a
    /// `json!` object) adds the tool's own counts after the common fields.
    pub fn finish<S: Serialize + ?Sized>(mut self, extra: &S) -> anyhow::Result<Status> {
        let status = self.status();
        let mut body = Map::new();
        body.insert("tool".into(), crate::msg::tool().into());
        body.insert("success".into(), (status == Status::Ok).into());
        body.insert("exit_code".into(), status.code().into());
        match serde_json::to_value(extra).context("serialising the summary")? {
            Value::Object(m) => body.extend(m),
            Value::Null => {}
            other => anyhow::bail!("summary fields must be an object, not {other}"),
        }
        body.insert("errors".into(), self.errors.into());
        body.insert(
            "elapsed_ms".into(),
            (self.started.elapsed().as_millis() as u64).into(),
        );
        body.insert("format_version".into(), FORMAT_VERSION.into());
        // On stdout, "ended" and the summary happen under stdout's lock, which the signal
        // thread takes before it looks: it sees either no summary yet or the whole one.
        let _held = self.on_stdout.then(|| io::stdout().lock());
        if self.on_stdout {
            STDOUT_ENDED.store(true, Ordering::SeqCst);
        }
        self.emit_as("summary", &body)?;
        // The closing line, for a person: in text mode, or when stderr is a terminal, unless
        // the caller says its own (PGSHIFT_CLOSING_LINE=0: the scripts, for the tools they run).
        if self.on_stdout
            && (self.text || io::stderr().is_terminal())
            && std::env::var_os("PGSHIFT_CLOSING_LINE").is_none_or(|v| v != "0")
        {
            crate::msg::error_line(&crate::human::closing_line(&body));
        }
        Ok(status)
    }
}

/// End the stdout stream after the fatal error `err` of class `kind` (for [`crate::run_main`]):
/// an `error` record (`"fatal":true`) and a `summary` counting every `error` record of the
/// stream, its elapsed time from `started`. Nothing if the stream has already ended (see
/// [`Output::discard`]). Returns whether it wrote; the stderr line is the caller's.
pub fn end_after_fatal(
    w: impl Write + Send + 'static,
    kind: ErrorKind,
    err: &anyhow::Error,
    started: Instant,
) -> bool {
    end_stream(w, Some((kind, format!("{err:#}"))), Map::new(), started)
}

/// End the stdout stream of a run stopped by a signal (for [`crate::signals`]): with `error`
/// (its class and message) an `error` record (`"fatal":true`) first; then the `summary` with
/// `stopped_by` (e.g. `SIGINT`). Nothing if the stream has already ended. Returns whether it
/// wrote.
pub fn end_after_signal(
    w: impl Write + Send + 'static,
    signal: &str,
    error: Option<(ErrorKind, String)>,
    started: Instant,
) -> bool {
    let mut extra = Map::new();
    extra.insert("stopped_by".into(), signal.into());
    end_stream(w, error, extra, started)
}

/// The common end of [`end_after_fatal`] and [`end_after_signal`], once per process.
fn end_stream(
    w: impl Write + Send + 'static,
    error: Option<(ErrorKind, String)>,
    extra: Map<String, Value>,
    started: Instant,
) -> bool {
    if STDOUT_ENDED.swap(true, Ordering::SeqCst) {
        return false;
    }
    let mut out = Output {
        errors: STDOUT_ERRORS.load(Ordering::SeqCst),
        started,
        text: crate::human::mode() == crate::human::Mode::Text,
        ..Output::new(w)
    };
    // Nothing left to tell a failed write to: the exit code says it all.
    let _ = match error {
        Some((kind, message)) => {
            out.error_record(kind, message, serde_json::json!({"fatal": true}))
        }
        None => Ok(()),
    }
    .and_then(|()| out.finish(&extra));
    true
}

/// Whether this process's stdout stream has ended (its summary written, or it carries no
/// records).
pub fn stdout_ended() -> bool {
    STDOUT_ENDED.load(Ordering::SeqCst)
}

/// When the process started (as [`crate::run_main`] set it), else now.
pub fn started() -> Instant {
    STARTED.get().copied().unwrap_or_else(Instant::now)
}

/// A write that may land on the terminal a progress bar is drawn on: above the bar.
pub(crate) fn terminal_write<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "progress")]
    return crate::progress::suspend(f);
    #[cfg(not(feature = "progress"))]
    f()
}

/// One record read back from a JSON-lines stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// The `"type"` tag.
    pub kind: String,
    /// The whole object, `"type"` included.
    pub value: Value,
    /// 1-based line number in the stream, for error messages.
    pub line: usize,
}

impl RawRecord {
    /// Decode into a typed struct; unknown fields are ignored (serde's default).
    pub fn parse<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        T::deserialize(&self.value).map_err(|e| {
            crate::err(
                ErrorKind::DataErr,
                format!(
                    "line {}: not a valid {} record: {e} (expected the shape documented in shared/PROTOCOL.md)",
                    self.line, self.kind
                ),
            )
        })
    }
}

/// Read records from a JSON-lines stream. Blank lines are skipped; a line that is not a JSON
/// object with a string `"type"` is a `DataErr` naming the line.
pub fn records<R: BufRead>(reader: R) -> impl Iterator<Item = anyhow::Result<RawRecord>> {
    reader.lines().enumerate().filter_map(|(i, line)| {
        let line_no = i + 1;
        match line {
            Err(e) => Some(Err(
                anyhow::Error::new(e).context(format!("reading JSON lines (line {line_no})"))
            )),
            Ok(l) if l.trim().is_empty() => None,
            Ok(l) => Some(parse_line(&l, line_no)),
        }
    })
}

/// Parse one line into a [`RawRecord`].
pub fn parse_line(line: &str, line_no: usize) -> anyhow::Result<RawRecord> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        crate::err(
            ErrorKind::DataErr,
            format!("line {line_no}: not JSON ({e}); expected one JSON object per line"),
        )
    })?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            crate::err(
                ErrorKind::DataErr,
                format!("line {line_no}: record has no string \"type\" field"),
            )
        })?
        .to_owned();
    Ok(RawRecord {
        kind,
        value,
        line: line_no,
    })
}

/// Read only the records of type `T::TYPE`, decoded; every other type is skipped.
pub fn read_typed<T, R>(reader: R) -> impl Iterator<Item = anyhow::Result<T>>
where
    T: Record + DeserializeOwned,
    R: BufRead,
{
    records(reader).filter_map(|r| match r {
        Err(e) => Some(Err(e)),
        Ok(raw) if raw.kind == T::TYPE => Some(raw.parse::<T>()),
        Ok(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Table {
        schema: String,
        name: String,
        rows: Option<i64>,
    }
    impl Record for Table {
        const TYPE: &'static str = "table";
    }

    /// A writer the test can read back after `Output` took ownership of it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn round_trip_with_type_first_and_summary_last() {
        let buf = Shared::default();
        let mut out = Output::new(buf.clone());
        let t = Table {
            schema: "public".into(),
            name: "a|b".into(),
            rows: None,
        };
        out.emit(&t).unwrap();
        let status = out.finish(&json!({"tables": 1})).unwrap();
        assert_eq!(status, Status::Ok);

        let text = buf.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(r#"{"type":"table","#), "{}", lines[0]);
        assert!(
            lines[1].starts_with(r#"{"type":"summary","#),
            "{}",
            lines[1]
        );

        let back: Vec<Table> = read_typed(text.as_bytes())
            .collect::<anyhow::Result<_>>()
            .unwrap();
        assert_eq!(back, vec![t]);
        let summary = records(text.as_bytes()).last().unwrap().unwrap();
        assert_eq!(summary.value["success"], json!(true));
        assert_eq!(summary.value["exit_code"], json!(0));
        assert_eq!(summary.value["tables"], json!(1));
        assert_eq!(summary.value["format_version"], json!(FORMAT_VERSION));
    }

    #[test]
    fn unknown_types_and_fields_are_ignored() {
        let input = concat!(
            r#"{"type":"tick","t":1}"#,
            "\n\n",
            r#"{"type":"table","schema":"s","name":"t","rows":3,"new_field":[1,2]}"#,
            "\n",
            r#"{"type":"summary","success":true}"#,
            "\n"
        );
        let tables: Vec<Table> = read_typed(input.as_bytes())
            .collect::<anyhow::Result<_>>()
            .unwrap();
        assert_eq!(
            tables,
            vec![Table {
                schema: "s".into(),
                name: "t".into(),
                rows: Some(3)
            }]
        );
    }

    #[test]
    fn malformed_lines_are_data_errors_naming_the_line() {
        let input = "{\"type\":\"table\"}\nnot json\n";
        let results: Vec<_> = records(input.as_bytes()).collect();
        let err = results[1].as_ref().unwrap_err();
        assert_eq!(classify(err), ErrorKind::DataErr);
        assert!(format!("{err:#}").starts_with("line 2: not JSON"));

        let no_type = records(r#"{"name":"x"}"#.as_bytes()).next().unwrap();
        assert!(format!("{:#}", no_type.unwrap_err()).contains("no string \"type\""));

        let wrong_shape = read_typed::<Table, _>(r#"{"type":"table","name":1}"#.as_bytes())
            .next()
            .unwrap();
        assert_eq!(classify(&wrong_shape.unwrap_err()), ErrorKind::DataErr);
    }

    #[test]
    fn per_item_errors_set_the_worst_status_and_the_run_continues() {
        let buf = Shared::default();
        let mut out = Output::new(buf.clone());
        out.mark_differences();
        assert_eq!(out.status(), Status::Differences);
        let e1 = crate::err(ErrorKind::Retry, "lock timeout on public.a");
        out.error(&e1, json!({"table": "public.a"})).unwrap();
        let e2 = crate::err(ErrorKind::Unavailable, "target went away");
        out.error(&e2, json!({"table": "public.b"})).unwrap();
        out.emit(&Table {
            schema: "public".into(),
            name: "c".into(),
            rows: Some(1),
        })
        .unwrap();
        let status = out.finish(&json!({})).unwrap();
        assert_eq!(status, Status::Failed(ErrorKind::Unavailable));

        let recs: Vec<RawRecord> = records(buf.text().as_bytes())
            .collect::<anyhow::Result<_>>()
            .unwrap();
        let kinds: Vec<&str> = recs.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["error", "error", "table", "summary"]);
        assert_eq!(recs[0].value["table"], json!("public.a"));
        assert_eq!(recs[0].value["kind"], json!("retry"));
        assert_eq!(recs[1].value["exit_code"], json!(69));
        assert_eq!(recs[3].value["errors"], json!(2));
        assert_eq!(recs[3].value["success"], json!(false));
        assert_eq!(recs[3].value["exit_code"], json!(69));
    }

    #[test]
    fn a_closed_stdout_changes_nothing_but_the_output() {
        struct Closed(Arc<Mutex<u32>>);
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                *self.0.lock().unwrap() += 1;
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let tries = Arc::new(Mutex::new(0));
        let mut out = Output::new(Closed(tries.clone()));
        out.emit_as("tick", &json!({"t": 1})).unwrap();
        out.emit_as("tick", &json!({"t": 2})).unwrap();
        out.mark_differences();
        assert_eq!(out.finish(&json!({})).unwrap(), Status::Differences);
        assert_eq!(*tries.lock().unwrap(), 1, "one write, then nothing more");

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::StorageFull.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = Output::new(Full)
            .emit_as("tick", &json!({"t": 1}))
            .unwrap_err();
        assert_eq!(classify(&err), ErrorKind::Io);
    }

    /// The only test that touches the process-wide stdout state.
    #[test]
    fn a_fatal_error_ends_the_stream_once() {
        let reset = || {
            STDOUT_ENDED.store(false, Ordering::SeqCst);
            STDOUT_ERRORS.store(0, Ordering::SeqCst);
        };
        let stdout_like = |buf: &Shared| Output {
            on_stdout: true,
            ..Output::new(buf.clone())
        };
        let err = crate::err(ErrorKind::Unavailable, "cannot connect").context("status of a");
        let started = Instant::now() - std::time::Duration::from_millis(50);

        // A per-item error, then a fatal one: both counted, the fatal one's class wins.
        reset();
        let buf = Shared::default();
        let mut out = stdout_like(&buf);
        out.error(&crate::err(ErrorKind::Retry, "busy"), json!({"table": "t"}))
            .unwrap();
        drop(out);
        assert!(end_after_fatal(
            buf.clone(),
            ErrorKind::Unavailable,
            &err,
            started
        ));
        let text = buf.text();
        let recs: Vec<Value> = records(text.as_bytes()).map(|r| r.unwrap().value).collect();
        assert_eq!(recs.len(), 3, "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with(r#"{"type":"error","kind":"unavailable","exit_code":69,"message":"status of a: cannot connect","fatal":true}"#), "{}", lines[1]);
        assert!(
            lines[2].starts_with(r#"{"type":"summary","tool":"#),
            "{}",
            lines[2]
        );
        let summary = &recs[2];
        assert_eq!(summary["success"], json!(false));
        assert_eq!(summary["exit_code"], json!(69));
        assert_eq!(summary["errors"], json!(2));
        assert!(summary["elapsed_ms"].as_u64().unwrap() >= 50, "{summary}");
        assert_eq!(summary["format_version"], json!(FORMAT_VERSION));
        // Once only.
        let again = Shared::default();
        assert!(!end_after_fatal(
            again.clone(),
            ErrorKind::Io,
            &err,
            started
        ));
        assert_eq!(again.text(), "");

        // A tool that wrote its summary gets no second one.
        reset();
        let buf = Shared::default();
        stdout_like(&buf).finish(&json!({})).unwrap();
        assert!(!end_after_fatal(buf.clone(), ErrorKind::Io, &err, started));
        assert_eq!(buf.text().lines().count(), 1);

        // Nor does one whose stdout carries no records; a test writer never ends the stream.
        reset();
        drop(Output::discard());
        assert!(!end_after_fatal(
            Shared::default(),
            ErrorKind::Io,
            &err,
            started
        ));
        reset();
        Output::new(Shared::default()).finish(&json!({})).unwrap();
        assert!(end_after_fatal(io::sink(), ErrorKind::Io, &err, started));
    }
}
