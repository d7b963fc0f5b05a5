package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/reaper"
)

// execMounter runs mount helpers with os/exec: nothing else reaps in the
// test process. Its disposable threads come from a reaper that never runs
// nor starts anything, so it avoids only the main thread.
var execMounter = mounter{
	run: func(_ context.Context, cmd *exec.Cmd) ([]byte, error) { return cmd.CombinedOutput() },
	start: func(cmd *exec.Cmd) (func(), error) {
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return func() { _ = cmd.Wait() }, nil
	},
	onThread: threadReaper().OnDisposableThread,
}

// threadReaper is a Reaper used only for its OnDisposableThread.
func threadReaper() *reaper.Reaper {
	r, err := reaper.New(reaper.Config{})
	if err != nil {
		panic(err) // without Subreaper, New cannot fail
	}
	return r
}

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
	if err := execMounter.mountAll(t.Context(), rootfs, []Mount{{Type: "overlay", Source: "overlay", Options: opts}}); err != nil {
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
		if err := execMounter.mountAll(t.Context(), rootfs, []Mount{m}); err != nil {
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

// TestMountLoop mounts an ext4 image file with the "loop" option (as
// containerd's blockfile and erofs snapshotters send it): the file system
// is there, read-only when asked, and the loop device goes away with the
// mount (autoclear), leaving no device attached to the file.
func TestMountLoop(t *testing.T) {
	needRoot(t)
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Fatalf("mkfs.ext4 (e2fsprogs) builds the test's image: %v", err)
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	for _, tc := range []struct {
		name string
		opts []string
		ro   bool
	}{
		{"rw", []string{"loop"}, false},
		{"ro", []string{"loop", "ro"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rootfs := t.TempDir()
			if err := execMounter.mountAll(t.Context(), rootfs, []Mount{{Type: "ext4", Source: img, Options: tc.opts}}); err != nil {
				t.Fatal(err)
			}
			dev := mountSource(t, rootfs)
			if _, err := os.Stat(filepath.Join(rootfs, "lost+found")); err != nil {
				t.Errorf("the image's file system is not on the rootfs: %v", err)
			}
			err := os.WriteFile(filepath.Join(rootfs, "w"), nil, 0o644)
			if tc.ro != (err != nil) {
				t.Errorf("write on a %s loop mount: %v", tc.name, err)
			}
			if err := unmountRootfs(rootfs); err != nil {
				t.Fatal(err)
			}
			// Autoclear detaches the device once the lazy unmount has
			// released it; the kernel does that without us.
			backing := "/sys/block/" + filepath.Base(dev) + "/loop/backing_file"
			deadline := time.Now().Add(10 * time.Second)
			for {
				b, err := os.ReadFile(backing)
				if err != nil || strings.TrimSpace(string(b)) != img {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s still backs %s after the unmount", img, dev)
				}
				time.Sleep(10 * time.Millisecond) // no event for a loop device's release
			}
		})
	}
	err = execMounter.mountAll(t.Context(), t.TempDir(), []Mount{{Type: "ext4", Source: filepath.Join(t.TempDir(), "missing"), Options: []string{"loop"}}})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("loop mount of a missing file: %v, want ErrNotExist", err)
	}
}

// mountSource returns the source device of the mount at dir.
func mountSource(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	src := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			for i, x := range f {
				if x == "-" && i+2 < len(f) {
					src = f[i+2] // the last mount on dir wins
				}
			}
		}
	}
	if !strings.HasPrefix(src, "/dev/loop") {
		t.Fatalf("%s is mounted from %q, want a /dev/loop device", dir, src)
	}
	return src
}

