fn main() -> std::process::ExitCode {
    shared::run_main("pg-switch", pg_switch::run)
}
