//! The `keygate` operator CLI: see `keygate --help` and the README's
//! "Operating keygate from the command line".

fn main() -> std::process::ExitCode {
    keygate::cli::main()
}
