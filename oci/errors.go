package oci

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
// "error" line of the runtime's JSON log, as containerd's runc shim does,
// falling back to the captured output.
func runtimeError(logPath string, output []byte, exit *ExitError) error {
	msg := lastLogError(logPath)
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

// lastLogError returns the msg of the last line of level "error" in a runtime
// JSON log, or "" when there is none or the log cannot be read.
func lastLogError(path string) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var last string
	s := bufio.NewScanner(bytes.NewReader(b))
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
