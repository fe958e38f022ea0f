//! The `probe` command line: argument parsing (clap), `probe trace` (a thin layer over
//! [`Session`]) and `probe list`.
//!
//! Output of `probe trace`: hits (with `--print`) and the final counts go to standard output
//! (or `-o FILE`), as bpftrace does; the counts are printed after the traced command exited,
//! so its own output comes first and unchanged. Messages (probes attached, warnings, a
//! killed or detached process) go to standard error. The exit status is the command's (128
//! + the signal for a signal death, as shells report it); 0 after detaching from `-p PID`.
//!
//! `--latency` times every call (entry to return) and prints a log2 histogram per probe
//! in nanoseconds after the counts (see [`crate::latency`]); return probes that could not
//! track a call (`--maxactive`, `--max-ret-depth`) are reported as `@nmissed[PROBE]: N`,
//! those nested too deep also as `@nmissed_nesting[PROBE]: N`.
//!
//! ```text
//! probe trace SPEC... [-p PID] [--print] [--args N] [--str N]... [--json] [-o FILE]
//!             [-- CMD ARGS...]
//!             [--latency] [--maxactive N] [--max-ret-depth N] [--ret-by-insn] [--stack]
//!             [--folded FILE] [--no-follow] [--verbose]
//! probe list PATH [PATTERN] [-p PID] [--mangled]
//! ```
//!
//! `probe list` prints the functions, then (for a file with `.note.stapsdt`) a `# USDT markers`
//! section: each marker location's file offset, its semaphore's file offset (`-` for none),
//! `provider:name` and argument specs. Mangled C++ and Rust functions are listed by their
//! demangled names; `--mangled` adds the symbol itself after `# `.

use std::ffi::OsString;
use std::io::Write;

use clap::{Args, Parser, Subcommand};

use std::ffi::OsStr;

use crate::elf::FunctionSymbol;
use crate::output;
use crate::resolve::{self, find_module, ResolveError, Resolver};
use crate::sys::{self, Pid, SysError};
use crate::tracer::{Outcome, Session, SessionOptions, TraceError};

/// `probe`: entry and return probes on functions of unmodified programs, without root.
#[derive(Debug, Parser)]
#[command(
    name = "probe",
    version,
    about = "Entry and return probes on functions of unmodified programs (ptrace, no root)",
    long_about = None
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Put probes on functions and count (or print) their hits.
    ///
    /// SPEC is `uprobe:PATH:SYMBOL`, `uretprobe:PATH:SYMBOL`, `PATH:SYMBOL+OFF`,
    /// `PATH:0xFILEOFFSET`, `lib:func` (e.g. `libc:malloc`), a glob (`libc:str*`), or a
    /// USDT marker `usdt:PATH:PROVIDER:NAME` / `usdt:PATH:NAME` (globs allowed).
    Trace(TraceArgs),
    /// List the functions and USDT markers of an executable or library that can be probed.
    List(ListArgs),
}

