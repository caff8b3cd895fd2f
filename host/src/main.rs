//! The `sluice` binary.

/// mimalloc instead of the system allocator: a run makes and drops many
/// small buffers per request and per `for_each` item on several threads,
/// and glibc's malloc spent a fifth of the create step's CPU at a million
/// members (arena locks, consolidating a heap fragmented by the earlier
/// steps' large outputs).
///
/// Built with `no_thp`: otherwise mimalloc asks Linux for transparent huge
/// pages on its arenas (`madvise(MADV_HUGEPAGE)`), so the first touch of
/// each 2 MiB zeroes all of it, however little is used. A 100k-member sync
/// spent 14% of its CPU in that zeroing; without it (medians of five
/// alternating runs) its system time fell from 2.6 s to 1.3 s and its wall
/// time from 8.7 s to 7.4 s.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
