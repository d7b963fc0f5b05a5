package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestV1Checkpoint checkpoints a container of containerd 1.6's v1 runtime
// with `ctr task checkpoint`, which sends containerd.linux.runc.
// CheckpointOptions. CRIU cannot run here, so the runtime is the fake of
// checkpoint_test.go: it fails as CRIU does. What is checked is the shim's
// part: the options are understood, runc is asked to checkpoint with CRIU's
// work path in the shim's -workdir (as containerd-shim does; a v1 bundle
// has no work dir of its own), the error names the kept CRIU log, and the
// container keeps running.
func TestV1Checkpoint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-criu-runc")
	if err := os.WriteFile(fake, []byte(fakeCRIURuntime), 0o755); err != nil {
		t.Fatal(err)
	}
	argvLog := filepath.Join(dir, "argv")
	rt := filepath.Join(dir, "runtime")
	wrapper := fmt.Sprintf("#!/bin/sh\nARGV_LOG=%s exec %s \"$@\"\n", argvLog, fake)
	if err := os.WriteFile(rt, []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	fl := v1Flavor(t)
	shimConfig := fl.config("")
	fl.config = func(string) string {
		return strings.Replace(shimConfig, `runtime = "runc"`, fmt.Sprintf("runtime = %q", rt), 1)
	}
	d := startContainerd(t, withFlavor(fl))

	id := d.newID("v1ckpt")
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	images := filepath.Join(dir, "images")
	r := d.ctr(t, "task", "checkpoint", "--image-path", images, id)
	workdir := d.workDir(id)
	// containerd-shim words it "<runtime> did not terminate successfully:
	// ... path= <log>"; leanshim, like the v2 runc shim, with the runtime's
	// own message from log.json. Both name the kept CRIU log.
	dumpLog := "path= " + filepath.Join(d.bundleDir(id), "criu-dump.log")
	if r.code == 0 || !strings.Contains(r.stderr, dumpLog) {
		t.Errorf("ctr task checkpoint with a CRIU that fails: want an error naming %q; got %v", dumpLog, r)
	}
	if suite.runtime == defaultRuntime && !strings.Contains(r.stderr, "criu failed: type NOTIFY errno 0") {
		t.Errorf("ctr task checkpoint: want the runtime's message; got %v", r)
	}
	argv := mustRead(t, argvLog)
	var ckpt string
	for _, line := range strings.Split(argv, "\n") {
		if strings.Contains(line, "checkpoint ") {
			ckpt = line
		}
	}
	want := "checkpoint --image-path " + images + " --work-path " + workdir
	if !strings.Contains(ckpt, want) || !strings.Contains(ckpt, "--leave-running") {
		t.Errorf("runc checkpoint argv %q, want %q and --leave-running", ckpt, want)
	}
	if _, status, ok := taskStatus(t, d, id); !ok || status != "RUNNING" {
		t.Errorf("after a failed checkpoint the task is %q (listed %v), want RUNNING", status, ok)
	}
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitTaskStatus(t, d, id, "STOPPED")
	d.mustCtr(t, "task", "rm", id)
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}
