// Package integration is leanshim's black-box test suite. It starts private
// containerd 1.6 daemons, drives them with the real ctr, and lets containerd
// launch the shim named by LEANSHIM_TEST_RUNTIME, which runs real runc. It
// imports nothing from the shim: the only contract it knows is containerd's.
//
// Run as root after `make build`:
//
//	go test -count=1 -v ./integration/
//
// Environment:
//
//	LEANSHIM_BIN           absolute path of the directory holding containerd-shim-lean-v2
//	                       (default: ../bin from this package, i.e. the repository's bin/)
//	LEANSHIM_TEST_RUNTIME  runtime type under test (default io.containerd.lean.v2);
//	                       io.containerd.runc.v2 runs the same tests against containerd's own shim
//	LEANSHIM_CONTAINERD24  directory of containerd 2.4.2's containerd, ctr and
//	                       containerd-shim-runc-v2 (default ../.cache/containerd-2.4.2/bin,
//	                       where `make containerd24` puts them); only the tests that
//	                       run containerd 2.4 need it (every_containerd_test.go)
//	LEANSHIM_NERDCTL       nerdctl binary (default ../.cache/bin/nerdctl, where
//	                       scripts/nerdctl.sh puts it); only TestNerdctl needs it
//
// Missing prerequisites (root, containerd, ctr, runc, a static /usr/bin/busybox,
// the shim binary) make the whole package FAIL, never skip: a skipped
// integration test must not read as a passing one. scripts/deps.sh installs them.
package integration

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	defaultRuntime = "io.containerd.lean.v2"
	busyboxPath    = "/usr/bin/busybox"
)

// suiteConfig is what TestMain finds out once; it is read-only while tests run.
type suiteConfig struct {
	runtime    string // containerd runtime type under test, e.g. io.containerd.lean.v2
	shimName   string // binary containerd resolves for runtime: containerd-shim-<name>-<ver>
	shimPath   string // where containerd will find shimName (first match on its PATH)
	shimDir    string // LEANSHIM_BIN, prepended to each daemon's PATH
	containerd string // absolute path of containerd
	ctr        string // absolute path of ctr
	tmp        string // suite temp dir, removed after the run
	rootfs     string // busybox rootfs shared read-write by every container
}

var (
	// suite is set by TestMain before m.Run and never written afterwards.
	suite suiteConfig
	// shared is the package's daemon, started by TestMain and stopped after m.Run.
	// Tests reach it through sharedDaemon(t).
	shared *daemon
)

func TestMain(m *testing.M) {
	if isSubreaper() { // re-executed by a daemon started withSubreaper
		os.Exit(runSubreaper(os.Args[1:]))
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if err := setupSuite(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: FAIL: %v\n", err)
		return 1
	}
	defer os.RemoveAll(suite.tmp)
	fmt.Fprintf(os.Stderr, "integration: runtime %s, shim %s\n", suite.runtime, suite.shimPath)

	d, err := newDaemon()
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: FAIL: shared containerd: %v\n", err)
		return 1
	}
	shared = d
	code := m.Run()
	if err := d.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: FAIL: stopping shared containerd: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// setupSuite checks every prerequisite, then builds the rootfs. Each error
// names what is missing and how to get it.
func setupSuite() error {
	if os.Geteuid() != 0 {
		return errors.New("integration tests must run as root (containerd and runc need it): sudo -E go test ./integration/")
	}
	var err error
	if suite.containerd, err = exec.LookPath("containerd"); err != nil {
		return fmt.Errorf("containerd not found (run scripts/deps.sh): %w", err)
	}
	if suite.ctr, err = exec.LookPath("ctr"); err != nil {
		return fmt.Errorf("ctr not found (run scripts/deps.sh): %w", err)
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return fmt.Errorf("runc not found (run scripts/deps.sh): %w", err)
	}
	if err := checkStatic(busyboxPath); err != nil {
		return fmt.Errorf("%w (install busybox-static: scripts/deps.sh)", err)
	}
	if err := locateShim(); err != nil {
		return err
	}
	if err := freeUnifiedHierarchy(); err != nil {
		return fmt.Errorf("freeing the cgroup2 mount of hugetlb for crun: %w", err)
	}
	if suite.tmp, err = os.MkdirTemp(shortTempBase(), "lst"); err != nil {
		return err
	}
	suite.rootfs = filepath.Join(suite.tmp, "rootfs")
	if err := buildRootfs(suite.rootfs); err != nil {
		_ = os.RemoveAll(suite.tmp)
		return fmt.Errorf("building busybox rootfs: %w", err)
	}
	return nil
}

// locateShim resolves the runtime under test to a binary the way containerd
// 1.6 does (last two dot-separated parts of the type, then PATH), with
// LEANSHIM_BIN first on that PATH.
func locateShim() error {
	suite.runtime = os.Getenv("LEANSHIM_TEST_RUNTIME")
	if suite.runtime == "" {
		suite.runtime = defaultRuntime
	}
	name, err := shimBinaryName(suite.runtime)
	if err != nil {
		return err
	}
	suite.shimName = name

	dir := os.Getenv("LEANSHIM_BIN")
	if dir == "" {
		dir = filepath.Join("..", "bin")
	}
	if suite.shimDir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if p := filepath.Join(suite.shimDir, name); isExecutable(p) {
		suite.shimPath = p
		return nil
	}
	if p, err := exec.LookPath(name); err == nil {
		suite.shimPath = p
		return nil
	}
	return fmt.Errorf("shim binary %s for runtime %s not found in LEANSHIM_BIN=%s nor in PATH: run `make build` first",
		name, suite.runtime, suite.shimDir)
}

// shimBinaryName maps a runtime type to containerd's binary name:
// io.containerd.lean.v2 → containerd-shim-lean-v2 (PROTOCOL.md §1.1).
func shimBinaryName(runtime string) (string, error) {
	parts := strings.Split(runtime, ".")
	if len(parts) < 2 || parts[len(parts)-2] == "" || parts[len(parts)-1] == "" {
		return "", fmt.Errorf("invalid runtime type %q: want a.b.<name>.<version>", runtime)
	}
	return fmt.Sprintf("containerd-shim-%s-%s", parts[len(parts)-2], parts[len(parts)-1]), nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// checkStatic fails if path is missing or dynamically linked: the rootfs has
// no libc, so a dynamic busybox could not start inside a container.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("busybox: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}

// shortTempBase returns a temp dir short enough for unix socket paths
// (sun_path holds 108 bytes) below it.
func shortTempBase() string {
	if dir := os.TempDir(); len(dir) <= 40 {
		return dir
	}
	return "/tmp"
}

// buildRootfs makes a minimal busybox root: bin/busybox, one symlink per
// applet, the mount points runc expects, and an etc/passwd for uid 0.
func buildRootfs(dir string) error {
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	if err := copyFile(busyboxPath, filepath.Join(bin, "busybox"), 0o755); err != nil {
		return err
	}
	list, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue // a symlink named busybox would replace the binary itself
		}
		if err := os.Symlink("busybox", filepath.Join(bin, applet)); err != nil {
			return err
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "etc", "root", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	files := []struct{ name, content string }{
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"},
		{"etc/group", "root:x:0:\n"},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, perm os.FileMode) (retErr error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	defer func() {
		if err := out.Close(); retErr == nil {
			retErr = err
		}
	}()
	_, err = io.Copy(out, in)
	return err
}
