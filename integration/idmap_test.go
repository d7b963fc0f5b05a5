package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/proto/types"
)

// TestCreateIDMappedRootfs sends Create a rootfs mount with uidmap= and
// gidmap= (containerd 2.x's overlay snapshotter adds them for a
// user-namespaced pod; here on a bind mount of the busybox rootfs, the same
// remapping): the shim mounts it idmapped, so the container sees the
// image's root-owned files as owned by the mapped host id.
func TestCreateIDMappedRootfs(t *testing.T) {
	f := newFakeContainerd(t)
	id := "idmapped"
	b := f.bundle(t, id, "/bin/stat", "-c", "%u:%g", "/bin/busybox")
	// The container's root is the bundle's rootfs, where the shim mounts.
	var spec map[string]any
	raw, err := os.ReadFile(filepath.Join(b, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	spec["root"] = map[string]any{"path": "rootfs", "readonly": false}
	raw, _ = json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(b, "config.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s := f.startShim(t, id, b)
	ctx := ctxT(t)
	fifo := filepath.Join(t.TempDir(), "stdout")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rootfs := []*types.Mount{{Type: "bind", Source: suite.rootfs,
		Options: []string{"rbind", "uidmap=0:100000:65536", "gidmap=0:100000:65536"}}}
	if _, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Rootfs: rootfs, Stdout: fifo}); err != nil {
		t.Fatalf("create with an idmapped rootfs: %v", err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id}); err != nil || w.ExitStatus != 0 {
		t.Fatalf("wait: %+v %v", w, err)
	}
	if out := readUntil(t, r, "\n", 10*time.Second); out != "100000:100000\n" {
		t.Errorf("the container sees /bin/busybox owned by %q, want 100000:100000", out)
	}
	if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(b); len(m) != 0 {
		t.Errorf("mounts left in the bundle after delete: %v", m)
	}
}
