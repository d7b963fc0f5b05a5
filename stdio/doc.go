// Package stdio owns a process's standard streams on the shim side: it opens
// what containerd names (FIFO paths, file:// URIs, or nothing), makes the files
// the process inherits, and copies between them until the streams end.
//
// Guarantees: output FIFOs are held open for reading by the shim too, so the
// process never gets EPIPE/SIGPIPE when a client detaches (fifo(7)); every byte
// the process wrote before its pipes reached EOF is written to the FIFO before
// the FIFO is closed; the stdin FIFO is held open for writing by the shim so a
// detaching client does not end the process's stdin, and only CloseStdin (the
// task API's CloseIO) gives up that hold.
//
// stdio imports no project package; it knows nothing of processes.
package stdio
