package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// exeMappings returns the test binary's read-only mappings from
// /proc/self/maps: what findTextPages must find.
func exeMappings(t *testing.T) map[[2]uintptr]bool {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[[2]uintptr]bool{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		fl := strings.Fields(s.Text())
		if len(fl) < 6 || fl[5] != exe || strings.Contains(fl[1], "w") {
			continue
		}
		lo, hi, _ := strings.Cut(fl[0], "-")
		a, _ := strconv.ParseUint(lo, 16, 64)
		b, _ := strconv.ParseUint(hi, 16, 64)
		got[[2]uintptr{uintptr(a), uintptr(b)}] = true
	}
	return got
}

// presentPages counts the pages of [start, end) mapped in this process
// (/proc/self/pagemap, bit 63).
func presentPages(t *testing.T, start, end uintptr) int {
	t.Helper()
	page := uintptr(os.Getpagesize())
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, (end-start)/page*8)
	if _, err := f.ReadAt(buf, int64(start/page*8)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := 0; i < len(buf); i += 8 {
		if binary.LittleEndian.Uint64(buf[i:])>>63 == 1 {
			n++
		}
	}
	return n
}

// The running binary's read-only segments are found where the kernel
// mapped them, and dropping them unmaps most of their pages while the
// process goes on running code and reading tables from them.
func TestTextPagesDrop(t *testing.T) {
	text := findTextPages()
	if text.n == 0 {
		t.Fatal("no read-only segment found in the test binary")
	}
	maps := exeMappings(t)
	before := 0
	for _, s := range text.spans[:text.n] {
		// The kernel maps a segment's partial last page; the span leaves it.
		page := uintptr(os.Getpagesize())
		if !maps[[2]uintptr{s.start, s.end}] && !maps[[2]uintptr{s.start, s.end + page}] {
			t.Fatalf("span %#x-%#x is not one of the binary's read-only mappings %v", s.start, s.end, maps)
		}
		before += presentPages(t, s.start, s.end)
	}
	text.drop()
	after := 0
	for _, s := range text.spans[:text.n] {
		after += presentPages(t, s.start, s.end)
	}
	// Reading pagemap runs code and tables again, so some pages come back.
	if after >= before/2 {
		t.Fatalf("%d pages mapped after drop, %d before: expected fewer than half", after, before)
	}
	if _, err := strconv.Atoi("12345"); err != nil { // code and tables still work
		t.Fatal(err)
	}
}

// elfHeader builds a 64-bit little-endian ELF header of type typ followed
// by program headers {type, flags, vaddr, memsz}.
func elfHeader(typ uint16, progs ...[4]uint64) []byte {
	le := binary.LittleEndian
	b := make([]byte, 64+len(progs)*phdr64Size)
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], typ)
	le.PutUint64(b[32:], 64)
	le.PutUint16(b[54:], phdr64Size)
	le.PutUint16(b[56:], uint16(len(progs)))
	for i, p := range progs {
		q := b[64+i*phdr64Size:]
		le.PutUint32(q, uint32(p[0]))
		le.PutUint32(q[4:], uint32(p[1]))
		le.PutUint64(q[16:], p[2])
		le.PutUint64(q[40:], p[3])
	}
	return b
}

