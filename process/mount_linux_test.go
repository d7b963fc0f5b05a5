package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// needRoot fails, not skips, when the tests cannot mount: `make test` runs
// as root, and a skipped mount test would pass while proving nothing.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts and needs root (make test runs as root)")
	}
}

// TestMountOverlayOfManyLayers mounts an overlay of 128 lower dirs whose
// lowerdir= option alone is over a page long, as an image with 128 layers
// gives it, and checks that every layer shows through and that the shim's
// own working directory never moved.
func TestMountOverlayOfManyLayers(t *testing.T) {
	needRoot(t)
	base := filepath.Join(t.TempDir(), "io.containerd.snapshotter.v1.overlayfs", "snapshots")
	const layers = 128
	var lower []string
	for i := range layers {
		dir := filepath.Join(base, fmt.Sprint(i+1), "fs")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("layer%d", i+1)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		lower = append([]string{dir}, lower...) // topmost first, as snapshotters list them
	}
	upper, work := filepath.Join(base, "999", "fs"), filepath.Join(base, "999", "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := []string{"index=off", "lowerdir=" + strings.Join(lower, ":"), "upperdir=" + upper, "workdir=" + work}
	if n := len(strings.Join(opts, ",")); n < pageSize {
		t.Fatalf("options are %d bytes; the test needs more than a page (%d)", n, pageSize)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := mountRootfs(rootfs, []Mount{{Type: "overlay", Source: "overlay", Options: opts}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unmountRootfs(rootfs); err != nil {
			t.Error(err)
		}
	})
	for _, name := range []string{"layer1", "layer64", "layer128"} {
		if _, err := os.Stat(filepath.Join(rootfs, name)); err != nil {
			t.Errorf("%s of the overlay: %v", name, err)
		}
	}
	if now, err := os.Getwd(); err != nil || now != cwd {
		t.Errorf("the working directory moved from %s to %s (%v)", cwd, now, err)
	}
}

// TestMountTargetStaysInRootfs mounts on targets reached through the
// image's symlinks (absolute, relative and dangling) and checks that each
// mount lands inside the rootfs, as the container would resolve the path,
// never on the host's directory the symlink names.
func TestMountTargetStaysInRootfs(t *testing.T) {
	needRoot(t)
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	outside := t.TempDir() // stands for a host directory
	for _, d := range []string{rootfs, filepath.Join(rootfs, "real")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"abs":      outside,                        // absolute, to the "host"
		"up":       "../../../../../../" + outside, // relative, climbing out
		"root":     "/",                            // the container's /
		"dangling": "/nonexistent/dir",
	}
	for name, to := range links {
		if err := os.Symlink(to, filepath.Join(rootfs, name)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		target, want string // want is relative to rootfs
	}{
		{"/abs/m1", outside + "/m1"},
		{"/up/m2", outside + "/m2"},
		{"/root/real/m3", "/real/m3"},
		{"../../m4", "/m4"},
		{"/dangling/m5", "/nonexistent/dir/m5"}, // created inside, as containerd does
	}
	for _, tc := range tests {
		m := Mount{Type: "tmpfs", Source: "tmpfs", Target: tc.target, Options: []string{"size=64k"}}
		if err := mountRootfs(rootfs, []Mount{m}); err != nil {
			t.Errorf("mount on %s: %v", tc.target, err)
			continue
		}
		got := filepath.Join(rootfs, tc.want)
		if !isMountPoint(t, got) {
			t.Errorf("mount on %s: %s is not a mount point", tc.target, got)
		}
		if err := unix.Unmount(got, unix.MNT_DETACH); err != nil {
			t.Error(err)
		}
	}
	if entries, err := os.ReadDir(outside); err != nil || len(entries) != 0 {
		t.Errorf("the directory outside the rootfs got %v (%v)", entries, err)
	}
	if _, err := os.Lstat("/nonexistent"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a mount through a dangling symlink created /nonexistent on the host: %v", err)
	}
}

func isMountPoint(t *testing.T, path string) bool {
	t.Helper()
	var st, parent unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Errorf("stat %s: %v", path, err)
		return false
	}
	if err := unix.Lstat(filepath.Dir(path), &parent); err != nil {
		t.Errorf("stat %s: %v", filepath.Dir(path), err)
		return false
	}
	return st.Dev != parent.Dev
}
