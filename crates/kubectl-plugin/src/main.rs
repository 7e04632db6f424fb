//! The `kubectl-promotion` binary: `kubectl promotion <command>` once on the PATH.

use clap::Parser;
use kubectl_promotion::cli::{self, Cli, EXIT_ERROR};
use kubectl_promotion::text::Paint;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout();
    match cli::run(cli, &mut stdout, Paint::for_stdout()).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
