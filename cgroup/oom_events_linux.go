package cgroup

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// registerV1 returns a non-blocking eventfd the kernel signals on every OOM
// of the memory cgroup in dir: cgroup.event_control takes
// "<eventfd> <fd of memory.oom_control>" (cgroup-v1/memory.rst, "OOM
// Control"). The oom_control fd may be closed once written.
func registerV1(dir string) (_ int, retErr error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("eventfd: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = unix.Close(efd)
		}
	}()
	oc, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		return -1, err
	}
	defer oc.Close() // read-only
	ctl, err := os.OpenFile(filepath.Join(dir, "cgroup.event_control"), os.O_WRONLY, 0)
	if err != nil {
		return -1, err
	}
	if _, err := fmt.Fprintf(ctl, "%d %d", efd, oc.Fd()); err != nil {
		_ = ctl.Close()
		return -1, fmt.Errorf("register oom eventfd: %w", err)
	}
	if err := ctl.Close(); err != nil {
		return -1, err
	}
	return efd, nil
}

// checkV1 reads the eventfd and reports whether it counted an OOM. Removing
// the cgroup also signals it, once, after the directory is gone
// (memcg_event_remove in mm/memcontrol.c): with the directory gone one count
// is that removal, not an OOM.
func checkV1(efd int, dir string) bool {
	var buf [8]byte
	if n, err := unix.Read(efd, buf[:]); err != nil || n != len(buf) {
		return false // EAGAIN: nothing counted
	}
	count := binary.NativeEndian.Uint64(buf[:])
	if isDir(dir) {
		return count > 0
	}
	return count > 1
}

// registerV2 returns a non-blocking inotify instance watching dir's
// memory.events for changes, and the oom_kill count before the watch began,
// so a kill in between is still new to the first check.
func registerV2(dir string) (_ int, seen uint64, retErr error) {
	seen, _ = oomKills(dir) // absent or unreadable: 0, any kill is new
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return -1, 0, fmt.Errorf("inotify_init1: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Join(dir, "memory.events"), unix.IN_MODIFY); err != nil {
		_ = unix.Close(fd)
		return -1, 0, fmt.Errorf("inotify_add_watch memory.events: %w", err)
	}
	return fd, seen, nil
}

// checkV2 drains the inotify instance and reports whether memory.events'
// oom_kill went above seen (cgroup-v2.rst: "oom_kill: the number of
// processes belonging to this cgroup killed by any kind of OOM killer"),
// returning the new count. A missing or half-written file changes nothing.
func checkV2(fd int, dir string, seen uint64) (uint64, bool) {
	var buf [4096]byte
	for {
		if n, err := unix.Read(fd, buf[:]); err != nil || n <= 0 {
			break // EAGAIN: drained
		}
	}
	kills, ok := oomKills(dir)
	if !ok || kills <= seen {
		return seen, false
	}
	return kills, true
}

// oomKills reads oom_kill from dir's memory.events; false when the file
// cannot be read. A file or key that is absent counts 0 kills, never more
// than a count already seen.
func oomKills(dir string) (uint64, bool) {
	s := getScratch()
	defer putScratch(s)
	var kills uint64
	if _, err := s.walkKV(dir, "memory.events", []uintStep{{"oom_kill", &kills}}); err != nil {
		return 0, false
	}
	return kills, true
}
