fn main() -> std::process::ExitCode {
    shared::run_main("pg-report", pg_report::run)
}
