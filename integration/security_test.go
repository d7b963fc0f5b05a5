package integration

// No way in (CVE-2020-15257 and its kin): the shim listens only on a
// filesystem socket only root can reach, never on an abstract one, and
// nothing inside a container, even one sharing the host's network namespace,
// can get to it.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/leanshim/leanshim/proto/taskapi"
)

// dialProbeEnv makes the test binary, re-executed with other credentials,
// only try to connect to the unix socket named by the variable and exit
// with a dialProbe* code (see init below).
const dialProbeEnv = "LEANSHIM_TEST_DIAL_PROBE"

// rpcProbeEnv, with dialProbeEnv, makes the probe also send a Connect rpc
// for the task it names once connected: dialProbeConnected means answered.
const rpcProbeEnv = "LEANSHIM_TEST_RPC_PROBE"

const (
	dialProbeConnected = 10
	dialProbeDenied    = 11 // EACCES or EPERM
	dialProbeOther     = 12
)

func init() {
	path := os.Getenv(dialProbeEnv)
	if path == "" {
		return
	}
	c, err := net.Dial("unix", path)
	switch {
	case err == nil && os.Getenv(rpcProbeEnv) != "":
		// Connected: now a task rpc, which the server's credential check
		// must refuse unless the caller is the shim's own uid and gid.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		client := ttrpc.NewClient(c)
		_, rerr := taskapi.NewTaskClient(client).Connect(ctx, &taskapi.ConnectRequest{Id: os.Getenv(rpcProbeEnv)})
		_ = client.Close()
		if rerr != nil {
			fmt.Fprintln(os.Stderr, rerr)
			os.Exit(dialProbeDenied)
		}
		os.Exit(dialProbeConnected)
	case err == nil:
		_ = c.Close()
		os.Exit(dialProbeConnected)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		fmt.Fprintln(os.Stderr, err)
		os.Exit(dialProbeDenied)
	default:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(dialProbeOther)
	}
}

