package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/stdio"
)

// Mount is one rootfs mount as containerd sends it.
type Mount struct {
	Type, Source, Target string
	Options              []string
}

// mountFlags maps mount(8) option words to flags; the bool clears the flag.
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"async": {true, unix.MS_SYNCHRONOUS}, "atime": {true, unix.MS_NOATIME},
	"bind": {false, unix.MS_BIND}, "defaults": {false, 0}, "dev": {true, unix.MS_NODEV},
	"diratime": {true, unix.MS_NODIRATIME}, "dirsync": {false, unix.MS_DIRSYNC},
	"exec": {true, unix.MS_NOEXEC}, "mand": {false, unix.MS_MANDLOCK},
	"noatime": {false, unix.MS_NOATIME}, "nodev": {false, unix.MS_NODEV},
	"nodiratime": {false, unix.MS_NODIRATIME}, "noexec": {false, unix.MS_NOEXEC},
	"nomand": {true, unix.MS_MANDLOCK}, "norelatime": {true, unix.MS_RELATIME},
	"nostrictatime": {true, unix.MS_STRICTATIME}, "nosuid": {false, unix.MS_NOSUID},
	"rbind": {false, unix.MS_BIND | unix.MS_REC}, "relatime": {false, unix.MS_RELATIME},
	"remount": {false, unix.MS_REMOUNT}, "ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"strictatime": {false, unix.MS_STRICTATIME}, "suid": {true, unix.MS_NOSUID},
	"sync": {false, unix.MS_SYNCHRONOUS},
}

// parseOptions splits mount options into flags and the data string.
func parseOptions(opts []string) (flags uintptr, data string) {
	var rest []string
	for _, o := range opts {
		f, ok := mountFlags[o]
		if !ok {
			rest = append(rest, o)
			continue
		}
		if f.clear {
			flags &^= f.flag
		} else {
			flags |= f.flag
		}
	}
	return flags, strings.Join(rest, ",")
}

// mounter mounts a container's rootfs. run runs a mount helper program
// (mount.fuse, mount.fuse3) to its end and returns its combined output;
// start starts a user namespace holder (openUserns); onThread runs a mount
// that changes its thread's working directory on a thread that then ends
// (mountIn). The Factory's go through the reaper, the shim's only wait4
// caller, which also knows the threads that must not end.
type mounter struct {
	run      func(ctx context.Context, cmd *exec.Cmd) ([]byte, error)
	start    stdio.Starter
	onThread func(fn func())
}

// mountRootfs mounts ms onto rootfs with the Factory's helper runners.
func (f *Factory) mountRootfs(ctx context.Context, rootfs string, ms []Mount) error {
	return mounter{run: f.runHelper, start: f.starter(), onThread: f.reaper.OnDisposableThread}.mountAll(ctx, rootfs, ms)
}

// runHelper runs cmd through the reaper; a non-zero exit is an error.
func (f *Factory) runHelper(ctx context.Context, cmd *exec.Cmd) ([]byte, error) {
	out, e, err := f.reaper.RunCmd(ctx, cmd, nil, true)
	if err == nil && e.Status != 0 {
		err = fmt.Errorf("%s exited with status %d", cmd.Path, e.Status)
	}
	return out, err
}

// mountAll mounts ms onto rootfs in order. A mount with a Target goes on
// that path inside rootfs, resolved as if rootfs were "/" (see openInRoot),
// so an image's symlinks cannot move it out. On failure it undoes what it did.
func (mr mounter) mountAll(ctx context.Context, rootfs string, ms []Mount) (retErr error) {
	// Absolute, because an overlay mount with many layers runs in a thread
	// whose working directory is elsewhere (mountIn).
	rootfs, err := filepath.Abs(rootfs)
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			_ = unmountRootfs(rootfs)
		}
	}()
	for _, m := range ms {
		if err := mr.mountAt(ctx, rootfs, m); err != nil {
			return err
		}
	}
	return nil
}

// mountAt mounts m on its Target inside rootfs (rootfs itself when empty).
func (mr mounter) mountAt(ctx context.Context, rootfs string, m Mount) error {
	if m.Target == "" {
		return mr.mountOne(ctx, m, rootfs, rootfs, filepath.Dir(rootfs))
	}
	dir, err := openInRoot(rootfs, m.Target)
	if err != nil {
		return fmt.Errorf("mount target %s in %s: %w", m.Target, rootfs, err)
	}
	defer func() { _ = dir.Close() }() // O_PATH, nothing to flush
	// mount(2) follows the magic link to the directory openInRoot checked,
	// not the path, so nothing can swap a symlink in between (runc mounts
	// through /proc/self/fd for the same reason).
	return mr.mountOne(ctx, m, fmt.Sprintf("/proc/self/fd/%d", dir.Fd()), filepath.Join(rootfs, filepath.Clean("/"+m.Target)), filepath.Dir(rootfs))
}

