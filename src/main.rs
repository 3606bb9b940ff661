//! The `tollgate` binary; everything lives in `tollgate-gateway`.

fn main() -> std::process::ExitCode {
    tollgate_gateway::cli::main()
}
