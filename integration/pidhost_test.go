package integration

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestInitExitKillsLeftoversInSharedPidNamespace: a container in a pid
// namespace it does not own (here the test's own, as with hostPID) loses
// nothing else when its init dies: the kernel kills no one. The shim kills
// the rest of the container before it reports the init's exit, as
// containerd's runc shim does (containerd's TestContainerKillInitPidHost):
// by the time the task is STOPPED, the init's orphan is dead (issue 13,
// item 4).
func TestInitExitKillsLeftoversInSharedPidNamespace(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("pidhost")
	pidns := fmt.Sprintf("pid:/proc/%d/ns/pid", os.Getpid())
	if r := d.run(t, []string{"-d", "--with-ns", pidns}, id, "/bin/sh", "-c", "/bin/sleep 1001 & exec /bin/sleep 1000"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	init := waitTaskStatus(t, d, id, "RUNNING")
	orphan := 0
	if !poll(taskStateTimeout, func() bool {
		for _, p := range taskPids(t, d, id) {
			if p != init && slices.Equal(readArgv(p), []string{"/bin/sleep", "1001"}) {
				orphan = p
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the init's background sleep never showed in ctr task ps %s", id)
	}
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitTaskStatus(t, d, id, "STOPPED")
	// SIGKILLed before the exit was reported; give the kernel a moment to
	// deliver it (it cannot be caught).
	if !poll(taskStateTimeout, func() bool { return deadOrZombie(orphan) }) {
		t.Errorf("the init's orphan %d (%s) still runs after the task is STOPPED", orphan, cmdline(orphan))
	}
	d.mustCtr(t, "task", "rm", id)
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}

// deadOrZombie reports whether pid is gone or has exited (state Z, proc(5)).
func deadOrZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}