// Only whole pages of read-only PT_LOAD segments, at the load bias, and
// never one under PT_GNU_RELRO (written by relocation); anything not
// understood gives nothing to drop.
func TestParseTextPages(t *testing.T) {
	const page = 0x1000
	const r, rx, rw = 4, 5, 6
	for _, tc := range []struct {
		name   string
		hdr    []byte
		atPhdr uintptr
		want   [][2]uintptr
	}{
		{"fixed address", elfHeader(etExec,
			[4]uint64{ptPhdr, r, 0x400040, 0x150},
			[4]uint64{ptLoad, rx, 0x400000, 0x43e911},
			[4]uint64{ptLoad, r, 0x83f000, 0x4ed198},
			[4]uint64{ptLoad, rw, 0xd2d000, 0x205d620}),
			0x400040, [][2]uintptr{{0x400000, 0x83e000}, {0x83f000, 0xd2c000}}},
		{"position independent, relro left alone", elfHeader(etDyn,
			[4]uint64{ptPhdr, r, 0x40, 0x150},
			[4]uint64{ptLoad, rx, 0x0, 0x3000},
			[4]uint64{ptLoad, r, 0x3800, 0x2800},
			[4]uint64{ptLoad, r, 0x8000, 0x2000},
			[4]uint64{ptGNURelro, r, 0x8000, 0x1000}),
			0x7f0000000040, [][2]uintptr{{0x7f0000000000, 0x7f0000003000}, {0x7f0000004000, 0x7f0000006000}}},
		{"position independent without PT_PHDR", elfHeader(etDyn, [4]uint64{ptLoad, rx, 0x0, 0x3000}), 0x7f0000000040, nil},
		{"no AT_PHDR", elfHeader(etDyn, [4]uint64{ptPhdr, r, 0x40, 0x150}, [4]uint64{ptLoad, rx, 0x0, 0x3000}), 0, nil},
		{"not ELF", []byte("#!/bin/sh\n" + strings.Repeat(" ", 100)), 0x400040, nil},
		{"truncated headers", elfHeader(etExec, [4]uint64{ptLoad, rx, 0x400000, 0x3000})[:100], 0x400040, nil},
		{"32-bit", func() []byte { b := elfHeader(etExec, [4]uint64{ptLoad, rx, 0x400000, 0x3000}); b[4] = 1; return b }(), 0x400040, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseTextPages(tc.hdr, tc.atPhdr, page)
			if got.n != len(tc.want) {
				t.Fatalf("%d spans %v, want %v", got.n, got.spans[:got.n], tc.want)
			}
			for i, w := range tc.want {
				if s := got.spans[i]; s.start != w[0] || s.end != w[1] {
					t.Errorf("span %d = %#x-%#x, want %#x-%#x", i, s.start, s.end, w[0], w[1])
				}
			}
		})
	}
}

// After faultSingly, a fault in the binary's read-only pages maps that page
// alone, not the kernel's fault-around window (64 KiB here) around it.
func TestTextPagesFaultSingly(t *testing.T) {
	text := findTextPages()
	if text.n == 0 {
		t.Fatal("no read-only segment found in the test binary")
	}
	const window = 64 << 10
	page := uintptr(os.Getpagesize())
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	// touch drops the binary's pages, finds a 64 KiB window of a read-only
	// span that nothing maps back meanwhile, makes the kernel read one byte
	// in its middle (write(2) from it into a pipe: no pointer made from an
	// integer), and returns how many of the window's pages that mapped.
	used := map[uintptr]bool{}
	touch := func() int {
		text.drop()
		for _, s := range text.spans[:text.n] {
			for win := (s.start + window - 1) &^ (window - 1); win+window <= s.end; win += window {
				if used[win] || presentPages(t, win, win+window) != 0 {
					continue
				}
				used[win] = true
				if n, _, errno := unix.Syscall(unix.SYS_WRITE, w.Fd(), win+8*page, 1); errno != 0 || n != 1 {
					t.Fatalf("write from %#x: %d, %v", win+8*page, n, errno)
				}
				mapped := presentPages(t, win, win+window)
				if _, err := r.Read(make([]byte, 1)); err != nil {
					t.Fatal(err)
				}
				return mapped
			}
		}
		t.Fatal("no read-only 64 KiB window left unmapped after a drop")
		return 0
	}

	around := touch()
	err = text.faultSingly()
	registered := err == nil
	if errors.Is(err, unix.EBUSY) {
		// Another test in this binary registered the pages first (newSettler).
		err = nil
	}
	if err != nil {
		t.Fatalf("faultSingly: %v", err)
	}
	single := touch()
	t.Logf("one read mapped %d pages of its window before faultSingly, %d after", around, single)
	if registered && around < 4 {
		t.Fatalf("one read mapped %d pages of its window before faultSingly: this kernel's fault-around is off, so the test cannot tell", around)
	}
	if single != 1 {
		t.Fatalf("one read mapped %d pages of its 64 KiB window after faultSingly, want 1", single)
	}
	if _, err := strconv.Atoi("12345"); err != nil { // code and tables still work
		t.Fatal(err)
	}
}
