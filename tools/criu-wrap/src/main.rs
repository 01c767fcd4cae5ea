fn main() -> std::process::ExitCode {
    shared::run_main("criu-wrap", criu_wrap::run)
}
