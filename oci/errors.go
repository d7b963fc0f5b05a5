package oci

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Sentinels for the classes of runtime failure the shim must tell apart.
var (
	// ErrNotExist: the runtime has no container of that id.
	ErrNotExist = errors.New("container does not exist")
	// ErrNotRunning: the process to signal has already finished.
	ErrNotRunning = errors.New("process already finished")
)

// ExitError is a runtime invocation that exited non-zero.
type ExitError struct {
	Status int
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Status) }

// Error is a failed runtime invocation. Its text is the runtime's own message
// (from log.json, else its output, else the exit status); errors.Is finds the
// class sentinel (if any) and errors.As the ExitError.
type Error struct {
	Msg   string
	class error // ErrNotExist, ErrNotRunning or nil
	exit  *ExitError
}

func (e *Error) Error() string { return e.Msg }

// Unwrap exposes the class and the exit error.
func (e *Error) Unwrap() []error {
	if e.class != nil {
		return []error{e.class, e.exit}
	}
	return []error{e.exit}
}

// runtimeError builds the error of a failed invocation. It takes the last
// "error" line that the invocation appended to the runtime's JSON log (from
// logOffset on), as containerd's runc shim does, falling back to the
// captured output.
func runtimeError(logPath string, logOffset int64, output []byte, exit *ExitError) error {
	msg := lastLogError(logPath, logOffset)
	if msg == "" {
		msg = strings.TrimSpace(string(output))
	}
	if msg == "" {
		msg = exit.Error()
	}
	return &Error{Msg: msg, class: classify(msg), exit: exit}
}

// classify maps a runtime message to a class sentinel. It is the only place
// that matches runtime output by substring (runc and crun wordings).
func classify(msg string) error {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "container not running"),
		strings.Contains(m, "process already finished"),
		strings.Contains(m, "no such process"):
		return ErrNotRunning
	case strings.Contains(m, "does not exist"), // runc
		strings.Contains(m, "container not found"): // crun
		return ErrNotExist
	}
	return nil
}

// logSize returns the size of the runtime's JSON log before an invocation:
// where what it appends begins. A log that does not exist yet starts at 0.
func logSize(path string) int64 {
	if path == "" {
		return 0
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// lastLogError returns the msg of the last line of level "error" in a runtime
// JSON log from offset on, or "" when there is none or the log cannot be
// read. The log is shared by every invocation for the container, so what
// lies before offset is an older command's. A log shorter than offset was
// truncated meanwhile (a runtime may rewrite it): then all of it is read.
func lastLogError(path string, offset int64) string {
	if path == "" {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close() // read-only
	if fi, err := f.Stat(); err != nil || fi.Size() < offset {
		offset = 0
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	var last string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 0, 4096), 1<<20)
	for s.Scan() {
		var l struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(s.Bytes(), &l) == nil && l.Level == "error" {
			last = l.Msg
		}
	}
	return last
}
