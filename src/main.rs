#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    didymos_cli::main()
}

#[path = "cli/mod.rs"]
mod didymos_cli;
