package process

import (
	"os"
	"path/filepath"
	"testing"
)

// TestAddressFile checks the address file containerd 1.6 reads verbatim:
// no newline, no temporary file left behind, and a rewrite replaces it.
func TestAddressFile(t *testing.T) {
	dir := t.TempDir()
	for _, a := range []string{"unix:///run/a.sock", "unix:///run/b.sock"} {
		if err := WriteAddress(dir, a); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadAddress(dir); err != nil || got != a {
			t.Fatalf("ReadAddress = %q, %v; want %q", got, err, a)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".address")); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

func TestReadPidFile(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]int{"1234": 1234, " 42\n": 42, "": 0, "0": 0, "-3": 0, "x": 0} {
		p := filepath.Join(dir, "pid")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		pid, err := readPidFile(p)
		if pid != want || (err == nil) != (want > 0) {
			t.Errorf("readPidFile(%q) = %d, %v; want %d", content, pid, err, want)
		}
	}
}
