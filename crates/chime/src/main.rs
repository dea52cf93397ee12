// mimalloc instead of glibc's malloc: a profile of the hot path showed glibc's malloc/free
// (with its arena locking and consolidation) at about a fifth of the async workers' CPU;
// every request, delivery and JSON answer allocates.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    chime::cli::main_with_args()
}
