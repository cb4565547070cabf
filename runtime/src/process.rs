//! Process setup shared by the `omnic` and `omnirt` binaries.

/// Restores the default action of `SIGPIPE` (terminate quietly), as C
/// command-line tools have it. Rust programs start with it ignored, so a
/// write to a closed pipe (`omnic compile … --emit mlir | head`) becomes an
/// error that `println!` turns into a panic; with the default action the
/// process just ends when its reader has gone. No-op off Unix.
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called at the start of `main`, before any thread exists;
    // setting a signal's disposition to SIG_DFL has no other precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
