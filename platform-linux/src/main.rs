//! The `probe` command line; see [`platform_linux::cli`].
//!
//! `probe trace` runs as two processes: the one started (the guardian) forks the tracer and
//! waits for it. Killing the guardian in any way, SIGKILL included, makes the kernel send the
//! tracer SIGTERM, and the tracer detaches cleanly (every byte, semaphore and return address
//! restored); signals sent to the guardian are passed on to the tracer. If the tracer itself
//! dies without detaching, the guardian restores the code bytes and semaphores it journalled
//! (see [`platform_linux::journal`]).

use clap::Parser;

use platform_linux::cli::{run, Cli, Command};
use platform_linux::sys::{self, Forked};

fn main() {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Trace(_)) {
        match sys::fork_guardian(libc::SIGTERM) {
            Ok(Forked::Tracer(journal)) => platform_linux::journal::start(journal),
            Ok(Forked::Guardian(tracer, journal)) => std::process::exit(guard(tracer, journal)),
            Err(e) => {
                eprintln!("probe: error: {e}");
                std::process::exit(1);
            }
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let code = match run(cli, &mut out) {
        Ok(code) => code,
        Err(e) => {
            drop(out);
            eprintln!("probe: error: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// The guardian's life: read the tracer's journal until it exits, put back what it left
/// patched if it died without a detach, exit as it did.
fn guard(tracer: sys::Pid, journal: std::fs::File) -> i32 {
    let left = platform_linux::journal::read_until_closed(journal);
    loop {
        match sys::wait_through_stop(Some(tracer)) {
            Ok(sys::WaitStatus::Exited(_, code)) => return code,
            Ok(sys::WaitStatus::Signaled(_, sig, _)) => {
                eprintln!("probe: error: the tracer (process {tracer}) was killed by signal {sig}");
                let (n, errors) = platform_linux::journal::restore(&left);
                if n > 0 {
                    eprintln!(
                        "probe: restored {n} breakpoint(s), semaphore(s) and return address(es) \
                         the tracer left"
                    );
                }
                for e in errors {
                    eprintln!("probe: error: restoring {e}");
                }
                return 128 + sig;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("probe: error: waiting for the tracer: {e}");
                return 1;
            }
        }
    }
}
