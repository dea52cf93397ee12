fn main() -> std::process::ExitCode {
    chime::cli::main_with_args()
}
