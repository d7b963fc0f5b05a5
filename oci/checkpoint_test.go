package oci

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckpointRestoreArgs(t *testing.T) {
	tests := []struct {
		name string
		got  []string
		want string
	}{
		{"checkpoint leave running", checkpointArgs("c1", CheckpointOpts{ImagePath: "/img", WorkPath: "/w"}),
			"checkpoint --image-path /img --work-path /w --leave-running c1"},
		{"checkpoint exit", checkpointArgs("c1", CheckpointOpts{ImagePath: "/img", WorkPath: "/w", Exit: true}),
			"checkpoint --image-path /img --work-path /w c1"},
		{"checkpoint all", checkpointArgs("c1", CheckpointOpts{
			ImagePath: "/img", WorkPath: "/w", ParentPath: "/pre", OpenTCP: true, ExternalUnixSockets: true,
			Terminal: true, FileLocks: true, EmptyNamespaces: []string{"network", "ipc"},
		}), "checkpoint --image-path /img --work-path /w --parent-path /pre --tcp-established --ext-unix-sk --shell-job --file-locks --empty-ns network --empty-ns ipc --leave-running c1"},
		// PROTOCOL.md §5: restore --image-path --work-path [--parent-path]
		// --detach --pid-file [--console-socket] [--no-pivot] -no-subreaper --bundle id.
		{"restore", restoreArgs("c1", RestoreOpts{Bundle: "/b", PidFile: "/b/init.pid", ImagePath: "/img", WorkPath: "/b/work"}),
			"restore --image-path /img --work-path /b/work --detach --pid-file /b/init.pid -no-subreaper --bundle /b c1"},
		{"restore all", restoreArgs("c1", RestoreOpts{
			Bundle: "/b", PidFile: "/b/init.pid", ConsoleSocket: "/s", NoPivot: true, ImagePath: "/img", WorkPath: "/w", ParentPath: "/pre",
		}), "restore --image-path /img --work-path /w --parent-path /pre --detach --pid-file /b/init.pid --console-socket /s --no-pivot -no-subreaper --bundle /b c1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(tc.got, " "); got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

// argvScript records the runtime's argv in $dir/argv and sets $log, $work and
// $pidfile from the flags of that name.
func argvScript(dir string) string {
	return `echo "$@" > "` + dir + `/argv"
while [ $# -gt 0 ]; do
  case "$1" in
    --log) log=$2; shift ;;
    --work-path) work=$2; shift ;;
    --pid-file) pidfile=$2; shift ;;
  esac
  shift
done
`
}

func readArgv(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "argv"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestCheckpointFailureKeepsDumpLog plays a runtime whose CRIU fails: the
// error is containerd's "<first line> path= <bundle>/criu-dump.log", the dump
// log is copied there, and the default work directory is removed. (CRIU
// itself cannot run on this machine's kernel: `criu check` fails.)
func TestCheckpointFailureKeepsDumpLog(t *testing.T) {
	bundle := t.TempDir()
	rec := t.TempDir()
	bin := fakeRuntime(t, argvScript(rec)+`
mkdir -p "$work"
echo "Error (criu/cr-dump.c:1234): dump failed" > "$work/dump.log"
printf '%s\n' '{"level":"error","msg":"criu failed: type NOTIFY errno 0\nlog file: '"$work"'/dump.log","time":"x"}' >> "$log"
exit 1
`)
	logPath := filepath.Join(bundle, "log.json")
	rt := New(Config{Binary: bin, Root: "/r", Log: logPath}, newReaper(t))
	err := rt.Checkpoint(context.Background(), "c1", CheckpointOpts{Bundle: bundle, ImagePath: "/img", Exit: true})

	dumpLog := filepath.Join(bundle, "criu-dump.log")
	if want := "criu failed: type NOTIFY errno 0 path= " + dumpLog; err == nil || err.Error() != want {
		t.Fatalf("error %v\nwant %s", err, want)
	}
	var ce *CheckpointError
	var ee *ExitError
	if !errors.As(err, &ce) || ce.DumpLog != dumpLog || !errors.As(err, &ee) || ee.Status != 1 {
		t.Fatalf("%#v is not a CheckpointError over an ExitError", err)
	}
	if b, _ := os.ReadFile(dumpLog); string(b) != "Error (criu/cr-dump.c:1234): dump failed\n" {
		t.Fatalf("criu-dump.log holds %q", b)
	}
	work := filepath.Join(bundle, "work", "criu-work")
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Fatalf("default work dir left behind: %v", err)
	}
	want := "--root /r --log " + logPath + " --log-format json checkpoint --image-path /img --work-path " + work + " c1"
	if got := readArgv(t, rec); got != want {
		t.Fatalf("argv %q\nwant %q", got, want)
	}
}

// TestCheckpointNoDumpLog: CRIU failed before writing a log; the error still
// names the path, and says why there is nothing there.
func TestCheckpointNoDumpLog(t *testing.T) {
	bundle := t.TempDir()
	rt := New(Config{Binary: fakeRuntime(t, "echo 'criu not found' >&2; exit 2"), Root: "/r"}, newReaper(t))
	err := rt.Checkpoint(context.Background(), "c1", CheckpointOpts{Bundle: bundle, ImagePath: "/img"})
	if want := "criu not found path= " + filepath.Join(bundle, "criu-dump.log"); err == nil || err.Error() != want {
		t.Fatalf("error %v\nwant %s", err, want)
	}
	if !strings.Contains(errors.Unwrap(err).Error(), "keep criu dump log") {
		t.Fatalf("cause %q does not explain the missing log", errors.Unwrap(err))
	}
}

// TestCheckpointWorkPathKept: a work path the caller chose is kept.
func TestCheckpointWorkPathKept(t *testing.T) {
	bundle, rec, work := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "criu")
	bin := fakeRuntime(t, argvScript(rec)+`mkdir -p "$work" && echo ok > "$work/stats-dump"`)
	rt := New(Config{Binary: bin, Root: "/r"}, newReaper(t))
	if err := rt.Checkpoint(context.Background(), "c1", CheckpointOpts{Bundle: bundle, ImagePath: "/img", WorkPath: work, FileLocks: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(work, "stats-dump")); err != nil {
		t.Fatalf("work path not kept: %v", err)
	}
	if got, want := readArgv(t, rec), "--root /r checkpoint --image-path /img --work-path "+work+" --file-locks --leave-running c1"; got != want {
		t.Fatalf("argv %q\nwant %q", got, want)
	}
}

// TestRestore plays "restore --detach": the fake writes the pid file and a
// line on the stdout it was given, as the restored init would.
func TestRestore(t *testing.T) {
	bundle, rec := t.TempDir(), t.TempDir()
	bin := fakeRuntime(t, argvScript(rec)+`echo 4242 > "$pidfile"; echo restored`)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rt := New(Config{Binary: bin, Root: "/r"}, newReaper(t))
	pidFile := filepath.Join(bundle, "init.pid")
	err = rt.Restore(context.Background(), "c1", RestoreOpts{Bundle: bundle, PidFile: pidFile, ImagePath: "/img", Stdio: Stdio{Stdout: w}})
	_ = w.Close() // the runtime has exited; EOF for the read below
	if err != nil {
		t.Fatal(err)
	}
	want := "--root /r restore --image-path /img --work-path " + filepath.Join(bundle, "work") +
		" --detach --pid-file " + pidFile + " -no-subreaper --bundle " + bundle + " c1"
	if got := readArgv(t, rec); got != want {
		t.Fatalf("argv %q\nwant %q", got, want)
	}
	if b, _ := os.ReadFile(pidFile); strings.TrimSpace(string(b)) != "4242" {
		t.Fatalf("pid file %q", b)
	}
	out := make([]byte, 64)
	n, _ := r.Read(out)
	if string(out[:n]) != "restored\n" {
		t.Fatalf("stdout %q", out[:n])
	}
}

func TestRestoreFailure(t *testing.T) {
	bundle := t.TempDir()
	logPath := filepath.Join(bundle, "log.json")
	bin := fakeRuntime(t, argvScript(t.TempDir())+`echo '{"level":"error","msg":"criu failed: type RESTORE errno 0","time":"x"}' >> "$log"; exit 1`)
	rt := New(Config{Binary: bin, Root: "/r", Log: logPath}, newReaper(t))
	err := rt.Restore(context.Background(), "c1", RestoreOpts{Bundle: bundle, PidFile: filepath.Join(bundle, "init.pid"), ImagePath: "/img"})
	var ee *ExitError
	if err == nil || err.Error() != "criu failed: type RESTORE errno 0" || !errors.As(err, &ee) {
		t.Fatalf("error %v", err)
	}
}
