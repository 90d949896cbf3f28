//! The one module with `unsafe`: a `pre_exec` hook, which runs in the forked child before exec.

#![allow(unsafe_code)]

/// Makes the child get SIGKILL when the thread that spawned it dies, so a crashed or killed
/// slotbox leaves no command running. (tokio spawns from its worker threads, which live as long
/// as the runtime.)
pub(crate) fn die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs between fork and exec and only makes the async-signal-safe prctl
    // syscall; it allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}
