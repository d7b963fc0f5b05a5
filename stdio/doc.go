// Package stdio owns a process's standard streams on the shim side: it opens
// what containerd names (FIFO paths, file:// URIs, or nothing), makes the files
// the process inherits, and copies between them until the streams end.
//
// Guarantees: a reader that opens an output FIFO late (before Close) gets
// everything the process wrote, within what the FIFO and the process's pipe
// hold, then EOF, and its open never hangs: the write end is closed only once
// a reader has the FIFO open, or by Close (see reader_linux.go); the process
// never gets EPIPE/SIGPIPE and never blocks once a reader that was there has
// left (containerd down, client detached): that output is discarded and
// counted, never buffered (see output); once the process has exited, its
// output ends when its pipe is empty, whoever else holds the pipe; the stdin
// FIFO is held open for writing by the shim so a detaching client does not
// end the process's stdin, and only CloseStdin (the task API's CloseIO) gives
// up that hold.
//
// stdio imports no project package but procfs (a leaf); it knows nothing of
// processes.
package stdio
