fn main() -> std::process::ExitCode {
    shared::run_main("pg-logical", pg_logical::run)
}
