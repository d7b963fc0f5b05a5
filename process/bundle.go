package process

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// process owns the files the shim keeps in a container's bundle, next to
// containerd's config.json and rootfs: the runtime's pid files and log
// (init.pid, log.json), the runtime config (leanshim-runtime.json), the
// init's exit (exit.json) and the shim's socket address (address).

// addressFile holds the shim's socket address.
const addressFile = "address"

// WriteAddress records the shim's socket address in bundle, exactly and
// without a newline: containerd 1.6 reads it verbatim when it reconnects,
// and the shim's delete action reads it back with ReadAddress.
func WriteAddress(bundle, address string) error {
	if err := writeBundleFile(bundle, addressFile, []byte(address), 0o666); err != nil {
		return fmt.Errorf("write address: %w", err)
	}
	return nil
}

// ReadAddress returns the address WriteAddress recorded in bundle.
func ReadAddress(bundle string) (string, error) {
	b, err := os.ReadFile(filepath.Join(bundle, addressFile))
	return string(b), err
}

// writeBundleFile replaces bundle/name with b: it writes a temporary file
// (.name) and renames it over name, so a reader, even after a crash, sees
// the old content or the new, never a part of it (rename(2)).
func writeBundleFile(bundle, name string, b []byte, perm os.FileMode) error {
	tmp := filepath.Join(bundle, "."+name)
	if err := os.WriteFile(tmp, b, perm); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(bundle, name))
}

// readPidFile reads a pid file the runtime wrote (--pid-file): a positive
// decimal pid, maybe with surrounding white space.
func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q", path, b)
	}
	return pid, nil
}