// TestMountFUSEHelper mounts types "fuse.X" and "fuse3.X" through a fake
// mount.fuse / mount.fuse3 on PATH, which records its arguments and mounts
// a tmpfs: the helper gets containerd's argv (source, the target's real
// path, -o per option, -t X), and the mount lands on the target inside the
// rootfs. A failing helper's output reaches the error.
func TestMountFUSEHelper(t *testing.T) {
	needRoot(t)
	bin := t.TempDir()
	argv := filepath.Join(t.TempDir(), "argv")
	script := "#!/bin/sh\n[ \"$1\" = fail ] && { echo helper says no >&2; exit 3; }\n" +
		"echo \"$(basename $0) $*\" >> " + argv + "\nexec mount -t tmpfs -o size=64k tmpfs \"$2\"\n"
	for _, name := range []string{"mount.fuse", "mount.fuse3"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	ms := []Mount{
		{Type: "fuse3.fuse-overlayfs", Source: "overlay", Options: []string{"lowerdir=/l", "upperdir=/u"}},
		{Type: "fuse.sshfs", Source: "host:/x", Target: "/mnt/s", Options: []string{"ro"}},
	}
	if err := execMounter.mountAll(t.Context(), rootfs, ms); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unmountRootfs(rootfs) })
	want := "mount.fuse3 overlay " + rootfs + " -o lowerdir=/l -o upperdir=/u -t fuse-overlayfs\n" +
		"mount.fuse host:/x " + rootfs + "/mnt/s -o ro -t sshfs\n"
	if got, _ := os.ReadFile(argv); string(got) != want {
		t.Errorf("helper argv:\n%s\nwant\n%s", got, want)
	}
	if !isMountPoint(t, filepath.Join(rootfs, "mnt", "s")) {
		t.Error("the fuse.sshfs mount is not on <rootfs>/mnt/s")
	}
	err := execMounter.mountAll(t.Context(), t.TempDir(), []Mount{{Type: "fuse3.x", Source: "fail"}})
	if err == nil || !strings.Contains(err.Error(), "helper says no") {
		t.Errorf("failing helper: %v, want its output in the error", err)
	}
	if _, _, ok := fuseHelper("fuse3."); ok {
		t.Error(`type "fuse3." has no file system type; it must not run a helper`)
	}
}

// TestMountIDMapped mounts with uidmap=/gidmap= as containerd 2.x's overlay
// snapshotter asks for a user-namespaced pod: an overlay whose lower dirs
// are idmapped, and a bind mount that is. Files root owns on disk show up
// owned by the mapped host ids; the short-lived idmapped mount of the lower
// dirs is gone once the overlay is up; half a mapping is refused.
func TestMountIDMapped(t *testing.T) {
	needRoot(t)
	const host = 100000
	maps := []string{"uidmap=0:100000:65536", "gidmap=0:100000:65536"}
	base := filepath.Join(t.TempDir(), "snapshots")
	for _, d := range []string{"1/fs", "2/fs", "3/fs", "3/work"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"1/fs/a", "2/fs/b"} {
		if err := os.WriteFile(filepath.Join(base, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	overlay := Mount{Type: "overlay", Source: "overlay", Options: append([]string{
		"lowerdir=" + base + "/2/fs:" + base + "/1/fs", "upperdir=" + base + "/3/fs", "workdir=" + base + "/3/work",
	}, maps...)}
	bind := Mount{Type: "bind", Source: filepath.Join(base, "1", "fs"), Target: "/mnt", Options: append([]string{"rbind", "ro"}, maps...)}
	if err := execMounter.mountAll(t.Context(), rootfs, []Mount{overlay, bind}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unmountRootfs(rootfs) })
	for _, f := range []string{"a", "b", "mnt/a"} {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(rootfs, f), &st); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if st.Uid != host || st.Gid != host {
			t.Errorf("%s is owned by %d:%d, want %d:%d through the idmapped mount", f, st.Uid, st.Gid, host, host)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(bundle, ".idmapped-lower-*")); len(left) != 0 {
		t.Errorf("idmapped lower dirs left in the bundle: %v", left)
	}
	_, _, err := specialOptions([]string{"uidmap=0:1:1"})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("uidmap without gidmap: %v, want ErrInvalidArgument", err)
	}
	_, _, err = specialOptions([]string{"uidmap=0:1", "gidmap=0:1:1"})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("a malformed mapping: %v, want ErrInvalidArgument", err)
	}
}
