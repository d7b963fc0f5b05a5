package leakcheck

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCounterSeesAnOpenFD(t *testing.T) {
	c := counter{}
	before := c.fds()
	f, err := os.Create(filepath.Join(t.TempDir(), "leak"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.fds(); got != before+1 {
		t.Errorf("with one more file open: %d fds, want %d", got, before+1)
	}
	kept := counter{keep: func(target string) bool { return target == f.Name() }}
	if got := kept.fds(); got != before {
		t.Errorf("with the open file kept: %d fds, want %d", got, before)
	}
	_ = f.Close() // empty, nothing to flush
}
