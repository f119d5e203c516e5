//! Links the `auditlake` binary as a position-dependent executable.
//!
//! The binary is large (~145 MB of code: DataFusion, delta-rs, librdkafka),
//! and as a PIE the dynamic loader applied ~333,000 relative relocations at
//! every start, copy-on-write faulting ~1,800 pages: 8 ms before `main`
//! (`auditlake --version`: 8.1 ms, 1,790 page faults; non-PIE: 2.7 ms, 228).
//! Every command is a short process for somebody (`retention verify` takes
//! ~60 ms on a 5M-event lake, a point query ~100 ms), so that start is
//! worth keeping small. The cost is ASLR of the executable's own image
//! (libraries, heap and stack are still randomised).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
