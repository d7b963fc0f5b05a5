package process

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// exitFile is where an init's exit is recorded in its bundle, with the name
// and JSON shape containerd 2.x's runc shim uses (go-runc's Exit), so that
// the shim's delete action can report the real exit of a container whose
// shim died after it (PROTOCOL.md §1.11).
const exitFile = "exit.json"

type exitRecord struct {
	Timestamp time.Time `json:"timestamp"`
	Pid       int       `json:"pid"`
	Status    int       `json:"status"`
}

// saveExit records e in bundle, atomically (writeBundleFile).
func saveExit(bundle string, e Exit) error {
	b, err := json.Marshal(exitRecord{Timestamp: e.At, Pid: e.Pid, Status: e.Status})
	if err != nil {
		return err
	}
	if err := writeBundleFile(bundle, exitFile, b, 0o600); err != nil {
		return fmt.Errorf("record exit: %w", err)
	}
	return nil
}

// errNoExit is returned by loadExit when the bundle holds no valid exit.
var errNoExit = errors.New("no recorded exit")

// loadExit returns the init exit recorded in bundle, or an error wrapping
// errNoExit (and the cause) when there is none or it is not valid.
func loadExit(bundle string) (Exit, error) {
	b, err := os.ReadFile(filepath.Join(bundle, exitFile))
	if err != nil {
		return Exit{}, fmt.Errorf("%w: %w", errNoExit, err)
	}
	var r exitRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return Exit{}, fmt.Errorf("%w: parse %s: %w", errNoExit, exitFile, err)
	}
	if r.Pid <= 0 || r.Status < 0 || r.Timestamp.IsZero() {
		return Exit{}, fmt.Errorf("%w: invalid %s %s", errNoExit, exitFile, b)
	}
	return Exit{Pid: r.Pid, Status: r.Status, At: r.Timestamp}, nil
}
