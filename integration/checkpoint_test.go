package integration

// Checkpoint and restore through the task API. CRIU cannot run on this
// kernel (ENVIRONMENT.md: `criu check` fails), so the runtime is a fake
// wrapped around real runc: checkpoint fails the way CRIU does, and restore
// creates and starts a real container from the bundle. What is tested is the
// shim's side: argv, the error containerd shows, and a restored init that is
// started, reaped and reported like any other.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"

	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/taskapi"
)

const fakeCRIURuntime = `#!/bin/sh
# runc, except: checkpoint fails like CRIU on this kernel; restore = create + start.
echo "$@" >> "$ARGV_LOG"
g=""
while [ $# -gt 0 ]; do
  case "$1" in
  --root|--log|--log-format|--criu) g="$g $1 $2"; shift 2 ;;
  --systemd-cgroup|--debug) g="$g $1"; shift ;;
  *) break ;;
  esac
done
cmd=$1; shift
case "$cmd" in
checkpoint)
  log=$(echo "$g" | sed -n 's/.*--log \([^ ]*\).*/\1/p')
  printf '%s\n' '{"level":"error","msg":"criu failed: type NOTIFY errno 0\nlog file: dump.log","time":"2026-01-01T00:00:00Z"}' >> "$log"
  exit 1 ;;
restore)
  pidfile=""; bundle=""; id=""
  while [ $# -gt 0 ]; do
    case "$1" in
    --pid-file) pidfile=$2; shift 2 ;;
    --bundle) bundle=$2; shift 2 ;;
    --image-path|--work-path|--parent-path|--console-socket) shift 2 ;;
    --detach|--no-pivot|-no-subreaper) shift ;;
    *) id=$1; shift ;;
    esac
  done
  runc $g create --bundle "$bundle" --pid-file "$pidfile" "$id" && exec runc $g start "$id" ;;
*) exec runc $g "$cmd" "$@" ;;
esac
`

func TestCheckpointAndRestoreWithFakeCRIU(t *testing.T) {
	f := newFakeContainerd(t)
	dir := t.TempDir()
	rt := filepath.Join(dir, "fake-criu-runc")
	if err := os.WriteFile(rt, []byte(fakeCRIURuntime), 0o755); err != nil {
		t.Fatal(err)
	}
	argvLog := filepath.Join(dir, "argv")
	t.Setenv("ARGV_LOG", argvLog) // inherited by the shim, then by the runtime
	// criu_path reaches the runtime as --criu, on checkpoint and restore only.
	const criu = "/opt/test/criu"
	opts := optionsAny(t, &runcopts.Options{BinaryName: rt, CriuPath: criu})
	ctx := ctxT(t)

	// Checkpoint a running container: CRIU "fails", and containerd gets
	// the runtime's first line and where the dump log was kept.
	id := "apickpt"
	b := f.bundle(t, id, "/bin/sleep", "1000")
	s := f.startShim(t, id, b)
	if _, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Options: opts}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	images := filepath.Join(dir, "images")
	copts, _ := proto.Marshal(&runcopts.CheckpointOptions{Exit: true, OpenTcp: true, FileLocks: true})
	_, err := s.task.Checkpoint(ctx, &taskapi.CheckpointTaskRequest{Id: id, Path: images,
		Options: &gogotypes.Any{TypeUrl: "containerd.runc.v1.CheckpointOptions", Value: copts}})
	wantCode(t, err, codes.Unknown, "criu failed: type NOTIFY errno 0 path= "+filepath.Join(b, "criu-dump.log"))
	argv, _ := os.ReadFile(argvLog)
	want := "checkpoint --image-path " + images
	for _, line := range strings.Split(strings.TrimSpace(string(argv)), "\n") {
		if strings.Contains(line, "--criu "+criu) != strings.Contains(line, " checkpoint ") {
			t.Errorf("runtime call %q: want --criu %s exactly on checkpoint and restore", line, criu)
		}
	}
	if !strings.Contains(string(argv), want) || !strings.Contains(string(argv), "--tcp-established") ||
		!strings.Contains(string(argv), "--file-locks") || strings.Contains(string(argv), "--leave-running") {
		t.Fatalf("checkpoint argv:\n%s\nwant %q with --tcp-established --file-locks and no --leave-running", argv, want)
	}
	_, err = s.task.Checkpoint(ctx, &taskapi.CheckpointTaskRequest{Id: id, Path: images,
		Options: &gogotypes.Any{TypeUrl: "example.com/Nope", Value: []byte{1}}})
	wantCode(t, err, codes.InvalidArgument, "checkpoint options")
	st, err := s.task.State(ctx, &taskapi.StateRequest{Id: id})
	if err != nil || st.Status.String() != "RUNNING" {
		t.Fatalf("a failed checkpoint must leave the container running: %+v %v", st, err)
	}
	if _, err := s.task.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id}); err != nil {
		t.Fatal(err)
	}

	// Create from a checkpoint: nothing runs until Start, which restores.
	rid := "apirestore"
	rb := f.bundle(t, rid, "/bin/sh", "-c", "exit 9")
	rs := f.startShim(t, rid, rb)
	cr, err := rs.task.Create(ctx, &taskapi.CreateTaskRequest{Id: rid, Bundle: rb, Options: opts, Checkpoint: images})
	if err != nil {
		t.Fatal(err)
	}
	if cr.Pid != 0 {
		t.Fatalf("a container created from a checkpoint has no process before Start; got pid %d", cr.Pid)
	}
	sr, err := rs.task.Start(ctx, &taskapi.StartRequest{Id: rid})
	if err != nil {
		t.Fatal(err)
	}
	w, err := rs.task.Wait(ctx, &taskapi.WaitRequest{Id: rid})
	if err != nil || w.ExitStatus != 9 || sr.Pid == 0 {
		t.Fatalf("restored container: start pid %d, wait %+v %v", sr.Pid, w, err)
	}
	argv, _ = os.ReadFile(argvLog)
	if !strings.Contains(string(argv), "--criu "+criu+" restore --image-path "+images) || !strings.Contains(string(argv), "-no-subreaper") {
		t.Fatalf("restore argv:\n%s", argv)
	}
	if _, err := rs.task.Delete(ctx, &taskapi.DeleteRequest{Id: rid}); err != nil {
		t.Fatal(err)
	}
	want = "/tasks/create /tasks/start /tasks/exit /tasks/delete"
	if !poll(eventTimeout, func() bool { return strings.Join(f.topics(t, rid), " ") == want }) {
		t.Fatalf("restored container's events: %q, want %q", f.topics(t, rid), want)
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatal(err)
	}
}
