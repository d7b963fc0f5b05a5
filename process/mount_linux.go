package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
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

// mountRootfs mounts ms onto rootfs in order. On failure it undoes what it did.
func mountRootfs(rootfs string, ms []Mount) (retErr error) {
	defer func() {
		if retErr != nil {
			_ = unmountRootfs(rootfs)
		}
	}()
	for _, m := range ms {
		target := rootfs
		if m.Target != "" {
			target = filepath.Join(rootfs, filepath.Clean("/"+m.Target))
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("mount %s: %w", target, err)
			}
		}
		flags, data := parseOptions(m.Options)
		if err := mountOne(m, target, flags, data); err != nil {
			return err
		}
	}
	return nil
}

func mountOne(m Mount, target string, flags uintptr, data string) error {
	// A read-only bind mount needs a second, remounting call (mount(2)).
	if err := unix.Mount(m.Source, target, m.Type, flags&^unix.MS_RDONLY|readonlyUnlessBind(flags), data); err != nil {
		return fmt.Errorf("mount %s on %s (type %q, options %q): %w", m.Source, target, m.Type, strings.Join(m.Options, ","), err)
	}
	if flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0 {
		if err := unix.Mount("", target, "", flags|unix.MS_REMOUNT, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	return nil
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

// UnmountRootfs unmounts <bundle>/rootfs. The shim's delete action uses it.
func UnmountRootfs(bundle string) error {
	return unmountRootfs(filepath.Join(bundle, "rootfs"))
}
