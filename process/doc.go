// Package process owns the lifecycle of one OS process of a container: the
// init (Init) or an exec (Exec). It drives the OCI runtime through the
// Runtime interface, asks stdio for the process's streams and the reaper for
// its exit, and keeps a typed State with an explicit transition table.
//
// Each process runs one exit-watcher goroutine from the moment its pid is
// known until it is reaped; the watcher records the exit, moves the state to
// Stopped, closes Done and then calls the owner's OnExit hook. Nothing else in
// the package blocks on a process.
//
// process knows nothing of protobuf, ttrpc or containerd's task API.
package process
