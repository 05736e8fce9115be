//! The `hookgate` binary: everything is in the library; see `hookgate::cli`.

fn main() {
    std::process::exit(hookgate::cli::main());
}
