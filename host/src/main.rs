//! The `sluice` binary.

/// mimalloc instead of the system allocator: a run makes and drops many
/// small buffers per request and per `for_each` item on several threads,
/// and glibc's malloc spent a fifth of the create step's CPU at a million
/// members (arena locks, consolidating a heap fragmented by the earlier
/// steps' large outputs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
