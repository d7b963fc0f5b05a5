package integration

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const taskStateTimeout = 15 * time.Second

func TestRunEchoPrintsHello(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("echo")

	r := d.run(t, []string{"--rm"}, id, "/bin/echo", "hello")
	if r.code != 0 || r.stdout != "hello\n" || r.stderr != "" {
		t.Errorf("want exit 0, stdout %q and no stderr; got %v", "hello\n", r)
	}
	assertNoLeftovers(t, d, id)
}

func TestRunExitsWithContainerExitCode(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("exit7")

	r := d.run(t, []string{"--rm"}, id, "/bin/sh", "-c", "exit 7")
	if r.code != 7 {
		t.Errorf("want ctr run to exit 7; got %v", r)
	}
	assertNoLeftovers(t, d, id)
}

// TestSIGTERMKilledTaskReports143 needs a pid 1 that SIGTERM can kill. The
// kernel drops every signal without a handler sent to a pid namespace's init,
// except SIGKILL/SIGSTOP from an ancestor namespace, so a container's own
// pid 1 survives `ctr task kill -s SIGTERM` and even `--all`. Joining the
// test's pid namespace (--with-ns pid:...) makes sleep an ordinary process
// that dies of SIGTERM's default action, as seen by its real parent: the shim.
func TestSIGTERMKilledTaskReports143(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("sigterm")

	pidns := fmt.Sprintf("pid:/proc/%d/ns/pid", os.Getpid())
	run := d.startCtr(t, d.runArgs([]string{"--rm", "--with-ns", pidns}, id, "/bin/sleep", "1000")...)
	waitTaskStatus(t, d, id, "RUNNING")
	d.mustCtr(t, "task", "kill", "-s", "SIGTERM", id)

	if code := run.wait(taskStateTimeout); code != 143 {
		t.Errorf("want ctr run to exit 143 (128+SIGTERM); got %d, output %q", code, run.out.String())
	}
	assertNoLeftovers(t, d, id)
}

func TestDetachedTaskLifecycle(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("sleeper")

	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	pid := waitTaskStatus(t, d, id, "RUNNING")

	t.Run("task ps lists the init pid", func(t *testing.T) {
		if pids := taskPids(t, d, id); !slices.Equal(pids, []int{pid}) {
			t.Errorf("ctr task ps %s: want pids [%d] as in ctr task ls; got %v", id, pid, pids)
		}
	})
	t.Run("pid is the container's sleep", func(t *testing.T) {
		// RUNNING may be reported while runc init is still execing sleep.
		want := []string{"/bin/sleep", "1000"}
		var got []string
		if !poll(taskStateTimeout, func() bool {
			got = readArgv(pid)
			return slices.Equal(got, want)
		}) {
			t.Errorf("/proc/%d/cmdline: want %q; got %q", pid, want, got)
		}
	})
	t.Run("one shim process is the parent", func(t *testing.T) {
		shims := shimProcesses(d.ns)[id]
		if len(shims) != 1 {
			t.Fatalf("want exactly one %s process with -namespace %s -id %s; got %v", suite.shimName, d.ns, id, shims)
		}
		if ppid := parentPid(pid); ppid != shims[0] {
			t.Errorf("parent of container pid %d: want shim %d; got %d (%s)", pid, shims[0], ppid, cmdline(ppid))
		}
	})
	t.Run("leftover checker sees the live task", func(t *testing.T) {
		// Proves assertNoLeftovers cannot pass vacuously: each kind of
		// trace it looks for exists while the task runs.
		found := strings.Join(leftovers(d, id), "\n")
		for _, kind := range []string{"shim process", "shim socket", "bundle dir", "work dir", "runc state dir", "cgroup"} {
			if !strings.Contains(found, ": "+kind+" ") {
				t.Errorf("running task: leftovers() reports no %s; it reports:\n%s", kind, found)
			}
		}
	})

	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitTaskStatus(t, d, id, "STOPPED")
	r := d.ctr(t, "task", "rm", id)
	if r.code != 0 || !strings.Contains(r.stderr, "exit code 137") {
		t.Errorf("task rm: want exit 0 and ctr's warning about exit code 137 (128+SIGKILL); got %v", r)
	}
	d.mustCtr(t, "container", "rm", id)
	if _, _, ok := taskStatus(t, d, id); ok {
		t.Errorf("ctr task ls still lists %s after task rm", id)
	}
	assertNoLeftovers(t, d, id)
}

func TestBadCommandFailsCleanly(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("badcmd")

	r := d.run(t, nil, id, "/bin/does-not-exist")
	// The first part is the runc shim's wrapping, the second is runc's own
	// log.json message, which a shim must pass through.
	for _, want := range []string{
		"OCI runtime create failed",
		`exec: "/bin/does-not-exist": stat /bin/does-not-exist: no such file or directory`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("ctr run stderr: want %q in it; got %v", want, r)
		}
	}
	if r.code == 0 {
		t.Errorf("ctr run: want failure; got %v", r)
	}
	if _, _, ok := taskStatus(t, d, id); ok {
		t.Errorf("ctr task ls lists %s after its create failed", id)
	}
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}

// taskStatus returns the PID and STATUS columns of `ctr task ls` for id.
func taskStatus(tb testing.TB, d *daemon, id string) (pid int, status string, ok bool) {
	tb.Helper()
	for _, line := range strings.Split(d.mustCtr(tb, "task", "ls"), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				tb.Fatalf("ctr task ls: bad pid in %q", line)
			}
			return pid, f[2], true
		}
	}
	return 0, "", false
}

// waitTaskStatus waits until `ctr task ls` shows id in status and returns its pid.
func waitTaskStatus(tb testing.TB, d *daemon, id, status string) int {
	tb.Helper()
	var pid int
	var got string
	if !poll(taskStateTimeout, func() bool {
		pid, got, _ = taskStatus(tb, d, id)
		return got == status
	}) {
		tb.Fatalf("task %s: want status %s within %s; last seen %q", id, status, taskStateTimeout, got)
	}
	return pid
}

// taskPids returns the PID column of `ctr task ps id`.
func taskPids(tb testing.TB, d *daemon, id string) []int {
	tb.Helper()
	var pids []int
	for _, line := range strings.Split(d.mustCtr(tb, "task", "ps", id), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 {
			pid, err := strconv.Atoi(f[0])
			if err != nil {
				tb.Fatalf("ctr task ps: bad pid in %q", line)
			}
			pids = append(pids, pid)
		}
	}
	return pids
}