// mountOne mounts m on target; name is target as errors show it, scratch a
// private directory (the bundle) for short-lived mounts.
func (mr mounter) mountOne(ctx context.Context, m Mount, target, name, scratch string) error {
	if helper, fstype, ok := fuseHelper(m.Type); ok {
		return mr.mountFUSE(ctx, helper, fstype, m, target, name)
	}
	sp, opts, err := specialOptions(m.Options)
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.Source, name, err)
	}
	var userns *os.File
	if sp.idmap != nil {
		if userns, err = openUserns(mr.start, *sp.idmap); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Source, name, err)
		}
		defer func() { _ = userns.Close() }() // the mounts hold their own reference
		if m.Type == "overlay" {
			var cleanup func()
			if opts, cleanup, err = idmapLowerdirs(opts, userns, scratch); err != nil {
				return fmt.Errorf("mount %s on %s: %w", m.Source, name, err)
			}
			defer cleanup()
		}
	}
	flags, data := parseOptions(opts)
	chdir := ""
	if m.Type == "overlay" && len(data) >= overlayCompactAt {
		chdir, opts = compactLowerdirs(opts)
		_, data = parseOptions(opts)
	}
	if len(data) >= pageSize {
		return fmt.Errorf("mount %s on %s (type %q): %d bytes of options do not fit mount(2)'s page: %w",
			m.Source, name, m.Type, len(data), unix.EINVAL)
	}
	source := m.Source
	if sp.loop {
		dev, err := attachLoop(m.Source, flags&unix.MS_RDONLY != 0, sp.directIO)
		if err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Source, name, err)
		}
		// Autoclear: closing our descriptor once the mount holds the
		// device detaches it when the mount goes (or now, if it failed).
		defer func() { _ = dev.Close() }()
		source = dev.Name()
	}
	if err := mr.mountIn(chdir, source, target, m.Type, flags&^unix.MS_RDONLY|readonlyUnlessBind(flags), data); err != nil {
		return fmt.Errorf("mount %s on %s (type %q, options %q): %w", m.Source, name, m.Type, strings.Join(m.Options, ","), err)
	}
	return afterMount(m, target, name, flags, userns)
}

// afterMount finishes the mount just made at target: the read-only remount
// of a bind mount (mount(2) ignores MS_RDONLY with MS_BIND) and, for an
// idmapped mount that is not an overlay, an idmapped clone stacked on top.
func afterMount(m Mount, target, name string, flags uintptr, userns *os.File) error {
	remountRO := flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0
	idmapped := userns != nil && m.Type != "overlay"
	if !remountRO && !idmapped {
		return nil
	}
	// Both act on the new mount, by path: a /proc/self/fd link still names
	// the directory under it, so it is read back as the path it stands
	// for, which now leads to the new mount.
	top := target
	if strings.HasPrefix(target, "/proc/self/fd/") {
		var err error
		if top, err = os.Readlink(target); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Source, name, err)
		}
	}
	if remountRO {
		if err := unix.Mount("", top, "", flags|unix.MS_REMOUNT, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", name, err)
		}
	}
	if idmapped {
		// As containerd remaps a mount that is not an overlay: an
		// idmapped clone stacked on top of it.
		if err := idmapClone(top, top, userns, 0); err != nil {
			return fmt.Errorf("idmap %s: %w", name, err)
		}
	}
	return nil
}

// special are the mount options that are neither flags nor file system
// data: they ask the shim to do something around mount(2).
type special struct {
	loop     bool    // mount a loop device backed by the source file
	directIO bool    // with loop: the loop device uses direct I/O
	idmap    *idmaps // uidmap= and gidmap=: an idmapped mount
}

