// Package process owns the lifecycle of one OS process of a container: the
// init (Init) or an exec (Exec). It drives the OCI runtime through the
// Runtime interface, asks stdio for the process's streams and the reaper for
// its exit, and keeps a typed State with an explicit transition table.
//
// Every state change goes through move and the table in state.go, under the
// process's lock. An operation that takes time first claims a state under
// the lock (Starting, Deleting) and then works without it; a second caller
// sees the claim and is refused. No lock of this package is held across a
// runtime call, a stdio open or a wait. Runtime calls on a live container
// (kill, pause, resume, update, checkpoint) are counted while in flight, and
// Delete waits for them before it runs the runtime's delete.
//
// Each process runs one exit-watcher goroutine from the moment its pid is
// known until it is reaped; the watcher records the exit and moves the state
// to Stopped. An Init's watcher then thaws it if it died paused, writes
// exit.json, closes Done and calls the owner's OnExit hook. An Exec's calls
// OnExit before it closes Done, so that a client which deletes the container
// right after Wait returns finds the exec no longer counted as running.
// Nothing else in the package blocks on a process.
//
// process knows nothing of protobuf, ttrpc or containerd's task API.
package process
