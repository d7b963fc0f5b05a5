package reaper

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"
)

func TestRunCmd(t *testing.T) {
	r := newRunning(t)
	big := bytes.Repeat([]byte("x"), 200<<10) // more than a pipe holds: stdin is a memfd
	out, e, err := r.RunCmd(context.Background(), exec.Command("/bin/sh", "-c", "wc -c; echo err >&2; exit 4"), big, true)
	if err != nil || e.Status != 4 {
		t.Fatalf("status %d, err %v", e.Status, err)
	}
	if got := string(bytes.Fields(out)[0]); got != "204800" || !bytes.Contains(out, []byte("err")) {
		t.Fatalf("output %q", out)
	}

	// A grandchild holding the output pipe must not outlast the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = r.RunCmd(ctx, exec.Command("/bin/sh", "-c", "sleep 20 & exec sleep 1000"), nil, true)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}
