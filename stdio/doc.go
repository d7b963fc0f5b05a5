// Package stdio owns a process's standard streams on the shim side: it opens
// what containerd names (FIFO paths, file:// URIs, or nothing), makes the files
// the process inherits, and copies between them until the streams end.
//
// Guarantees: the process writes to a pipe the shim always reads, so it never
// gets EPIPE/SIGPIPE and never blocks when a client detaches or containerd is
// down; while an output FIFO has a reader, every byte the process wrote before
// its pipes reached EOF is written to the FIFO before the FIFO is closed, and
// while it has none the output is discarded and counted, never buffered (see
// output); the stdin FIFO is held open for writing by the shim so a
// detaching client does not end the process's stdin, and only CloseStdin (the
// task API's CloseIO) gives up that hold.
//
// stdio imports no project package; it knows nothing of processes.
package stdio