/// Arguments of `probe trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Probe specs (`uprobe:libc:malloc`, `libc:str*`, `/usr/bin/python3:PyObject_GetAttr`).
    #[arg(required = true, value_name = "SPEC")]
    pub specs: Vec<String>,
    /// Attach to this running process (every thread) instead of starting a command.
    #[arg(short, long, value_name = "PID")]
    pub pid: Option<i32>,
    /// Print every hit (time, pid, tid, probe, arguments) instead of only counts.
    #[arg(long)]
    pub print: bool,
    /// With `--print`, show the first N integer arguments (0 to 6).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=6))]
    pub args: u8,
    /// With `--print`, show argument N (from 0) as a NUL-terminated string (at most 256
    /// bytes) read at the address it holds: a function's N-th integer argument (`uprobe:`
    /// specs, N below 6), or a USDT marker's argument N where it is pointer-sized (`8@`,
    /// unsigned); repeatable.
    #[arg(long = "str", value_name = "N", value_parser = clap::value_parser!(u8).range(0..12))]
    pub strings: Vec<u8>,
    /// Write JSON lines instead of text: one object per hit with `--print`, and a final
    /// summary object.
    #[arg(long)]
    pub json: bool,
    /// Time every call of the probed functions and print a log2 histogram of durations
    /// per probe at the end, in nanoseconds (`uprobe:` specs become return probes too).
    #[arg(long)]
    pub latency: bool,
    /// Calls of one return-probed function tracked at once (over all threads); more are
    /// not timed and are reported as `@nmissed`.
    #[arg(long, value_name = "N", default_value_t = crate::tracer::returns::DEFAULT_MAXACTIVE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub maxactive: u32,
    /// Return-probed calls one thread tracks at once: how deep it may nest (a recursion's
    /// depth) with every return seen. Deeper calls are not tracked and are reported as
    /// `@nmissed` and `@nmissed_nesting` (the kernel's uretprobes stop at 64). Memory
    /// grows with the nesting each thread reaches (about 120 bytes a call), not with N.
    /// (`--ret-by-insn` tracks calls by stack pointer, without this limit.)
    #[arg(long, value_name = "N", default_value_t = crate::tracer::returns::DEFAULT_MAX_DEPTH,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_ret_depth: usize,
    /// Catch returns (of `uretprobe:` specs, and the calls `--latency` times) by
    /// breakpoints on each `ret` instruction of the function, found by decoding it from its
    /// symbol's start to its end, instead of replacing the return address of each call.
    /// Needed for Go programs (Go moves stacks and reads return addresses; without this
    /// flag return probes there are refused), and works for any function. It cannot see a
    /// call left by a tail call (a `jmp` to another function), `longjmp` or unwinding: no
    /// return is counted for it (a function that jumps out of itself is warned about).
    /// Entry probes on a function's first instruction then count calls, not executions of
    /// that instruction (a jump back to it, as after Go grows a stack, is no call).
    #[arg(long)]
    pub ret_by_insn: bool,
    /// Leave CPU placement to the scheduler. By default, while the traced program has a
    /// single thread, `probe` runs it and itself on one CPU (a hit is then about 4x cheaper
    /// on a VM: no idle CPU to wake on every resume) and puts the program's CPU mask back
    /// at detach; with more threads only `probe` itself stays on one CPU (the program's
    /// threads run where the scheduler puts them). A mask the program sets itself is always
    /// kept.
    #[arg(long)]
    pub no_cpu_placement: bool,
    /// Walk the user stack of each hit (call-frame information from `.eh_frame`, frame
    /// pointers where there is none; through return-probed frames too) and print at the end
    /// how often each distinct stack was seen, innermost frame first, as bpftrace prints
    /// `@[ustack] = count()`.
    #[arg(long)]
    pub stack: bool,
    /// Write the stacks (implies `--stack`) to FILE in the folded format flame-graph tools
    /// read: one `outermost;...;innermost COUNT` line per distinct stack.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<std::path::PathBuf>,
    /// Trace only the process itself (all its threads), not the processes it starts, as
    /// `strace` without `-f`: for programs that use ptrace themselves (gdb, strace, a
    /// sanitizer's or crash handler's PTRACE_TRACEME or attach to its own child), which fail
    /// when their child is traced already. A fork child is let go before it runs, with the
    /// breakpoints it inherited taken out; a vfork child (it runs in its parent's memory)
    /// at its exec. Their calls are not counted (a vfork child's before its exec are).
    #[arg(long)]
    pub no_follow: bool,
    /// List every function a spec matched but could not probe (with its file offset and
    /// reason), and every attached probe a process could not get; without it, one line per
    /// reason with its count.
    #[arg(short, long)]
    pub verbose: bool,
    /// Write the hits and the summary to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// The command to start and trace (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Arguments of `probe list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// An executable or library: a path or a short name (`libc`, `libc.so.6`, `python3`).
    #[arg(value_name = "PATH")]
    pub path: String,
    /// Only functions and markers (`provider:name`) matching this glob (`str*`,
    /// `python:*`), or containing this text.
    #[arg(value_name = "PATTERN")]
    pub pattern: Option<String>,
    /// Also show each demangled function's mangled symbol (after `# `).
    #[arg(long)]
    pub mangled: bool,
    /// Look the short name up in this process's mappings first.
    #[arg(short, long, value_name = "PID")]
    pub pid: Option<i32>,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A probe spec or module could not be resolved.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Tracing failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// Writing the output failed (a closed pipe is not an error).
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// Tracing failed.
    #[error(transparent)]
    Trace(#[from] TraceError),
}

/// Runs a parsed command line; returns the process exit status.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<i32, CliError> {
    match cli.command {
        Command::List(args) => list(&args, out).map(|()| 0),
        Command::Trace(args) => trace(&args, out),
    }
}

