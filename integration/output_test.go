package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// hashWriter hashes and counts what is written to it.
type hashWriter struct {
	h hash.Hash
	n int64
}

func newHashWriter() *hashWriter { return &hashWriter{h: sha256.New()} }

func (w *hashWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return w.h.Write(p)
}

func (w *hashWriter) sum() string { return hex.EncodeToString(w.h.Sum(nil)) }

// TestLargeOutputIntact: a container writes 64 MiB of random bytes to stdout
// and, at the same time, another 64 MiB to stderr. Each stream is also teed
// into sha256sum inside the container, so the digests of what the container
// wrote are known; what ctr delivers must hash the same. (busybox tee writes
// 1 KiB at a time; the cat behind it writes what has piled up, as most
// programs do.)
func TestLargeOutputIntact(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	d := sharedDaemon(t)
	id := d.newID("bigout")

	// The rootfs is shared by every container: files go under /tmp/<id>.*.
	tmp := filepath.Join(suite.rootfs, "tmp")
	t.Cleanup(func() {
		for _, s := range []string{"o", "e", "osum", "esum"} {
			_ = os.Remove(filepath.Join(tmp, id+"."+s))
		}
	})
	script := fmt.Sprintf(`cd /tmp && mkfifo %[1]s.o %[1]s.e || exit 1
sha256sum < %[1]s.o > %[1]s.osum &
sha256sum < %[1]s.e > %[1]s.esum &
head -c %[2]d /dev/urandom | tee %[1]s.o | cat &
head -c %[2]d /dev/urandom | tee %[1]s.e | cat >&2 &
wait`, id, size)

	out, errw := newHashWriter(), newHashWriter()
	ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.flavor.ctr, d.ctrArgs(d.runArgs([]string{"--rm"}, id, "/bin/sh", "-c", script))...)
	cmd.Stdout, cmd.Stderr = out, errw
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("ctr run: %v (stdout %d bytes, stderr %d bytes)", err, out.n, errw.n)
	}
	t.Logf("2 × %d MiB through ctr run in %s: %.0f MiB/s end to end (container start, urandom and sha256sum included)",
		size>>20, elapsed.Round(time.Millisecond), float64(2*size)/(1<<20)/elapsed.Seconds())

	for _, s := range []struct {
		name string
		got  *hashWriter
		file string
	}{{"stdout", out, id + ".osum"}, {"stderr", errw, id + ".esum"}} {
		b, err := os.ReadFile(filepath.Join(tmp, s.file))
		if err != nil {
			t.Fatalf("%s: the container's digest: %v", s.name, err)
		}
		want := strings.TrimSuffix(string(b), "  -\n")
		if s.got.n != size || s.got.sum() != want {
			t.Errorf("%s: the container wrote %d bytes with sha256 %s; ctr delivered %d bytes with sha256 %s",
				s.name, size, want, s.got.n, s.got.sum())
		}
	}
	assertNoLeftovers(t, d, id)
}

// TestLastPartialLineDelivered: a container that writes a last line without
// a newline to stdout and to stderr and exits at once must have both
// delivered in full, every time: the shim may close the FIFOs only after it
// has drained the process's pipes.
//
// containerd's Debian 1.6.20 shim (LEANSHIM_TEST_RUNTIME=io.containerd.runc.v2)
// fails this now and then under load, with an empty stdout: it waits at most
// 2 s for its copiers before closing the FIFOs at Delete (PROTOCOL.md §6.3;
// containerd 2.x waits 10 s, #12364), the loss ENVIRONMENT.md reports for
// concurrent execs.
func TestLastPartialLineDelivered(t *testing.T) {
	t.Parallel()
	const runs, parallel = 100, 8
	d := sharedDaemon(t)

	ids := make([]string, runs)
	results := make([]cmdResult, runs)
	sem := make(chan struct{}, parallel)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range runs {
		ids[i] = d.newID("tail")
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			// printf is a shell builtin: the container exits right after it.
			results[i] = d.run(t, []string{"--rm"}, ids[i], "/bin/sh", "-c", "printf 'no newline'; printf 'err tail' >&2")
		})
	}
	wg.Wait()
	t.Logf("%d ctr run --rm, %d at a time, took %s", runs, parallel, time.Since(start).Round(time.Millisecond))

	for i, r := range results {
		if r.code != 0 || r.stdout != "no newline" || r.stderr != "err tail" {
			t.Errorf("run %d (%s): want exit 0, stdout %q, stderr %q; got %v", i, ids[i], "no newline", "err tail", r)
		}
	}
	assertNoLeftovers(t, d, ids...)
}
