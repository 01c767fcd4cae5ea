fn main() -> std::process::ExitCode {
    shared::run_main("pg-checksum", pg_checksum::run)
}
