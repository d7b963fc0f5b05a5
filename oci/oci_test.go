package oci

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leanshim/leanshim/reaper"
)

func TestArgs(t *testing.T) {
	tests := []struct {
		name string
		got  []string
		want string
	}{
		{"global minimal", Config{Root: "/r"}.globalArgs("create"), "--root /r"},
		{"global all", Config{Root: "/r", Log: "/b/log.json", SystemdCgroup: true, Debug: true, Criu: "/opt/criu"}.globalArgs("checkpoint"),
			"--root /r --debug --log /b/log.json --log-format json --criu /opt/criu --systemd-cgroup"},
		{"criu only for restore", Config{Root: "/r", Criu: "/opt/criu"}.globalArgs("restore"), "--root /r --criu /opt/criu"},
		{"no criu for create", Config{Root: "/r", Criu: "/opt/criu"}.globalArgs("create"), "--root /r"},
		{"create", createArgs("c1", CreateOpts{Bundle: "/b", PidFile: "/b/init.pid"}),
			"create --bundle /b --pid-file /b/init.pid c1"},
		{"create all", createArgs("c1", CreateOpts{Bundle: "/b", PidFile: "/p", ConsoleSocket: "/s", NoPivot: true, NoNewKeyring: true}),
			"create --bundle /b --pid-file /p --console-socket /s --no-pivot --no-new-keyring c1"},
		{"exec", execArgs("c1", ExecOpts{ProcessFile: "/t/p.json", PidFile: "/b/e1.pid"}),
			"exec --process /t/p.json --detach --pid-file /b/e1.pid c1"},
		{"exec tty", execArgs("c1", ExecOpts{ProcessFile: "/p", PidFile: "/q", ConsoleSocket: "/s"}),
			"exec --process /p --detach --pid-file /q --console-socket /s c1"},
		{"kill", killArgs("c1", 9, false), "kill c1 9"},
		{"kill all", killArgs("c1", 15, true), "kill --all c1 15"},
		{"delete", deleteArgs("c1", false), "delete c1"},
		{"delete force", deleteArgs("c1", true), "delete --force c1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(tc.got, " "); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		msg  string
		want error
	}{
		{"container not running", ErrNotRunning},
		{"cannot kill container: process already finished", ErrNotRunning},
		{"no such process", ErrNotRunning},
		{`container "c1" does not exist`, ErrNotExist},
		{"container does not exist", ErrNotExist},
		{"error opening file `/run/crun/c1/status`: container not found", ErrNotExist},
		{`exec: "nope": executable file not found in $PATH`, nil},
		{"permission denied", nil},
	}
	for _, tc := range tests {
		if got := classify(tc.msg); !errors.Is(got, tc.want) && got != tc.want {
			t.Errorf("classify(%q) = %v, want %v", tc.msg, got, tc.want)
		}
	}
}

func TestLastLogError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log.json")
	log := `{"level":"info","msg":"starting","time":"x"}
{"level":"error","msg":"first","time":"x"}
not json
{"level":"error","msg":"runc run failed: unable to start container process: exec: \"nope\": executable file not found in $PATH","time":"x"}
{"level":"warning","msg":"late","time":"x"}
`
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	want := `runc run failed: unable to start container process: exec: "nope": executable file not found in $PATH`
	if got := lastLogError(p, 0); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := lastLogError(filepath.Join(t.TempDir(), "missing"), 0); got != "" {
		t.Fatalf("missing log gave %q", got)
	}
	if got := lastLogError(p, int64(strings.Index(log, "not json"))); got != want {
		t.Fatalf("from an offset: got %q, want %q", got, want)
	}
	if got := lastLogError(p, int64(strings.Index(log, `{"level":"warning"`))); got != "" {
		t.Fatalf("after the last error: got %q, want none", got)
	}
	if got := lastLogError(p, int64(len(log)+100)); got != want {
		t.Fatalf("offset past a truncated log: got %q, want %q (all of it)", got, want)
	}
}