fn trace(args: &TraceArgs, out: &mut dyn Write) -> Result<i32, CliError> {
    // Syntax first: nothing is started for a bad spec.
    for t in &args.specs {
        resolve::parse_spec(t)?;
    }
    match (args.pid, args.command.is_empty()) {
        (Some(_), false) => {
            return Err(CliError::Usage(
                "give either -p PID or -- CMD ARGS, not both".into(),
            ))
        }
        (None, true) => {
            return Err(CliError::Usage(
                "nothing to trace: add -p PID (a running process) or -- CMD ARGS (a command \
                 to start)"
                    .into(),
            ))
        }
        _ => {}
    }
    let mut file;
    let out: &mut dyn Write = match &args.output {
        Some(path) => {
            file = std::io::BufWriter::new(output::open_output(path).map_err(|e| {
                CliError::Usage(format!("cannot open output file {}: {e}", path.display()))
            })?);
            &mut file
        }
        None => out,
    };
    // Opened before tracing, so a path that cannot be written is refused up front.
    let mut folded = match &args.folded {
        Some(path) => Some(std::io::BufWriter::new(output::open_output(path).map_err(
            |e| CliError::Usage(format!("cannot open --folded file {}: {e}", path.display())),
        )?)),
        None => None,
    };
    sys::install_stop_handlers()?;
    if !args.strings.is_empty() && !args.print {
        return Err(CliError::Usage(
            "--str shows arguments of printed hits: add --print".into(),
        ));
    }
    let opts = SessionOptions {
        record_args: args.print.then_some(usize::from(args.args)),
        maxactive: args.maxactive,
        max_ret_depth: args.max_ret_depth,
        latency: args.latency,
        string_args: args.strings.iter().fold(0, |m, &i| m | 1 << i),
        placement: if args.no_cpu_placement {
            crate::placement::CpuPlacement::Off
        } else {
            crate::placement::CpuPlacement::Auto
        },
        ret_by_insn: args.ret_by_insn,
        stack: args.stack || args.folded.is_some(),
        no_follow: args.no_follow,
        ..SessionOptions::default()
    };
    if !args.ret_by_insn {
        refuse_go_returns(args)?;
    }
    let mut session = match args.pid {
        Some(pid) => Session::attach(Pid(pid), opts)?,
        None => {
            let argv: Vec<&OsStr> = args.command[1..].iter().map(OsString::as_os_str).collect();
            Session::spawn(&args.command[0], &argv, opts)?
        }
    };
    if let Some(w) = session.setid_warning() {
        eprintln!("probe: warning: {w}");
    }
    let mut total = 0;
    for spec in &args.specs {
        match session.add_spec(spec) {
            Ok(r) => {
                total += r.added;
                for n in &r.notes {
                    eprintln!("probe: note: {n}");
                }
                for w in &r.warnings {
                    eprintln!("probe: warning: {w}");
                }
                for l in r.skip_lines(spec, args.verbose) {
                    eprintln!("probe: {l}");
                }
            }
            Err(e) => {
                let _ = session.abort();
                return Err(e.into());
            }
        }
    }
    eprintln!(
        "probe: attached {total} probe{} to process {}{}",
        if total == 1 { "" } else { "s" },
        session.pid(),
        if args.pid.is_some() {
            "; Ctrl-C to detach"
        } else {
            ""
        }
    );
    let json = args.json;
    let mut last_flush = std::time::Instant::now();
    // The first write error: a closed pipe (`probe ... | head`) detaches quietly, any other
    // (a full disk) detaches and is reported.
    let mut write_err: Option<std::io::Error> = None;
    let stop = session.detach_flag();
    let outcome = session.run(&mut |p, rec| {
        if write_err.is_some() {
            return;
        }
        let mut r = if json {
            writeln!(out, "{}", output::hit_json(p, rec))
        } else {
            writeln!(out, "{}", output::hit_text(p, rec))
        };
        if r.is_ok() && last_flush.elapsed() > core::time::Duration::from_millis(50) {
            last_flush = std::time::Instant::now();
            r = out.flush();
        }
        if let Err(e) = r {
            write_err = Some(e);
            stop.store(true, core::sync::atomic::Ordering::Relaxed);
        }
    })?;
    let outcome = match outcome {
        Outcome::Detached(sig) if session.is_spawned() => {
            // The command lives on without us. A signal meant for probe alone is passed on
            // (one from the terminal, SI_KERNEL, reached the command too), and we wait for it
            // like a shell.
            if sig != 0 && !sys::stop_from_terminal() {
                let _ = sys::kill(session.pid(), sig);
            }
            wait_child(session.pid()).unwrap_or(outcome)
        }
        o => o,
    };
    let closed = write_err
        .as_ref()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe);
    let counts = session.summary();
    let rets = session.return_summary();
    let stacks = session.stacks();
    if let (Some(f), Some(path)) = (folded.as_mut(), &args.folded) {
        if let Err(e) = crate::stack::write_folded(f, &stacks).and_then(|()| f.flush()) {
            eprintln!(
                "probe: error: writing --folded file {}: {e}",
                path.display()
            );
        }
    }
    let show_stacks = args.stack;
    let res = if write_err.is_some() {
        Ok(()) // nothing more can be written
    } else if json {
        let s = if show_stacks {
            crate::stack::write_json(out, &stacks)
        } else {
            Ok(())
        };
        s.and_then(|()| crate::latency::write_returns(out, &rets, true))
            .and_then(|()| {
                writeln!(
                    out,
                    "{}",
                    output::summary_json(session.pid(), outcome, &counts)
                )
            })
    } else {
        let s = if show_stacks {
            crate::stack::write_text(out, &stacks)
        } else {
            Ok(())
        };
        s.and_then(|()| output::summary_text(out, &counts))
            .and_then(|()| crate::latency::write_returns(out, &rets, false))
    };
    for r in rets.iter().filter(|r| r.nmissed > 0) {
        let mut why = Vec::new();
        if r.nesting > 0 {
            why.push(format!(
                "{} nested deeper than --max-ret-depth {} in a thread",
                r.nesting, args.max_ret_depth
            ));
        }
        if r.nmissed > r.nesting {
            why.push(format!(
                "{} with more than --maxactive {} in flight",
                r.nmissed - r.nesting,
                args.maxactive
            ));
        }
        eprintln!(
            "probe: {} calls of {} were not tracked (their returns are not counted): {}",
            r.nmissed,
            r.name,
            why.join(", ")
        );
    }
    if let Err(e) = res.and_then(|()| out.flush()) {
        write_err.get_or_insert(e);
    }
    let closed = closed
        || write_err
            .as_ref()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe);
    for w in session.warnings() {
        eprintln!("probe: warning: {w}");
    }
    if !session.released().is_empty() {
        let pids: Vec<String> = session.released().iter().map(|p| p.to_string()).collect();
        eprintln!(
            "probe: --no-follow: process(es) {} started by the traced process ran untraced",
            pids.join(", ")
        );
    }
    for l in session.end_lines(args.verbose) {
        eprintln!("probe: {l}");
    }
    if !session.left_running().is_empty() {
        let pids: Vec<String> = session
            .left_running()
            .iter()
            .map(|p| p.to_string())
            .collect();
        eprintln!(
            "probe: the command had exited; its descendants still running were detached \
             (their code restored) before they ended: process(es) {}",
            pids.join(", ")
        );
    }
    match outcome {
        Outcome::Signaled(sig) => eprintln!(
            "probe: process {} was killed by signal {sig} ({})",
            session.pid(),
            output::signal_name(sig)
        ),
        Outcome::Detached(_) => eprintln!(
            "probe: detached from process {}, its code restored",
            session.pid()
        ),
        Outcome::Exited(_) => {}
    }
    match write_err {
        Some(e) if !closed => Err(CliError::Output(e)),
        _ => Ok(outcome.exit_code()),
    }
}

