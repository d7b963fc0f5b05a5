package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/runctypes"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// runcRecorder writes a `runc` into a new dir that appends its arguments
// to <dir>/argv and runs the real runc, and returns the dir and that file.
func runcRecorder(t *testing.T) (dir, argvFile string) {
	t.Helper()
	real, err := exec.LookPath("runc")
	if err != nil {
		t.Fatalf("runc: %v", err)
	}
	dir = t.TempDir()
	argvFile = filepath.Join(dir, "argv")
	script := "#!/bin/sh\necho \"$*\" >> " + argvFile + "\nexec " + real + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "runc"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, argvFile
}

// TestCtrRunNoPivot runs `ctr run --no-pivot` on containerd 1.6, whose
// client sends containerd.linux.runc.CreateOptions to a runtime not named
// io.containerd.runc* (to runc's own it sends runc.v1.Options): the
// container must run, and runc must create it with --no-pivot.
func TestCtrRunNoPivot(t *testing.T) {
	t.Parallel()
	bin, argv := runcRecorder(t)
	fl := defaultFlavor()
	fl.binDir = bin // containerd and so the shim find the recording runc first
	d := startContainerd(t, withFlavor(fl))
	id := d.newID("nopivot")
	r := d.run(t, []string{"--rm", "--no-pivot"}, id, "/bin/echo", "hello")
	if r.code != 0 || r.stdout != "hello\n" {
		t.Fatalf("ctr run --no-pivot: want exit 0 and hello; got %v", r)
	}
	var create string
	for _, line := range strings.Split(mustRead(t, argv), "\n") {
		if strings.Contains(line, " create ") && strings.HasSuffix(line, " "+id) {
			create = line
		}
	}
	if !strings.Contains(create, " --no-pivot ") {
		t.Errorf("runc create without --no-pivot: %q", create)
	}
	assertNoLeftovers(t, d, id)
}

// TestCreateOptionsIOOwner sends containerd.linux.runc.CreateOptions with
// io_uid/io_gid (containerd 1.6's WithUIDOwner/WithGIDOwner) and
// no_new_keyring: the container's stdout pipe belongs to that group, and
// runc creates the container with --no-new-keyring. (Its owner is the
// container user's, 0: runc's init chowns the stdio fds it can to the
// process's uid, keeping the group; io_uid matters where it cannot, in a
// user namespace.)
func TestCreateOptionsIOOwner(t *testing.T) {
	f := newFakeContainerd(t)
	id := "createopts"
	b := f.bundle(t, id, "/bin/stat", "-L", "-c", "%u:%g", "/proc/self/fd/1")
	bin, argv := runcRecorder(t)
	s := f.startShimPath(t, id, b, bin)
	ctx := ctxT(t)
	opts, err := proto.Marshal(&runctypes.CreateOptions{IoUid: 1000, IoGid: 1001, NoNewKeyring: true})
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(t.TempDir(), "stdout")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: fifo,
		Options: &gogotypes.Any{TypeUrl: "containerd.linux.runc.CreateOptions", Value: opts}})
	if err != nil {
		t.Fatalf("create with CreateOptions: %v", err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id}); err != nil || w.ExitStatus != 0 {
		t.Fatalf("wait: %+v %v", w, err)
	}
	if out := readUntil(t, r, "\n", 10*time.Second); !strings.HasSuffix(out, ":1001\n") {
		t.Errorf("the container's stdout pipe is owned by %q, want group 1001", out)
	}
	if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id}); err != nil {
		t.Error(err)
	}
	if got := mustRead(t, argv); !strings.Contains(got, " --no-new-keyring ") {
		t.Errorf("runc was never run with --no-new-keyring:\n%s", got)
	}
}

// TestCreateOptionsShimCgroup gives the start action containerd 1.6's
// task options, a containerd.linux.runc.CreateOptions with shim_cgroup
// (WithShimCgroup), on stdin, as 1.6 sends them: the serving shim must be
// in that cgroup.
func TestCreateOptionsShimCgroup(t *testing.T) {
	f := newFakeContainerd(t)
	id := "shimcg"
	b := f.bundle(t, id, "/bin/true")
	cg := "/leanshim-test-" + f.ns
	dir := filepath.Join("/sys/fs/cgroup/pids", cg)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("a pids cgroup for the shim: %v", err)
	}
	opts, err := proto.Marshal(&runctypes.CreateOptions{ShimCgroup: cg})
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := proto.Marshal(&gogotypes.Any{TypeUrl: "containerd.linux.runc.CreateOptions", Value: opts})
	if err != nil {
		t.Fatal(err)
	}
	s := f.startShimWith(t, id, b, "", stdin)
	t.Cleanup(func() { // before startShimWith's: cleanups run last-in first-out
		if shimAlive(s.pid) {
			_ = syscall.Kill(s.pid, syscall.SIGKILL) // only the shim this test started
		}
		if !poll(10*time.Second, func() bool { return os.Remove(dir) == nil }) {
			t.Errorf("cgroup %s still busy after the shim was killed", dir)
		}
	})
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(s.pid)) {
		t.Errorf("shim %d is not in %s (cgroup.procs: %q)", s.pid, dir, procs)
	}
	if _, err := s.task.Connect(ctxT(t), &taskapi.ConnectRequest{Id: id}); err != nil {
		t.Errorf("the shim in its cgroup does not answer: %v", err)
	}
}
