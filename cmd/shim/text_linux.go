package main

import (
	"encoding/binary"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// textPages are the page ranges of the shim's own binary that are mapped
// read-only: its code, read-only data and Go's function tables. Left alone
// they would be the larger part of a shim's resident memory: package
// initialisation and start-up run code and read tables in almost every
// 64 KiB of the file, and the kernel maps 64 KiB around each page faulted
// in (fault-around), so a shim that has started has most of its 7 MiB
// binary mapped, although an idle or serving shim runs about 1.3 MiB of it
// (bench/RESULTS.md, memory map).
//
// drop unmaps those pages from the shim (madvise MADV_DONTNEED); the next
// instruction or table read that needs one faults it back from the page
// cache, where the file stays, one page per fault (faultSingly). What a
// shim then maps is what it has run since: its working set. A page mapped by no process is one the kernel can
// reclaim without unmapping it anywhere; the file itself is held in the
// page cache once per node, however many shims map it.
//
// Only read-only segments, never a writable one: dropping a private page
// that was written (data, bss, or relocated data of a position-independent
// build, which PT_GNU_RELRO marks) would put the file's bytes back in its
// place.
//
// faultSingly makes what maps back in the pages the shim runs, not the
// 64 KiB windows around them; see there.
type textPages struct {
	spans [4]struct{ start, end uintptr }
	n     int
	uffd  int // faultSingly's userfaultfd, held for the process's life; 0 (always /dev/null in a shim) if none
}

// userfaultfd constants (linux/userfaultfd.h), which golang.org/x/sys does
// not have. The ioctl numbers are the generic encoding (x86, arm64,
// riscv64, s390x); elsewhere the ioctl fails and faultSingly says so.
const (
	uffdUserModeOnly   = 1          // userfaultfd(2) flag: user-mode faults only
	uffdAPI            = 0xAA       // UFFD_API
	uffdFeatureWPAsync = 1 << 15    // UFFD_FEATURE_WP_ASYNC, Linux 6.7
	uffdioAPI          = 0xC018AA3F // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdioRegister     = 0xC020AA00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	uffdRegisterWP     = 1 << 1     // UFFDIO_REGISTER_MODE_WP
)

// ELF constants (elf.h) for the program headers read below.
const (
	ptLoad     = 1
	ptPhdr     = 6
	ptGNURelro = 0x6474e552
	pfW        = 2
	etExec     = 2
	etDyn      = 3
	phdr64Size = 56
	atPhdrTag  = 3 // AT_PHDR, auxv.h
)

// findTextPages reads the running binary's program headers from
// /proc/self/exe (the inode mapped, even if the file was replaced since)
// and returns its read-only segments as the process maps them. Anything it
// does not recognise (not 64-bit little-endian ELF, headers beyond the
// first page, no way to find the load address) gives no pages: drop then
// does nothing.
func findTextPages() textPages {
	var t textPages
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return t
	}
	defer f.Close()
	var buf [4096]byte
	n, err := f.ReadAt(buf[:], 0)
	if err != nil && err != io.EOF {
		return t
	}
	return parseTextPages(buf[:n], phdrAddr(), uintptr(os.Getpagesize()))
}

// phdrAddr is where the kernel mapped the program headers (AT_PHDR), or 0.
func phdrAddr() uintptr {
	auxv, err := unix.Auxv()
	if err != nil {
		return 0
	}
	for _, kv := range auxv {
		if kv[0] == atPhdrTag {
			return kv[1]
		}
	}
	return 0
}