/// Refuses return probes on a Go program before the command is started or the process
/// attached (the session checks again, for files it finds only in the process's maps):
/// a spec naming its file, or the command's or process's executable.
fn refuse_go_returns(args: &TraceArgs) -> Result<(), CliError> {
    let pid = args.pid.map(Pid);
    let exe = match (pid, args.command.first()) {
        (Some(p), _) => std::fs::read_link(format!("/proc/{p}/exe")).ok(),
        (None, Some(c)) if std::path::Path::new(c).components().count() > 1 => Some(c.into()),
        (None, Some(c)) => c.to_str().and_then(|c| find_module(c, None).ok()),
        (None, None) => None,
    };
    let mut resolver = Resolver::new(None);
    for text in &args.specs {
        let spec = resolve::parse_spec(text)?;
        if spec.kind == resolve::ProbeKind::Usdt {
            continue;
        }
        let path = match &spec.module {
            Some(m) => match find_module(m, pid) {
                Ok(p) => p,
                Err(_) => continue, // the session reports it
            },
            None => match &exe {
                Some(p) => p.clone(),
                None => continue,
            },
        };
        if let Ok(image) = resolver.image(&path) {
            resolve::refuse_go_return(image, text, spec.kind, args.latency)?;
        }
    }
    Ok(())
}