func TestNoWayIn(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id, pid := startSleeper(t, d, "sec")
	shimPid := parentPid(pid)
	if !shimAlive(shimPid) {
		t.Fatalf("parent %d of task pid %d is not the shim: %s", shimPid, pid, cmdline(shimPid))
	}
	addr := mustRead(t, filepath.Join(d.bundleDir(id), "address"))
	sock, ok := strings.CutPrefix(addr, "unix://")
	if !ok || !filepath.IsAbs(sock) {
		t.Fatalf("address file holds %q, want unix:///absolute/path", addr)
	}

	t.Run("filesystem socket, root only", func(t *testing.T) {
		fi, err := os.Lstat(sock)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 || st.Uid != 0 {
			t.Errorf("socket %s: mode %v uid %d, want a socket, 0600, uid 0", sock, fi.Mode(), st.Uid)
		}
		di, err := os.Stat(filepath.Dir(sock))
		if err != nil {
			t.Fatal(err)
		}
		dst := di.Sys().(*syscall.Stat_t)
		// 0700 as the shim makes it; containerd's own shims make the shared
		// dir 0600, which is as closed: what matters is no group/other bits.
		if !di.IsDir() || di.Mode().Perm()&0o077 != 0 || dst.Uid != 0 {
			t.Errorf("socket dir %s: mode %v uid %d, want a root-owned dir with no group/other access (0700)",
				filepath.Dir(sock), di.Mode(), dst.Uid)
		}
	})

	t.Run("no abstract socket", func(t *testing.T) {
		socks := unixSockets(t)
		inodes := socketInodes(t, shimPid)
		if len(inodes) == 0 {
			t.Fatalf("shim %d holds no sockets", shimPid)
		}
		listening := false
		for ino := range inodes {
			p, known := socks[ino]
			if !known {
				continue // not a unix socket (none expected, but not the point here)
			}
			if strings.HasPrefix(p, "@") {
				t.Errorf("shim %d holds abstract socket %q (inode %d)", shimPid, p, ino)
			}
			if p == sock {
				listening = true
			}
		}
		if !listening {
			t.Errorf("shim %d holds no socket bound to %s; its unix sockets: %v", shimPid, sock, shimSocketPaths(socks, inodes))
		}
		for ino, p := range socks {
			if strings.HasPrefix(p, "@") && (strings.Contains(p, "containerd-shim") || strings.Contains(p, "leanshim")) {
				t.Errorf("abstract socket %q (inode %d) names a shim", p, ino)
			}
		}
	})

	t.Run("uid 65534 cannot connect", func(t *testing.T) {
		exe := probeBinary(t)
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), dialProbeEnv+"="+sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		code := -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		if code != dialProbeDenied {
			t.Fatalf("probe as uid 65534: exit %d (%v), want %d (permission denied); output: %s", code, err, dialProbeDenied, out)
		}
		// The same probe as root connects: the refusal is about who asks.
		cmd = exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), dialProbeEnv+"="+sock)
		out, _ = cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != dialProbeConnected {
			t.Fatalf("probe as root: exit %d, want %d (connected); output: %s", code, dialProbeConnected, out)
		}
	})

	// Root bypasses the socket's mode, so credentials are checked again on
	// the connection (SO_PEERCRED): a caller whose gid is not the shim's is
	// refused before any rpc runs, as with containerd's own shims.
	t.Run("peer credentials checked", func(t *testing.T) {
		exe := probeBinary(t)
		probe := func(cred *syscall.Credential) (int, string) {
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), dialProbeEnv+"="+sock, rpcProbeEnv+"="+id)
			if cred != nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
			}
			out, _ := cmd.CombinedOutput()
			return cmd.ProcessState.ExitCode(), string(out)
		}
		if code, out := probe(&syscall.Credential{Uid: 0, Gid: 65534, Groups: []uint32{}}); code != dialProbeDenied {
			t.Errorf("rpc as uid 0, gid 65534: exit %d, want %d (refused); output: %s", code, dialProbeDenied, out)
		}
		if code, out := probe(nil); code != dialProbeConnected {
			t.Errorf("rpc as root: exit %d, want %d (answered); output: %s", code, dialProbeConnected, out)
		}
	})

	t.Run("host-network container cannot reach it", func(t *testing.T) {
		cid := d.newID("sechost")
		script := fmt.Sprintf(`ls %s; if test -e %s; then echo SOCKET-VISIBLE; fi; grep -c . /proc/net/unix`,
			filepath.Dir(sock), sock)
		r := d.run(t, []string{"--rm", "--net-host"}, cid, "/bin/sh", "-c", script)
		if r.err != nil || r.code != 0 {
			t.Fatalf("container: %v", r)
		}
		t.Logf("inside: %q %q", r.stdout, r.stderr)
		out := r.stdout + r.stderr
		if strings.Contains(out, "SOCKET-VISIBLE") || !strings.Contains(out, "No such file or directory") {
			t.Fatalf("want the socket dir invisible inside the container; it printed %q", out)
		}
		// It does share the host's network namespace (so it would see any
		// abstract socket): /proc/net/unix there lists the host's sockets.
		lines := strings.Fields(r.stdout)
		n, err := strconv.Atoi(lines[len(lines)-1])
		if err != nil || n < 2 {
			t.Fatalf("want /proc/net/unix in the container to list host sockets; got %q", r.stdout)
		}
		assertNoLeftovers(t, d, cid)
	})
}

// unixSockets maps inode to bound path (abstract names start with '@', ""
// for unbound) from /proc/net/unix of this network namespace.
func unixSockets(t *testing.T) map[uint64]string {
	t.Helper()
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	socks := make(map[uint64]string)
	sc := bufio.NewScanner(f)
	sc.Scan() // header: Num RefCount Protocol Flags Type St Inode Path
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		ino, err := strconv.ParseUint(fields[6], 10, 64)
		if err != nil {
			t.Fatalf("/proc/net/unix: bad inode in %q", sc.Text())
		}
		path := ""
		if len(fields) > 7 {
			path = strings.Join(fields[7:], " ")
		}
		socks[ino] = path
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return socks
}

// socketInodes returns the inodes of the sockets pid has open.
func socketInodes(t *testing.T, pid int) map[uint64]bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	inodes := make(map[uint64]bool)
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				inodes[ino] = true
			}
		}
	}
	return inodes
}

func shimSocketPaths(socks map[uint64]string, inodes map[uint64]bool) []string {
	var paths []string
	for ino := range inodes {
		if p, ok := socks[ino]; ok {
			paths = append(paths, fmt.Sprintf("%d=%q", ino, p))
		}
	}
	return paths
}

// probeBinary copies the test binary where uid 65534 may execute it (go
// test's build dir is 0700).
func probeBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(shortTempBase(), "lsprobe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "probe")
	if err := copyFile(self, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}
