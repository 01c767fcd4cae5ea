fn main() -> std::process::ExitCode {
    shared::run_main("rowcount-diff", rowcount_diff::run)
}
