package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// sigIgnRuntime is runc, except that it first appends its SigIgn line
// (proc(5) status) to $SIGIGN_LOG.
const sigIgnRuntime = `#!/bin/sh
grep SigIgn /proc/self/status >> "$SIGIGN_LOG"
exec runc "$@"
`

// TestRuntimeDoesNotInheritIgnoredSIGPIPE: the shim catches SIGPIPE rather
// than ignoring it, because an ignored signal stays ignored through fork and
// exec: every runtime, logger and hook the shim starts, and through crun the
// container's process, would start with SIGPIPE ignored and loop on EPIPE
// instead of dying (issue 13, item 10). The runtime reports its own SigIgn,
// and so does the container's process (runc resets it anyway).
func TestRuntimeDoesNotInheritIgnoredSIGPIPE(t *testing.T) {
	f := newFakeContainerd(t)
	dir := t.TempDir()
	rt := filepath.Join(dir, "sigign-runc")
	if err := os.WriteFile(rt, []byte(sigIgnRuntime), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "sigign")
	t.Setenv("SIGIGN_LOG", log) // inherited by the shim, then by the runtime
	ctx := ctxT(t)
	id := "sigpipe"
	b := f.bundle(t, id, "/bin/grep", "SigIgn", "/proc/self/status")
	out := filepath.Join(dir, "stdout")
	s := f.startShim(t, id, b)
	if _, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: "file://" + out,
		Options: optionsAny(t, &runcopts.Options{BinaryName: rt})}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	runtimeLines, _ := os.ReadFile(log)
	containerLine, _ := os.ReadFile(out)
	checkSigIgn(t, "runtime", string(runtimeLines))
	checkSigIgn(t, "container process", string(containerLine))
}

// checkSigIgn fails the test if any "SigIgn: <hex>" line in lines has
// SIGPIPE (13) set, or if there is none.
func checkSigIgn(t *testing.T, who, lines string) {
	t.Helper()
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(lines), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || f[0] != "SigIgn:" {
			continue
		}
		n++
		mask, err := strconv.ParseUint(f[1], 16, 64)
		if err != nil {
			t.Fatalf("%s: SigIgn %q: %v", who, f[1], err)
		}
		const sigpipe = 13
		if mask&(1<<(sigpipe-1)) != 0 {
			t.Errorf("%s started with SIGPIPE ignored (SigIgn %s)", who, f[1])
		}
	}
	if n == 0 {
		t.Errorf("%s reported no SigIgn line; got %q", who, lines)
	}
}