/// Waits for our (no longer traced) child to end.
fn wait_child(pid: Pid) -> Option<Outcome> {
    loop {
        match sys::wait_through_stop(Some(pid)).ok()? {
            sys::WaitStatus::Exited(_, c) => return Some(Outcome::Exited(c)),
            sys::WaitStatus::Signaled(_, s, _) => return Some(Outcome::Signaled(s)),
            _ => {}
        }
    }
}

fn list(args: &ListArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let path = find_module(&args.path, args.pid.map(Pid))?;
    let mut resolver = Resolver::new(None);
    let image = resolver.image(&path)?;
    let matcher = match &args.pattern {
        Some(p) if resolve::is_glob(p) => {
            Some(Matcher::Glob(glob::Pattern::new(p).map_err(|e| {
                CliError::Usage(format!("bad pattern `{p}`: {e}"))
            })?))
        }
        Some(p) => Some(Matcher::Substring(p.clone())),
        None => None,
    };
    let mut rows: Vec<_> = image
        .symbols()
        .iter()
        .filter(|s| match &matcher {
            None => true,
            Some(Matcher::Glob(g)) => s.glob_matches(g),
            Some(Matcher::Substring(t)) => {
                s.name.contains(t.as_str())
                    || s.demangled
                        .as_deref()
                        .is_some_and(|d| d.contains(t.as_str()))
            }
        })
        .collect();
    let key = |s: &FunctionSymbol| {
        (
            s.demangled.as_deref().unwrap_or(&s.name).to_owned(),
            s.file_offset,
        )
    };
    rows.sort_by_cached_key(|s| key(s));
    let result = (|| -> std::io::Result<()> {
        writeln!(out, "# {}", path.display())?;
        writeln!(out, "# {:>16}  {:>8}  FUNCTION", "FILE OFFSET", "SIZE")?;
        for s in &rows {
            let note = if s.ifunc { "  (ifunc resolver)" } else { "" };
            // A mangled symbol shows its demangled name, then the mangled one after `# `.
            let mangled = match &s.demangled {
                Some(_) if args.mangled => format!("  # {}", s.versioned_name()),
                _ => String::new(),
            };
            writeln!(
                out,
                "{:#018x}  {:>8}  {}{note}{mangled}",
                s.file_offset,
                s.size,
                s.display_name()
            )?;
        }
        let markers = usdt_rows(&path, matcher.as_ref());
        if !markers.is_empty() {
            writeln!(out, "# USDT markers")?;
            writeln!(
                out,
                "# {:>16}  {:>18}  {:<32}  ARGS",
                "FILE OFFSET", "SEMAPHORE OFFSET", "MARKER"
            )?;
            for m in &markers {
                let sem = match (m.semaphore_offset, m.semaphore) {
                    (Some(o), _) => format!("{o:#018x}"),
                    (None, 0) => "-".to_owned(),
                    (None, _) => "(not in file)".to_owned(),
                };
                writeln!(
                    out,
                    "{:#018x}  {sem:>18}  {:<32}  {}",
                    m.file_offset,
                    m.full_name(),
                    m.args
                )?;
            }
        }
        out.flush()
    })();
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(CliError::from),
    }
}

#[derive(Debug)]
enum Matcher {
    Glob(glob::Pattern),
    Substring(String),
}

impl Matcher {
    fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Glob(g) => g.matches(s),
            Matcher::Substring(t) => s.contains(t.as_str()),
        }
    }
}

/// The USDT markers of `path` that `matcher` selects (by `provider:name` or `name`), sorted
/// by name then offset; none for a file without markers or that cannot be read.
fn usdt_rows(path: &std::path::Path, matcher: Option<&Matcher>) -> Vec<crate::usdt::UsdtMarker> {
    let Ok(file) = crate::usdt::UsdtFile::open(path) else {
        return Vec::new();
    };
    let mut rows: Vec<_> = file
        .markers()
        .iter()
        .filter(|m| matcher.is_none_or(|t| t.matches(&m.full_name()) || t.matches(&m.name)))
        .cloned()
        .collect();
    rows.sort_by(|a, b| {
        (&a.provider, &a.name, a.file_offset).cmp(&(&b.provider, &b.name, b.file_offset))
    });
    rows
}