// fakeRuntime writes a shell script that plays the runtime binary.
func fakeRuntime(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-runtime")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// testReaper is the one reaper of this test binary: two reapers in one
// process would reap each other's children (wait4(-1)), so every test shares
// it. Its loop runs until the test binary exits.
var testReaper = sync.OnceValue(func() *reaper.Reaper {
	r, err := reaper.New(reaper.Config{})
	if err != nil {
		panic(err)
	}
	go func() { _ = r.Run(context.Background()) }() // lives as long as the test binary
	return r
})

func newReaper(*testing.T) *reaper.Reaper { return testReaper() }

func TestRunFailureCarriesLogMessage(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "log.json")
	bin := fakeRuntime(t, `
# find --log value
while [ $# -gt 0 ]; do
  if [ "$1" = --log ]; then log=$2; fi
  shift
done
echo '{"level":"error","msg":"container \"c1\" does not exist","time":"x"}' >> "$log"
echo "some stderr" >&2
exit 1
`)
	rt := New(Config{Binary: bin, Root: dir, Log: logPath}, newReaper(t))
	err := rt.Kill(context.Background(), "c1", 9, false)
	if err == nil {
		t.Fatal("kill succeeded")
	}
	if !errors.Is(err, ErrNotExist) {
		t.Fatalf("%v is not ErrNotExist", err)
	}
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Status != 1 {
		t.Fatalf("no ExitError with status 1 in %v", err)
	}
	if err.Error() != `container "c1" does not exist` {
		t.Fatalf("message %q", err.Error())
	}
}

// TestRunReadsOnlyItsOwnLogLines: the runtime's log is shared by every
// command for the container; an error an earlier command logged is not this
// command's error (issue 13, item 11).
func TestRunReadsOnlyItsOwnLogLines(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "log.json")
	old := `{"level":"error","msg":"container \"c1\" does not exist","time":"x"}` + "\n"
	if err := os.WriteFile(logPath, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := fakeRuntime(t, `
while [ $# -gt 0 ]; do
  if [ "$1" = --log ]; then log=$2; fi
  shift
done
echo '{"level":"info","msg":"pausing","time":"x"}' >> "$log"
echo "own failure" >&2
exit 1
`)
	rt := New(Config{Binary: bin, Root: dir, Log: logPath}, newReaper(t))
	err := rt.Pause(context.Background(), "c1")
	if err == nil || err.Error() != "own failure" || errors.Is(err, ErrNotExist) {
		t.Fatalf("want this command's own error %q; got %v", "own failure", err)
	}
}

func TestRunMissingBinary(t *testing.T) {
	rt := New(Config{Binary: "/nonexistent/runc", Root: t.TempDir()}, newReaper(t))
	err := rt.Start(context.Background(), "c1")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/runc") {
		t.Fatalf("got %v, want an error naming the binary", err)
	}
}

func TestRunOutputAndArgv(t *testing.T) {
	dir := t.TempDir()
	bin := fakeRuntime(t, `echo "$@" > "`+dir+`/argv"; printf '[1,22,333]\n'`)
	rt := New(Config{Binary: bin, Root: "/r"}, newReaper(t))
	pids, err := rt.Ps(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pids, []int{1, 22, 333}) {
		t.Fatalf("pids %v", pids)
	}
	argv, _ := os.ReadFile(filepath.Join(dir, "argv"))
	if got := strings.TrimSpace(string(argv)); got != "--root /r ps --format json c1" {
		t.Fatalf("argv %q", got)
	}
}

func TestRunStdinAndCancel(t *testing.T) {
	dir := t.TempDir()
	bin := fakeRuntime(t, `cat > "`+dir+`/stdin"`)
	rt := New(Config{Binary: bin, Root: "/r"}, newReaper(t))
	if err := rt.Update(context.Background(), "c1", []byte(`{"cpu":{}}`)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "stdin")); string(b) != `{"cpu":{}}` {
		t.Fatalf("stdin %q", b)
	}

	hang := New(Config{Binary: fakeRuntime(t, "exec sleep 1000"), Root: "/r"}, newReaper(t))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := hang.Start(ctx, "c1")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hanging runtime gave %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}

// TestCancelWithChildHoldingOutput: a runtime whose child inherited its
// output and outlives it must not keep a cancelled call waiting.
func TestCancelWithChildHoldingOutput(t *testing.T) {
	rt := New(Config{Binary: fakeRuntime(t, "sleep 20 & exec sleep 1000"), Root: "/r"}, newReaper(t))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := rt.Ps(ctx, "c1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}
