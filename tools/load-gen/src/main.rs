fn main() -> std::process::ExitCode {
    shared::run_main("load-gen", load_gen::run)
}