// specialOptions takes the special options out of opts, as containerd's
// mount code does: "loop", "direct-io" when it comes with "loop", and
// "uidmap="/"gidmap=", which must come together.
func specialOptions(opts []string) (special, []string, error) {
	var sp special
	var rest []string
	var uidmap, gidmap string
	for _, o := range opts {
		switch {
		case o == "loop":
			sp.loop = true
		case o == "direct-io":
			sp.directIO = true
		case strings.HasPrefix(o, "uidmap="):
			uidmap = strings.TrimPrefix(o, "uidmap=")
		case strings.HasPrefix(o, "gidmap="):
			gidmap = strings.TrimPrefix(o, "gidmap=")
		default:
			rest = append(rest, o)
		}
	}
	if sp.directIO && !sp.loop {
		sp.directIO = false
		rest = append(rest, "direct-io") // the file system's own option then
	}
	if uidmap == "" && gidmap == "" {
		return sp, rest, nil
	}
	if uidmap == "" || gidmap == "" {
		return sp, nil, fmt.Errorf("%w: %w", errIDMapHalf, ErrInvalidArgument)
	}
	uid, err := parseIDMaps(uidmap)
	if err != nil {
		return sp, nil, err
	}
	gid, err := parseIDMaps(gidmap)
	if err != nil {
		return sp, nil, err
	}
	sp.idmap = &idmaps{uid: uid, gid: gid}
	return sp, rest, nil
}

func readonlyUnlessBind(flags uintptr) uintptr {
	if flags&unix.MS_BIND != 0 {
		return 0
	}
	return flags & unix.MS_RDONLY
}

// unmountRootfs unmounts everything stacked on rootfs (lazily, so a busy
// mount does not keep the bundle). A rootfs with nothing mounted is fine.
func unmountRootfs(rootfs string) error {
	for range 64 {
		err := unix.Unmount(rootfs, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // not a mount point (any more)
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", rootfs, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 64 unmounts", rootfs)
}

// maxSymlinks is how many symlinks one path may go through, as the
// kernel's limit (path_resolution(7)).
const maxSymlinks = 40

// openInRoot opens the directory at path inside root, creating missing
// directories (0755) on the way, and returns it as an O_PATH file the caller
// must close. The path is resolved as the container will see it, with root
// as "/": ".." stops at root, and a symlink (absolute or relative) is
// followed inside root, never out of it, as containerd resolves a mount's
// Target (continuity's fs.RootPath) before it creates it. A plain
// filepath.Join + MkdirAll would follow an image's symlink (say /mnt -> /etc)
// to the host's directory.
//
// Each component is opened from its parent's descriptor with O_NOFOLLOW, and
// symlinks are read and expanded here, so a symlink swapped in while we walk
// makes the open fail (ELOOP, ENOTDIR) instead of leading out.
func openInRoot(root, path string) (*os.File, error) {
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	w := rootWalk{dirs: []int{rootFd}, todo: strings.Split(path, "/")}
	defer w.close()
	for len(w.todo) > 0 {
		if err := w.step(); err != nil {
			return nil, &os.PathError{Op: "resolve", Path: path, Err: err}
		}
	}
	fd, err := unix.Dup(w.dirs[len(w.dirs)-1])
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), filepath.Join(root, filepath.Clean("/"+path))), nil
}

// rootWalk is openInRoot's state: the open directories from root down to
// where the walk is, and the path components still to resolve.
type rootWalk struct {
	dirs  []int    // O_PATH descriptors; dirs[0] is root
	todo  []string // components left
	links int      // symlinks followed so far
}

// step resolves the next component.
func (w *rootWalk) step() error {
	name := w.todo[0]
	w.todo = w.todo[1:]
	cur := w.dirs[len(w.dirs)-1]
	switch name {
	case "", ".":
		return nil
	case "..":
		if len(w.dirs) > 1 { // ".." of root is root
			_ = unix.Close(cur) // O_PATH
			w.dirs = w.dirs[:len(w.dirs)-1]
		}
		return nil
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(cur, name, buf)
	if err == nil {
		if w.links++; w.links > maxSymlinks {
			return unix.ELOOP
		}
		link := string(buf[:n])
		if strings.HasPrefix(link, "/") {
			for _, fd := range w.dirs[1:] {
				_ = unix.Close(fd) // O_PATH
			}
			w.dirs = w.dirs[:1]
		}
		w.todo = append(strings.Split(link, "/"), w.todo...)
		return nil
	}
	if errors.Is(err, unix.ENOENT) {
		// EEXIST: made meanwhile; the open below checks what it is.
		if err := unix.Mkdirat(cur, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	} else if !errors.Is(err, unix.EINVAL) { // EINVAL: not a symlink
		return err
	}
	fd, err := unix.Openat(cur, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	w.dirs = append(w.dirs, fd)
	return nil
}

func (w *rootWalk) close() {
	for _, fd := range w.dirs {
		_ = unix.Close(fd) // O_PATH
	}
}
