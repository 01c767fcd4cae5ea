fn main() -> std::process::ExitCode {
    shared::run_main("pgdata-sync", pgdata_sync::run)
}
