package process

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// fuseHelpers maps a mount type prefix to the mount(8) helper containerd
// runs for it: "fuse3.fuse-overlayfs" runs mount.fuse3 with -t
// fuse-overlayfs. Only these two helpers run, so a mount type from a
// request cannot name an arbitrary program.
var fuseHelpers = []struct{ prefix, helper string }{
	{"fuse.", "mount.fuse"},
	{"fuse3.", "mount.fuse3"},
}

// fuseHelper reports whether mounts of type typ go through a FUSE helper,
// and which, with the file system type it is given.
func fuseHelper(typ string) (helper, fstype string, ok bool) {
	for _, h := range fuseHelpers {
		if rest, found := strings.CutPrefix(typ, h.prefix); found && rest != "" {
			return h.helper, rest, true
		}
	}
	return "", "", false
}

// mountFUSE mounts m on target with a FUSE helper, as containerd does:
// `mount.fuse3 <source> <target> -o <opt>... -t <fstype>`. The helper and
// the FUSE daemon it starts run as separate processes, so they get the
// target as the path the kernel reports for it (target may be a
// /proc/self/fd link, which would name their own fds); the helper runs
// through the reaper and is bounded by ctx.
func (mr mounter) mountFUSE(ctx context.Context, helper, fstype string, m Mount, target, name string) error {
	if mr.run == nil {
		return fmt.Errorf("mount %s on %s (type %q): no way to run %s", m.Source, name, m.Type, helper)
	}
	path := target
	if strings.HasPrefix(target, "/proc/self/fd/") {
		p, err := os.Readlink(target)
		if err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Source, name, err)
		}
		path = p
	}
	args := []string{m.Source, path}
	for _, o := range m.Options {
		args = append(args, "-o", o)
	}
	args = append(args, "-t", fstype)
	cmd := exec.Command(helper, args...)
	if out, err := mr.run(ctx, cmd); err != nil {
		return fmt.Errorf("mount %s on %s (type %q): %s %q: %w: %s", m.Source, name, m.Type, helper, args, err, strings.TrimSpace(string(out)))
	}
	return nil
}
