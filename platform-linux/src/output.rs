//! How `probe trace` prints: hit lines, counts, and their JSON-lines forms.
//!
//! Text, as bpftrace prints a count map: `@[libc.so.6:malloc]: 1234`, one line per probe,
//! sorted by count. A hit with `--print`: seconds since the start, pid, tid, probe, then
//! `argN=0x...` (a return: `ret=0x... duration=NNNns`, the time from the entry to the
//! return). A USDT hit shows its marker's decoded
//! arguments: `arg0="demo.py" arg1=-3 arg2=0x7f...` (signed ones in decimal, strings with
//! `--str N`). JSON: one object per line, `{"type":"hit",...}` per hit (a USDT hit's
//! `args` holds numbers, strings and `null` for unreadable ones), `{"type":"ret",...,
//! "retval":N,"duration_ns":N}` per return, and a final `{"type":"summary",...}`.

use core::fmt::Write as _;
use std::io::{self, Write};

use crate::sys::Pid;
use crate::tracer::{HitRecord, Outcome, ProbeEntry};

/// A string as a JSON string literal.
pub fn json_string(s: &str) -> String {
    crate::json::line(&s)
}

/// One hit as a text line.
pub fn hit_text(p: &ProbeEntry, r: &HitRecord) -> String {
    let mut s = format!(
        "{:>12.6} {:>7} {:>7} {}",
        r.time_ns as f64 / 1e9,
        r.pid,
        r.tid,
        p.name
    );
    for (i, a) in r.args.iter().enumerate() {
        let _ = write!(s, " arg{i}={a:#x}");
    }
    for (i, v) in r.usdt.iter().enumerate() {
        let _ = write!(s, " arg{i}={v}");
    }
    if let Some(v) = r.retval {
        let _ = write!(s, " ret={v:#x}");
        if let Some(d) = r.duration_ns {
            let _ = write!(s, " duration={d}ns");
        }
    }
    s
}

/// One hit as a JSON object.
pub fn hit_json(p: &ProbeEntry, r: &HitRecord) -> String {
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Args<'a> {
        Raw(&'a [u64]),
        Usdt(&'a [crate::usdt::UsdtValue]),
    }
    #[derive(serde::Serialize)]
    struct Hit<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        time_ns: u64,
        pid: u64,
        tid: u64,
        probe: &'a str,
        args: Args<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retval: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_ns: Option<u64>,
    }
    crate::json::line(&Hit {
        kind: if r.retval.is_some() { "ret" } else { "hit" },
        time_ns: r.time_ns,
        pid: r.pid,
        tid: r.tid,
        probe: &p.name,
        args: if r.usdt.is_empty() {
            Args::Raw(&r.args)
        } else {
            Args::Usdt(&r.usdt)
        },
        retval: r.retval,
        duration_ns: r.retval.and(r.duration_ns),
    })
}

/// The counts as text.
pub fn summary_text(out: &mut dyn Write, counts: &[(String, u64)]) -> io::Result<()> {
    writeln!(out)?;
    for (name, n) in counts {
        writeln!(out, "@[{name}]: {n}")?;
    }
    Ok(())
}

/// The final JSON object: the counts and how the process ended.
pub fn summary_json(pid: Pid, outcome: Outcome, counts: &[(String, u64)]) -> String {
    #[derive(serde::Serialize)]
    struct Count<'a> {
        probe: &'a str,
        hits: u64,
    }
    #[derive(serde::Serialize)]
    struct Summary<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        pid: i32,
        outcome: &'static str,
        exit_code: Option<i32>,
        signal: Option<i32>,
        exit_status: i32,
        probes: Vec<Count<'a>>,
    }
    let (how, code, signal) = match outcome {
        Outcome::Exited(c) => ("exited", Some(c), None),
        Outcome::Signaled(s) => ("signaled", None, Some(s)),
        Outcome::Detached(s) => ("detached", None, (s != 0).then_some(s)),
    };
    crate::json::line(&Summary {
        kind: "summary",
        pid: pid.0,
        outcome: how,
        exit_code: code,
        signal,
        exit_status: outcome.exit_code(),
        probes: counts
            .iter()
            .map(|(n, c)| Count { probe: n, hits: *c })
            .collect(),
    })
}

/// Opens `probe trace -o PATH` for writing, without harming what is there already:
///
/// - a path that does not exist is created (a new regular file);
/// - an existing regular file is truncated, as a shell's `>` does, unless it is the file
///   our standard output or error already writes to (`-o /dev/stdout` with stdout
///   redirected to a file the traced program writes too): then it is opened for appending,
///   so that neither truncates nor overwrites the other's output;
/// - anything else (`/dev/null`, `/dev/full`, a terminal, a pipe or FIFO) is opened for
///   writing as it is.
pub fn open_output(path: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            opts.create(true).truncate(true);
        }
        Err(e) => return Err(e),
        Ok(m) if m.is_file() => {
            let ours = [1, 2].iter().any(|fd| {
                std::fs::metadata(format!("/proc/self/fd/{fd}"))
                    .is_ok_and(|o| o.dev() == m.dev() && o.ino() == m.ino())
            });
            if ours {
                opts.append(true);
            } else {
                opts.truncate(true);
            }
        }
        Ok(_) => {}
    }
    opts.open(path)
}

/// `SIGKILL`, `SIGSEGV`, ... for a signal number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn summary_forms() {
        let counts = vec![("libc.so.6:free".to_owned(), 2), ("x:\"y\"".to_owned(), 5)];
        let j = summary_json(Pid(7), Outcome::Signaled(9), &counts);
        assert_eq!(
            j,
            "{\"type\":\"summary\",\"pid\":7,\"outcome\":\"signaled\",\"exit_code\":null,\
             \"signal\":9,\"exit_status\":137,\"probes\":[{\"probe\":\"libc.so.6:free\",\
             \"hits\":2},{\"probe\":\"x:\\\"y\\\"\",\"hits\":5}]}"
        );
        let mut t = Vec::new();
        summary_text(&mut t, &counts).unwrap();
        assert_eq!(
            String::from_utf8(t).unwrap(),
            "\n@[libc.so.6:free]: 2\n@[x:\"y\"]: 5\n"
        );
    }
}
