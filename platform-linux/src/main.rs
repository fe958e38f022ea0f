//! The `probe` command line; see [`platform_linux::cli`].
//!
//! `probe trace` runs as two processes: the one started (the guardian) forks the tracer and
//! waits for it. Killing the guardian in any way, SIGKILL included, makes the kernel send the
//! tracer SIGTERM, and the tracer detaches cleanly (every byte, semaphore and return address
//! restored); signals sent to the guardian are passed on to the tracer.

use clap::Parser;

use platform_linux::cli::{run, Cli, Command};
use platform_linux::sys::{self, Forked};

fn main() {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Trace(_)) {
        match sys::fork_guardian(libc::SIGTERM) {
            Ok(Forked::Tracer) => {}
            Ok(Forked::Guardian(tracer)) => std::process::exit(guard(tracer)),
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

/// The guardian's life: wait for the tracer, exit as it did.
fn guard(tracer: sys::Pid) -> i32 {
    loop {
        match sys::wait_through_stop(Some(tracer)) {
            Ok(sys::WaitStatus::Exited(_, code)) => return code,
            Ok(sys::WaitStatus::Signaled(_, sig, _)) => {
                eprintln!("probe: error: the tracer (process {tracer}) was killed by signal {sig}");
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
