package process

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/stdio"
)

// UsernsHolderArg0 is argv[0] of a copy of the shim whose only job is to
// hold a user namespace open (see Factory.openUserns). cmd/shim's main
// runs HoldUserns when it sees it.
const UsernsHolderArg0 = "leanshim-userns-holder"

// HoldUserns is the whole program of a user namespace holder: it reads its
// stdin to EOF, then returns the exit code.
func HoldUserns() int {
	_, _ = io.Copy(io.Discard, os.Stdin) // EOF is the only message
	return 0
}

// idmaps are the id mappings of an idmapped mount: containerd 2.x's
// overlay snapshotter adds "uidmap=<ctr>:<host>:<size>[,...]" and
// "gidmap=..." to the mounts of a user-namespaced pod.
type idmaps struct {
	uid, gid []syscall.SysProcIDMap
}

// parseIDMaps reads one uidmap=/gidmap= value: container:host:size
// triplets separated by commas.
func parseIDMaps(s string) ([]syscall.SysProcIDMap, error) {
	var out []syscall.SysProcIDMap
	for _, m := range strings.Split(s, ",") {
		f := strings.Split(m, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("id mapping %q: want container:host:size: %w", m, ErrInvalidArgument)
		}
		var n [3]int
		for i, x := range f {
			v, err := strconv.ParseUint(x, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("id mapping %q: %w: %w", m, err, ErrInvalidArgument)
			}
			n[i] = int(v)
		}
		out = append(out, syscall.SysProcIDMap{ContainerID: n[0], HostID: n[1], Size: n[2]})
	}
	return out, nil
}

// openUserns returns a user namespace with the given mappings, as an open
// /proc/<pid>/ns/user file the caller must close. The namespace needs a
// process to be made in: a copy of the shim (UsernsHolderArg0) started in a
// new user namespace (os/exec writes the maps before it execs) with start,
// which for the shim is its reaper, the only wait4 caller. The holder
// blocks reading a pipe until the namespace is open, so its pid cannot be
// reused meanwhile; then EOF ends it and it is waited for. The open file
// keeps the namespace alive.
func openUserns(start stdio.Starter, m idmaps) (*os.File, error) {
	if start == nil {
		return nil, errors.New("idmapped mount: no way to start a user namespace holder")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path: "/proc/self/exe", Args: []string{UsernsHolderArg0}, Stdin: r,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWUSER, UidMappings: m.uid, GidMappings: m.gid,
			Pdeathsig: unix.SIGKILL,
		},
	}
	wait, err := start(cmd)
	_ = r.Close() // the holder has its copy
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("start a user namespace holder: %w", err)
	}
	defer func() {
		_ = w.Close() // EOF: the holder exits
		wait()
	}()
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	if err != nil {
		return nil, fmt.Errorf("open the holder's user namespace: %w", err)
	}
	return ns, nil
}

// idmapClone attaches at dst an idmapped clone of the mount tree at src
// (open_tree(2) OPEN_TREE_CLONE, mount_setattr(2) MOUNT_ATTR_IDMAP with the
// user namespace userns, plus attrs; move_mount(2)), private, as
// containerd's IDMapMountWithAttrs does. Linux 5.12.
func idmapClone(src, dst string, userns *os.File, attrs uint64) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return &os.PathError{Op: "open_tree", Path: src, Err: err}
	}
	defer func() { _ = unix.Close(fd) }() // detached tree: closing it frees it unless moved
	attr := unix.MountAttr{
		Attr_set: unix.MOUNT_ATTR_IDMAP | attrs, Propagation: unix.MS_PRIVATE, Userns_fd: uint64(userns.Fd()),
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return &os.PathError{Op: "mount_setattr idmap", Path: src, Err: err}
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return &os.PathError{Op: "move_mount", Path: dst, Err: err}
	}
	return nil
}

// idmapLowerdirs makes an overlay's lower dirs idmapped, as containerd does
// for overlay (overlayfs takes idmapped lower layers, Linux 5.19): one
// idmapped, read-only clone of the lower dirs' common parent is attached
// on a new directory under scratch, and lowerdir= is rewritten to go
// through it. The returned cleanup, to run once the overlay is mounted (it
// holds its own references to the layers), detaches and removes that
// directory.
func idmapLowerdirs(opts []string, userns *os.File, scratch string) (_ []string, cleanup func(), retErr error) {
	idx, dirs := lowerdirs(opts)
	if idx < 0 {
		return nil, nil, fmt.Errorf("idmapped overlay without lowerdir=: %w", ErrInvalidArgument)
	}
	parent := commonParent(dirs)
	if parent == "" {
		return nil, nil, fmt.Errorf("idmapped overlay: lower dirs %q share no parent below /: %w", dirs, ErrInvalidArgument)
	}
	tmp, err := os.MkdirTemp(scratch, ".idmapped-lower-")
	if err != nil {
		return nil, nil, err
	}
	cleanup = func() {
		_ = unix.Unmount(tmp, unix.MNT_DETACH) // may not be mounted
		_ = os.Remove(tmp)
	}
	defer func() {
		if retErr != nil {
			cleanup()
		}
	}()
	if err := idmapClone(parent, tmp, userns, unix.MOUNT_ATTR_RDONLY); err != nil {
		return nil, nil, err
	}
	rel := make([]string, len(dirs))
	for i, d := range dirs {
		rel[i] = tmp + d[len(parent):]
	}
	out := append([]string(nil), opts...)
	out[idx] = "lowerdir=" + strings.Join(rel, ":")
	return out, cleanup, nil
}

// errIDMapHalf: containerd remaps only when both maps are given and then
// silently mounts without either; a half-mapped rootfs would show the
// container wrong owners, so the shim refuses it.
var errIDMapHalf = errors.New("an idmapped mount needs both uidmap= and gidmap=")
