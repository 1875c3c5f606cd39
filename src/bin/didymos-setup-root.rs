#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    eprintln!("didymos-setup-root: not built yet");
    std::process::ExitCode::FAILURE
}