// parseTextPages returns the read-only PT_LOAD segments of the ELF image
// whose first bytes are hdr, as whole pages at the addresses the process
// maps them: the load bias is atPhdr (AT_PHDR) less PT_PHDR's address; a
// fixed-address executable without PT_PHDR has none.
func parseTextPages(hdr []byte, atPhdr, page uintptr) textPages {
	var t textPages
	le := binary.LittleEndian
	if len(hdr) < 64 || string(hdr[:4]) != "\x7fELF" || hdr[4] != 2 /* ELFCLASS64 */ || hdr[5] != 1 /* ELFDATA2LSB */ {
		return t
	}
	typ := le.Uint16(hdr[16:])
	phoff, phentsize, phnum := le.Uint64(hdr[32:]), uint64(le.Uint16(hdr[54:])), uint64(le.Uint16(hdr[56:]))
	if (typ != etExec && typ != etDyn) || phentsize != phdr64Size || phoff > uint64(len(hdr)) ||
		phnum > (uint64(len(hdr))-phoff)/phdr64Size {
		return t
	}
	prog := func(i uint64) (ptype, flags uint32, vaddr, memsz uint64) {
		p := hdr[phoff+i*phdr64Size:]
		return le.Uint32(p), le.Uint32(p[4:]), le.Uint64(p[16:]), le.Uint64(p[40:])
	}
	var bias uintptr
	known := typ == etExec
	for i := range phnum {
		if ptype, _, vaddr, _ := prog(i); ptype == ptPhdr && atPhdr != 0 {
			bias, known = atPhdr-uintptr(vaddr), true
		}
	}
	if !known {
		return t
	}
	overlapsRelro := func(start, end uintptr) bool {
		for i := range phnum {
			if ptype, _, vaddr, memsz := prog(i); ptype == ptGNURelro {
				if s := uintptr(vaddr) + bias; s < end && start < s+uintptr(memsz) {
					return true
				}
			}
		}
		return false
	}
	for i := range phnum {
		ptype, flags, vaddr, memsz := prog(i)
		if ptype != ptLoad || flags&pfW != 0 || t.n == len(t.spans) {
			continue
		}
		// Whole pages only: a page the segment shares with a writable
		// neighbour is left alone.
		start := (uintptr(vaddr) + bias + page - 1) &^ (page - 1)
		end := (uintptr(vaddr) + bias + uintptr(memsz)) &^ (page - 1)
		if start >= end || overlapsRelro(start, end) {
			continue
		}
		t.spans[t.n].start, t.spans[t.n].end = start, end
		t.n++
	}
	return t
}

// faultSingly turns the kernel's fault-around off for the read-only
// segments, so that a fault maps the one page it needs instead of the up
// to 16 of its 64 KiB window that are in the page cache. After a drop, a
// shim then maps what it runs: a quarter to a half of what the windows
// held (bench/RESULTS.md, memory map; RESULTS-pods.md, a pod's shim under
// CRI, which is never idle).
//
// The kernel has no per-mapping switch for it; it skips fault-around in a
// range registered with a userfaultfd, and a registration for
// write-protection in asynchronous mode (UFFD_FEATURE_WP_ASYNC, Linux 6.7)
// is allowed on any mapping and needs nobody to serve it: a write fault
// there is resolved by the kernel, and there are none, the pages being
// read-only; nothing is ever write-protected (no UFFDIO_WRITEPROTECT), and
// missing pages fault as always. The descriptor has no reader and no
// thread; closing it would end the registration, so the shim holds it for
// its life (close-on-exec: runc and the holder never see it). A fork
// without CLONE_VM does not carry the registration to the child
// (UFFD_FEATURE_EVENT_FORK is not asked for).
//
// It is an optimisation only: where userfaultfd is missing, refused (a
// seccomp profile, no CAP_SYS_PTRACE without vm.unprivileged_userfaultfd:
// user-mode-only is asked, which needs neither) or older than Linux 6.7,
// the error says so and the pages fault in windows as before.
func (t *textPages) faultSingly() error {
	if t.n == 0 || t.uffd != 0 {
		return nil
	}
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|uffdUserModeOnly, 0, 0)
	if errno != 0 {
		return os.NewSyscallError("userfaultfd", errno)
	}
	api := struct{ api, features, ioctls uint64 }{api: uffdAPI, features: uffdFeatureWPAsync}
	if err := uffdIoctl(fd, uffdioAPI, unsafe.Pointer(&api)); err != nil {
		unix.Close(int(fd))
		return err
	}
	for _, s := range t.spans[:t.n] {
		reg := struct{ start, len, mode, ioctls uint64 }{uint64(s.start), uint64(s.end - s.start), uffdRegisterWP, 0}
		if err := uffdIoctl(fd, uffdioRegister, unsafe.Pointer(&reg)); err != nil {
			unix.Close(int(fd)) // also ends the registrations made so far
			return err
		}
	}
	t.uffd = int(fd)
	return nil
}

// uffdIoctl runs one userfaultfd ioctl on arg.
func uffdIoctl(fd, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg)); errno != 0 {
		return os.NewSyscallError("userfaultfd ioctl", errno)
	}
	return nil
}

// drop unmaps the read-only pages from the shim; see textPages. It
// allocates nothing and cannot fail in a way that matters: a page it
// could not drop stays mapped.
func (t *textPages) drop() {
	for _, s := range t.spans[:t.n] {
		_, _, _ = unix.Syscall(unix.SYS_MADVISE, s.start, s.end-s.start, unix.MADV_DONTNEED)
	}
}
