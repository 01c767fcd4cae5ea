fn main() -> std::process::ExitCode {
    shared::run_main("window-advisor", window_advisor::run)
}
