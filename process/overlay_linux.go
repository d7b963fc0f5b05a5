package process

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// pageSize bounds a mount's data: mount(2) copies at most one page of it, so
// longer option strings are cut and overlay then looks for a lower dir whose
// name was cut in half (ENOENT).
var pageSize = os.Getpagesize()

// overlayCompactAt is the data size from which an overlay mount's lower dirs
// are written relative to their common parent. It is containerd's threshold
// (a page less 512 bytes), so the shim compacts exactly the mounts
// containerd's own mount code would.
var overlayCompactAt = pageSize - 512

// compactLowerdirs rewrites the lowerdir= option of an overlay mount with
// each lower dir relative to the parent directory the dirs have in common,
// and returns that parent with the new options. A snapshotter's layers are
// siblings (<root>/snapshots/<n>/fs), so 128 layers shrink from about 9 KiB
// to under 1 KiB. It returns "" and opts unchanged when nothing can be
// gained: no lowerdir, a single one, relative or escaped (`\:`) paths, or
// no common parent below "/".
func compactLowerdirs(opts []string) (string, []string) {
	idx, dirs := lowerdirs(opts)
	if idx < 0 || len(dirs) < 2 {
		return "", opts
	}
	parent := commonParent(dirs)
	if parent == "" {
		return "", opts
	}
	rel := make([]string, len(dirs))
	for i, d := range dirs {
		rel[i] = strings.TrimPrefix(d[len(parent):], "/")
		if rel[i] == "" {
			return "", opts // the parent is itself a layer
		}
	}
	out := append([]string(nil), opts...)
	out[idx] = "lowerdir=" + strings.Join(rel, ":")
	return parent, out
}

// lowerdirs returns the index of the lowerdir= option in opts (-1 if none)
// and its directories, topmost first.
func lowerdirs(opts []string) (int, []string) {
	for i, o := range opts {
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
			return i, strings.Split(v, ":")
		}
	}
	return -1, nil
}

// commonParent returns the deepest directory every dir is below, or ""
// when there is none short of "/" or a dir is relative or escaped (`\:`,
// which a split on ":" would cut).
func commonParent(dirs []string) string {
	prefix := dirs[0]
	for _, d := range dirs {
		if !strings.HasPrefix(d, "/") || strings.Contains(d, `\`) {
			return ""
		}
		prefix = commonPrefix(prefix, d)
	}
	// Back to a whole path component: "/s/1" and "/s/12" share "/s/1".
	return prefix[:strings.LastIndexByte(prefix, '/')]
}

func commonPrefix(a, b string) string {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return a[:i]
		}
	}
	return a[:n]
}

// mountIn is mount(2) with relative paths in data resolved from dir (when
// dir is not "") instead of the shim's working directory.
//
// The working directory belongs to every thread of the process (they share
// one fs_struct), and the shim runs many threads, so chdir-ing the shim
// would move every concurrent open, exec and runtime call with it. Instead
// the mount runs on a thread of its own that gives itself a private
// fs_struct with unshare(CLONE_FS) (unshare(2); allowed in a threaded
// process, unlike CLONE_NEWUSER), chdirs and mounts, and then ends
// (mr.onThread: the reaper's OnDisposableThread), so the changed cwd dies
// with it and no other goroutine ever runs there. That thread is never one that forked a child
// still running with Pdeathsig (a runtime command of another request):
// ending it would kill that child. No process is forked, so there is
// nothing to reap. containerd 2.x mounts on a locked thread too (without
// the fork-thread check); 1.6 forked a helper.
func (mr mounter) mountIn(dir, source, target, fstype string, flags uintptr, data string) error {
	if dir == "" {
		return unix.Mount(source, target, fstype, flags, data)
	}
	var err error
	mr.onThread(func() {
		if err = unix.Unshare(unix.CLONE_FS); err != nil {
			return
		}
		if err = unix.Chdir(dir); err != nil {
			err = &os.PathError{Op: "chdir", Path: dir, Err: err}
			return
		}
		err = unix.Mount(source, target, fstype, flags, data)
	})
	return err
}
