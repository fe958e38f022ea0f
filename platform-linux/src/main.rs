//! The `probe` command line; see [`platform_linux::cli`].

use clap::Parser;

use platform_linux::cli::{run, Cli};

fn main() {
    let cli = Cli::parse();
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
