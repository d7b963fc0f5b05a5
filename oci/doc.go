// Package oci is the shim's client for an OCI runtime command line (runc,
// crun): it builds argv, runs the binary through the reaper (never
// exec.Cmd.Wait) and turns a failure into an error that carries the runtime's
// own message from its JSON log (log.json), classified into the sentinels of
// this package.
//
// oci imports reaper and the standard library only; it knows nothing of
// containerd, protobuf or ttrpc.
package oci
