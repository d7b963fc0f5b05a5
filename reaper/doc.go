// Package reaper is the only code in the shim that calls wait4.
//
// The shim is a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER): every
// container process whose parent (runc) exits is re-parented to it, so the
// shim must reap them or they stay zombies. A Reaper owns that job. Children
// the shim starts itself (the OCI runtime binary, a logging binary) are
// started through Reaper.Start, which keeps a Tracker open across the fork
// (no lock is held while the child starts), so an instant exit is never
// lost. Processes whose pid is only learnt later (a container's init, read
// from runc's pid file) are covered by a Tracker: it keeps every exit of an
// unknown pid while it is open, so Claim finds an exit that happened before
// the pid was known.
//
// The reaper also keeps the shim's OS threads down. The Go runtime never ends
// an idle thread, and forks, waits and SIGCHLD are what make it start more
// than an idle shim needs; so after each runtime command and each SIGCHLD the
// reaper ends one surplus thread, never one whose child still runs (that
// child's Pdeathsig would fire). What is surplus it learns from the runtime
// itself: a thread it ended that the runtime starts again was needed. Reaper.OnDisposableThread gives code that
// changes a thread for good (a mount made from another working directory) a
// thread that ends afterwards, chosen by the same rule.
//
// Exit status follows the shell convention: the exit code, or 128+signal for a
// process killed by a signal (ExitStatus).
//
// reaper imports only the standard library, golang.org/x/sys and procfs (a
// leaf); it never imports process, task or proto.
package reaper
