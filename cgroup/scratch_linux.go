package cgroup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setPath makes s.path dir/name, NUL-terminated; name "" is dir itself.
// Unlike filepath.Join it does not clean the path: the kernel resolves
// "a//b" and "a/./b" as Join would, and the paths come from mountinfo.
func (s *scratch) setPath(dir, name string) {
	p := append(s.path[:0], dir...)
	if name != "" {
		if dir != "" {
			p = append(p, '/')
		}
		p = append(p, name...)
	}
	s.path = append(p, 0)
}

// open opens dir/name with openat(2). It passes s.path to the kernel as it
// is: unix.Open would copy the path into a new NUL-terminated slice on
// every call. It returns the bare errno, so that an absent file, common
// and expected, costs no error value; see pathError.
func (s *scratch) open(dir, name string, flags int) (int, unix.Errno) {
	s.setPath(dir, name)
	cwd := unix.AT_FDCWD // a variable: Go rejects a negative constant as uintptr
	for {
		fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(cwd),
			uintptr(unsafe.Pointer(&s.path[0])), uintptr(flags|unix.O_CLOEXEC), 0, 0, 0)
		if errno != unix.EINTR {
			return int(fd), errno
		}
	}
}

// pathError is the error os.Open or os.File.Read would return.
func pathError(op, dir, name string, errno unix.Errno) error {
	return &fs.PathError{Op: op, Path: filepath.Join(dir, name), Err: errno}
}

// isDir reports whether p is a directory, following symlinks as os.Stat
// does; O_PATH needs no read permission, as stat(2) needs none.
func (s *scratch) isDir(p string) bool {
	fd, errno := s.open(p, "", unix.O_PATH|unix.O_DIRECTORY)
	if errno != 0 {
		return false
	}
	_ = unix.Close(fd) // O_PATH: nothing to flush
	return true
}

// read returns the content of dir/name, valid until s reads again; nil, nil
// when absent. An existing empty file gives an empty, non-nil slice, as
// os.ReadFile does.
func (s *scratch) read(dir, name string) ([]byte, error) {
	fd, errno := s.open(dir, name, unix.O_RDONLY)
	if errno != 0 {
		if absent(errno) {
			return nil, nil
		}
		return nil, pathError("open", dir, name, errno)
	}
	defer unix.Close(fd) // read-only, nothing to flush
	n := 0
	for {
		if n == len(s.buf) {
			// Grown and kept: the next call reads this file in one go.
			s.buf = append(s.buf, make([]byte, len(s.buf))...)
		}
		m, err := unix.Read(fd, s.buf[n:])
		errno, _ := err.(unix.Errno) // unix.Read returns a bare Errno
		switch {
		case errno == unix.EINTR:
			continue
		case err != nil && absent(err):
			// A cgroup removed while it is read fails with ENODEV;
			// readFile reported that as absent too.
			return nil, nil
		case err != nil:
			return nil, pathError("read", dir, name, errno)
		case m == 0:
			return s.buf[:n], nil
		}
		n += m
	}
}

// hugePageSizes lists the <size> of dir's hugetlb.<size><suffix> files,
// sorted, into s.sizes. It reads the directory with getdents64(2) into s.buf
// rather than os.ReadDir, which allocates a DirEntry per file; it lists on
// every call because on v2 the files come and go with the parent's
// cgroup.subtree_control.
func (s *scratch) hugePageSizes(dir, suffix string) ([]string, error) {
	fd, errno := s.open(dir, "", unix.O_RDONLY|unix.O_DIRECTORY)
	if errno != 0 {
		return nil, pathError("open", dir, "", errno)
	}
	defer unix.Close(fd) // read-only, nothing to flush
	s.sizes = s.sizes[:0]
	for {
		n, err := unix.Getdents(fd, s.buf)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return nil, &fs.PathError{Op: "readdirent", Path: dir, Err: err}
		case n == 0:
			slices.Sort(s.sizes)
			return s.sizes, nil
		}
		s.addDirents(s.buf[:n], suffix)
	}
}

// addDirents calls addSize with each name in buf, a run of linux_dirent64
// records (getdents64(2)).
func (s *scratch) addDirents(buf []byte, suffix string) {
	const nameOff = int(unsafe.Offsetof(unix.Dirent{}.Name))
	const reclenOff = int(unsafe.Offsetof(unix.Dirent{}.Reclen))
	for len(buf) >= nameOff {
		reclen := int(binary.NativeEndian.Uint16(buf[reclenOff:]))
		if reclen < nameOff || reclen > len(buf) {
			return // cannot happen: the kernel writes whole records
		}
		name := buf[nameOff:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		s.addSize(name, suffix)
		buf = buf[reclen:]
	}
}
