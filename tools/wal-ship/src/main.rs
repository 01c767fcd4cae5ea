fn main() -> std::process::ExitCode {
    shared::run_main("wal-ship", wal_ship::run)
}
