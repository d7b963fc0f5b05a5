package pod

import (
	"bytes"
	"context"
	"debug/elf"
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

// runReaper runs a reaper (not a subreaper) for the test.
func runReaper(t *testing.T) *reaper.Reaper {
	t.Helper()
	r, err := reaper.New(reaper.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// run runs a command through the test's reaper (the only wait4 caller of
// the process, so os/exec's own wait would race it) and returns its output.
func run(t *testing.T, r *reaper.Reaper, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, e, err := r.RunCmd(ctx, exec.Command(name, args...), nil, true)
	if err == nil && e.Status != 0 {
		err = fmt.Errorf("%s exited %d", name, e.Status)
	}
	return string(out), err
}

// waitNamed waits until the holder has named itself, which it does once
// its signals are blocked (holderCode); the Go holder (Hold) has no such
// point, and is given a moment.
func waitNamed(t *testing.T, pid int) {
	t.Helper()
	if holderCode == nil {
		time.Sleep(200 * time.Millisecond) // the Go runtime's start: no condition to wait on
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.TrimSpace(readProc(t, pid, "comm")) != HolderArg0 {
		if time.Now().After(deadline) {
			t.Fatalf("holder %d never named itself", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("pod tests need root (namespaces, mounts): run them as root, as make test does")
	}
}

func TestHolderELFIsWellFormed(t *testing.T) {
	if holderCode == nil {
		t.Skip("no hand-assembled holder on this architecture: Hold is used")
	}
	b := holderELF(holderMachine, holderCode)
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Version != elf.EV_CURRENT ||
		f.Type != elf.ET_EXEC || f.Machine != holderMachine || len(f.Progs) != 2 {
		t.Fatalf("class %v data %v version %v type %v machine %v progs %d", f.Class, f.Data, f.Version, f.Type, f.Machine, len(f.Progs))
	}
	if want := uint64(elfBase + 64 + 2*56); f.Entry != want {
		t.Fatalf("entry %#x, want %#x", f.Entry, want)
	}
	if p := f.Progs[0]; p.Type != elf.PT_LOAD || p.Flags != elf.PF_R|elf.PF_X || p.Filesz != uint64(len(b)) {
		t.Fatalf("load segment %+v", p.ProgHeader)
	}
	if p := f.Progs[1]; p.Type != elf.PT_GNU_STACK || p.Flags != elf.PF_R|elf.PF_W {
		t.Fatalf("stack segment %+v", p.ProgHeader)
	}
}

func readProc(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func nsOf(t *testing.T, pid int, ns string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A pod's holder has its own UTS (named), IPC and PID namespaces and the
// network namespace it was given; it is named, costs little, reaps the
// orphans of its PID namespace, and Stop ends it; Shutdown removes the
// pod's files and /dev/shm.
func TestPodLifecycle(t *testing.T) {
	needRoot(t)
	r := runReaper(t)
	bundle := t.TempDir()
	// A network namespace of our own to hand to the pod, as CRI would.
	netns := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(netns, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, r, "unshare", "--net="+netns, "true"); err != nil {
		t.Fatalf("unshare: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = unix.Unmount(netns, unix.MNT_DETACH) })

	f := NewFactory(r, nil, nil)
	p, err := f.Create(Config{ID: "pod1", Bundle: bundle, NetNS: netns, Hostname: "podhost",
		DNS: &DNS{Servers: []string{"10.0.0.10"}, Searches: []string{"svc.local"}, Options: []string{"ndots:5"}}, SharePID: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(bundle, resolvFile)); string(got) != "search svc.local\nnameserver 10.0.0.10\noptions ndots:5\n" {
		t.Fatalf("resolv.conf %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(bundle, hostnameFile)); string(got) != "podhost\n" {
		t.Fatalf("hostname file %q", got)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) }) // after a failure
	pid, err := p.Start()
	if err != nil {
		t.Fatal(err)
	}
	waitNamed(t, pid)
	self := os.Getpid()
	for _, ns := range []string{"uts", "ipc", "pid"} {
		if nsOf(t, pid, ns) == nsOf(t, self, ns) {
			t.Errorf("holder shares the shim's %s namespace", ns)
		}
	}
	st := new(unix.Stat_t)
	if err := unix.Stat(netns, st); err != nil {
		t.Fatal(err)
	}
	if got := nsOf(t, pid, "net"); got != fmt.Sprintf("net:[%d]", st.Ino) {
		t.Errorf("holder network namespace %s, want the pod's (inode %d)", got, st.Ino)
	}
	// Its hostname, from inside its UTS namespace.
	out, err := run(t, r, "nsenter", "-t", fmt.Sprint(pid), "-u", "hostname")
	if err != nil || strings.TrimSpace(out) != "podhost" {
		t.Errorf("hostname in the pod: %q %v", out, err)
	}
	if holderCode != nil {
		if rss := vmRSS(t, pid); rss > 64 {
			t.Errorf("holder RSS %d KiB, want a few pages", rss)
		}
	}
	// An orphan in the pod's PID namespace is reaped by the holder: a
	// process started into it whose parent (nsenter) exits at once.
	if out, err := run(t, r, "nsenter", "-t", fmt.Sprint(pid), "-p", "--", "sh", "-c", "sleep 1 >/dev/null 2>&1 &"); err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	children := func() string {
		out, _ := run(t, r, "ps", "-o", "stat=", "--ppid", fmt.Sprint(pid)) // exits 1 when it lists none
		return strings.TrimSpace(out)
	}
	if c := children(); c == "" {
		t.Fatal("the orphan was not re-parented to the holder")
	}
	deadline := time.Now().Add(10 * time.Second)
	for c := children(); c != ""; c = children() {
		if time.Now().After(deadline) {
			t.Fatalf("children of the holder not reaped: %q", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _, _, e := p.Status(); st != Stopped || e.Status != 137 {
		t.Errorf("after Shutdown: state %v exit %+v", st, e)
	}
	if _, err := os.Stat(filepath.Join(bundle, shmDir)); !os.IsNotExist(err) {
		t.Errorf("shm left: %v", err)
	}
	if ents, _ := os.ReadDir(bundle); len(ents) != 0 {
		t.Errorf("bundle not clean: %v", ents)
	}
}

func vmRSS(t *testing.T, pid int) int {
	t.Helper()
	for _, l := range strings.Split(readProc(t, pid, "status"), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// SIGTERM ends the holder with 0, and Wait reports it.
func TestHolderExitsOnSIGTERM(t *testing.T) {
	needRoot(t)
	r := runReaper(t)
	p, err := NewFactory(r, nil, nil).Create(Config{ID: "pod2", Bundle: t.TempDir(), HostNetwork: true, HostIPC: true})
	if err != nil {
		t.Fatal(err)
	}
	pid, err := p.Start()
	if err != nil {
		t.Fatal(err)
	}
	waitNamed(t, pid)
	if nsOf(t, pid, "net") != nsOf(t, os.Getpid(), "net") || nsOf(t, pid, "ipc") != nsOf(t, os.Getpid(), "ipc") {
		t.Error("a host-network, host-IPC pod's holder is not in the host's namespaces")
	}
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := p.Wait(ctx)
	if err != nil || e.Status != 0 {
		t.Fatalf("wait: %+v %v", e, err)
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
