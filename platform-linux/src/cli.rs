//! The `probe` command line: argument parsing (clap) and the subcommands that do not need
//! the core engine (`probe list`).
//!
//! ```text
//! probe trace SPEC... [-p PID] [--print] [--args N] [--json] [-- CMD ARGS...]
//! probe list PATH [PATTERN] [-p PID]
//! ```

use std::ffi::OsString;
use std::io::Write;

use clap::{Args, Parser, Subcommand};

use crate::resolve::{self, find_module, ResolveError, Resolver};
use crate::sys::{Pid, SysError};

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
    /// `PATH:0xFILEOFFSET`, `lib:func` (e.g. `libc:malloc`) or a glob (`libc:str*`).
    Trace(TraceArgs),
    /// List the functions of an executable or library that can be probed.
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
    /// Write JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
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
    /// Only functions matching this glob (`str*`, `*alloc`), or containing this text.
    #[arg(value_name = "PATTERN")]
    pub pattern: Option<String>,
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
    /// `probe trace` is not connected to the core engine yet.
    #[error("tracing is not implemented yet ({0} probe points resolved); `probe list` works")]
    NotImplemented(usize),
}

/// Runs a parsed command line; returns the process exit status.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<i32, CliError> {
    match cli.command {
        Command::List(args) => list(&args, out).map(|()| 0),
        Command::Trace(args) => trace(&args),
    }
}

fn trace(args: &TraceArgs) -> Result<i32, CliError> {
    let specs = args
        .specs
        .iter()
        .map(|t| resolve::parse_spec(t))
        .collect::<Result<Vec<_>, _>>()?;
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
    let mut resolver = Resolver::new(args.pid.map(Pid));
    let mut points = 0;
    for spec in specs {
        let spec = match (&spec.module, args.command.first()) {
            (None, Some(cmd)) => resolve::ProbeSpec {
                module: Some(cmd.to_string_lossy().into_owned()),
                ..spec
            },
            _ => spec,
        };
        points += resolver.resolve(&spec)?.len();
    }
    Err(CliError::NotImplemented(points))
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
            Some(Matcher::Glob(g)) => g.matches(&s.name) || g.matches(&s.versioned_name()),
            Some(Matcher::Substring(t)) => s.name.contains(t.as_str()),
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.file_offset.cmp(&b.file_offset)));
    let result = (|| -> std::io::Result<()> {
        writeln!(out, "# {}", path.display())?;
        writeln!(out, "# {:>16}  {:>8}  FUNCTION", "FILE OFFSET", "SIZE")?;
        for s in &rows {
            let note = if s.ifunc { "  (ifunc resolver)" } else { "" };
            writeln!(
                out,
                "{:#018x}  {:>8}  {}{note}",
                s.file_offset,
                s.size,
                s.versioned_name()
            )?;
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
