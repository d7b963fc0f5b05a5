package integration

import (
	"os"
	"syscall"
	"testing"
)

// TestV1ShimSIGTERM checks what containerd-shim does on SIGTERM, under
// containerd 1.6's v1 runtime: the shim itself kills and deletes its
// container, then exits. containerd is down meanwhile, so nobody else can
// have done it; started again, containerd finds the shim gone and cleans up
// the task, and nothing is left once the container is removed.
func TestV1ShimSIGTERM(t *testing.T) {
	t.Parallel()
	d := startContainerd(t, withFlavor(v1Flavor(t)), withSubreaper())
	id := d.newID("term")
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	pid := waitTaskStatus(t, d, id, "RUNNING")
	shim := parentPid(pid)
	if shim <= 1 || flagValue(readArgv(shim), "workdir") != d.workDir(id) {
		t.Fatalf("parent of %d is %d (%s), not the v1 shim of %s", pid, shim, cmdline(shim), id)
	}

	d.kill9(t)
	if err := syscall.Kill(shim, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !poll(taskStateTimeout, func() bool { return syscall.Kill(shim, 0) != nil }) {
		t.Fatalf("shim %d still running %s after SIGTERM", shim, taskStateTimeout)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("container process %d survived its shim's SIGTERM", pid)
	}
	if _, err := os.Stat(d.runcStateDir(id)); !os.IsNotExist(err) {
		t.Errorf("runc state of %s left by the shim's SIGTERM: %v", id, err)
	}

	d.restart(t)
	if !poll(taskStateTimeout, func() bool { _, _, ok := taskStatus(t, d, id); return !ok }) {
		t.Errorf("ctr task ls still lists %s after its shim exited", id)
	}
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}
