package integration

import (
	"bytes"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The logger tests' container writes a line to each stream and a last
// partial line to stdout.
var logArgv = []string{"/bin/sh", "-c", "echo out; echo err >&2; printf tail"}

func TestLogURIFile(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("logfile")
	log := filepath.Join(t.TempDir(), "x.log")

	if r := d.run(t, []string{"-d", "--log-uri", "file://" + log}, id, logArgv...); r.code != 0 || r.stdout != "" {
		t.Fatalf("run -d --log-uri file://…: want exit 0 and nothing on ctr's stdout; got %v", r)
	}
	waitTaskStatus(t, d, id, "STOPPED")
	// Both streams go to the one file; only each stream's own order is
	// defined (containerd's shim copies them in two goroutines).
	var got string
	ok := poll(taskStateTimeout, func() bool {
		b, _ := os.ReadFile(log)
		got = string(b)
		return strings.Contains(got, "err\n") && strings.Replace(got, "err\n", "", 1) == "out\ntail"
	})
	if !ok {
		t.Errorf("%s: want \"out\\ntail\" with \"err\\n\" somewhere in it; got %q", log, got)
	}
	d.mustCtr(t, "task", "rm", id)
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}

// TestLogURIBinary runs a container whose output goes to testlogger (built
// from ./testlogger) through a binary:// log URI: a logger that stops at the
// streams' EOF, and one that stops only when the shim sends SIGTERM (which
// it does when the task is deleted).
func TestLogURIBinary(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	logger := buildTestLogger(t)
	for _, tc := range []struct {
		name, query string
	}{
		{"stops at EOF", ""},
		{"stops on SIGTERM", "&mode=sigterm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			runBinaryLogged(t, d, logger, dir, "binary://"+logger+"?dir="+url.QueryEscape(dir)+tc.query)
			wantArgs := "dir\n" + dir + "\n"
			if tc.query != "" {
				wantArgs += "mode\nsigterm\n"
				if _, err := os.Stat(filepath.Join(dir, "sigterm")); err != nil {
					t.Errorf("the logger got no SIGTERM: %v", err)
				}
			}
			if got := mustRead(t, filepath.Join(dir, "args")); got != wantArgs {
				t.Errorf("logger's arguments: want %q (the URI's query); got %q", wantArgs, got)
			}
		})
	}
}

// runBinaryLogged runs a container logged through uri by testlogger writing
// to dir, deletes it and checks what the logger got.
func runBinaryLogged(t *testing.T, d *daemon, logger, dir, uri string) {
	t.Helper()
	id := d.newID("logbin")
	// 4 MiB of a known pattern between the short lines, so a logger
	// stopped too early or a lost tail would show.
	const bulk = 4 << 20
	argv := []string{"/bin/sh", "-c", "echo out; yes 0123456789abcdef | head -c 4194304; echo err >&2; printf tail"}
	if r := d.run(t, []string{"-d", "--log-uri", uri}, id, argv...); r.code != 0 || r.stdout != "" {
		t.Fatalf("run -d --log-uri %s: want exit 0 and nothing on ctr's stdout; got %v", uri, r)
	}
	waitTaskStatus(t, d, id, "STOPPED")
	// containerd's 1.6 shim holds the pipes' write ends until the task is
	// deleted, so its logger sees EOF only then; leanshim's sees it when
	// the container exits. Deleting first suits both.
	start := time.Now()
	d.mustCtr(t, "task", "rm", id)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("task rm took %s: a logger that exits on time must not hold up Delete", took)
	}
	done := filepath.Join(dir, "done")
	if !poll(taskStateTimeout, func() bool { _, err := os.Stat(done); return err == nil }) {
		t.Fatalf("testlogger did not finish within %s (no %s); its files: %v", taskStateTimeout, done, listDir(dir))
	}

	pattern := bytes.Repeat([]byte("0123456789abcdef\n"), bulk/17+1)[:bulk]
	wantOut := append(append([]byte("out\n"), pattern...), "tail"...)
	if got, _ := os.ReadFile(filepath.Join(dir, "stdout")); !bytes.Equal(got, wantOut) {
		t.Errorf("logger's stdout: want %d bytes (out, 4 MiB pattern, tail); got %d bytes, ending %q", len(wantOut), len(got), tail(got, 40))
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "stderr")); string(got) != "err\n" {
		t.Errorf("logger's stderr: want %q; got %q", "err\n", got)
	}
	// containerd gives the logger these two variables and nothing else.
	if got, want := mustRead(t, filepath.Join(dir, "env")), "CONTAINER_ID="+id+"\nCONTAINER_NAMESPACE="+d.ns+"\n"; got != want {
		t.Errorf("logger's environment: want %q; got %q", want, got)
	}
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
	var left []int
	if !poll(leftoverTimeout, func() bool { left = loggerProcesses(logger, dir); return len(left) == 0 }) {
		t.Errorf("testlogger still running after the task was deleted: pids %v", left)
	}
}

// TestLogURIBinaryMissing: a logger that cannot start fails the create with
// an error naming it, and leaves nothing behind.
func TestLogURIBinaryMissing(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("lognone")
	missing := filepath.Join(t.TempDir(), "no-such-logger")

	r := d.run(t, []string{"-d", "--log-uri", "binary://" + missing}, id, "/bin/true")
	t.Logf("refused as: %s", strings.TrimSpace(r.stderr))
	if r.code == 0 || r.err != nil || !strings.Contains(r.stderr, missing) {
		t.Errorf("run with a missing logger: want a prompt failure naming %s; got %v", missing, r)
	}
	if _, _, ok := taskStatus(t, d, id); ok {
		t.Errorf("ctr task ls lists %s after its create failed", id)
	}
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}

var testLogger struct {
	once sync.Once
	path string
	err  error
}

// buildTestLogger builds ./testlogger once per test binary, into the suite's
// temp dir, and returns its absolute path.
func buildTestLogger(tb testing.TB) string {
	tb.Helper()
	testLogger.once.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		testLogger.path = filepath.Join(suite.tmp, "testlogger")
		cmd := exec.Command(gobin, "build", "-o", testLogger.path, "./testlogger")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			testLogger.err = err
			testLogger.path = string(out)
		}
	})
	if testLogger.err != nil {
		tb.Fatalf("go build ./testlogger: %v\n%s", testLogger.err, testLogger.path)
	}
	return testLogger.path
}

// loggerProcesses lists live processes running logger for dir.
func loggerProcesses(logger, dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if argv := readArgv(pid); len(argv) > 0 && argv[0] == logger && slices.Contains(argv, dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func listDir(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
