// Package procfs reads the lines of /proc the shim parses (proc(5)). It owns
// only the parsing, so that the reaper (its own thread count) and stdio (a
// logger's exit) read /proc/PID/stat the same way.
//
// procfs imports no project package: it is a leaf below reaper and stdio,
// which may import nothing else of the project.
package procfs
