package main

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

const busyboxPath = "/usr/bin/busybox"

// shim is one side of the comparison.
type shim struct {
	key     string // short name used in container ids: "lean", "runc"
	label   string // column header
	runtime string // containerd runtime type
	binary  string // absolute path of the binary containerd resolves for runtime
}

// name is the binary's file name: containerd-shim-<name>-<version>.
func (s shim) name() string { return filepath.Base(s.binary) }

// bench is one run: its private files, its containerd, the two shims and
// the results so far. Phases run one at a time; only ids is used from
// several goroutines.
type bench struct {
	cfg    config
	log    io.Writer
	tmp    string // private dir (short, on disk): bin/, rootfs/, the daemon's dirs
	logDir string // where file:// logs go (tmpfs when there is one)
	rootfs string // busybox rootfs shared by every container
	shims  [2]shim
	d      *daemon
	res    *results
	ids    atomic.Int64 // for newID
}

// setup checks prerequisites, builds the private shim and rootfs and starts
// containerd. On error nothing is left behind.
func setup(ctx context.Context, cfg config, logw io.Writer) (_ *bench, retErr error) {
	repo, err := absRepo(cfg.repo)
	if err != nil {
		return nil, err
	}
	tools, err := findTools(repo, cfg.containerd)
	if err != nil {
		return nil, err
	}
	// Below /tmp, not TMPDIR: unix socket paths must stay short, and the shim
	// binary must not live on tmpfs, whose pages never count as clean.
	tmp, err := os.MkdirTemp("/tmp", "lsb")
	if err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, log: logw, tmp: tmp, rootfs: filepath.Join(tmp, "rootfs")}
	defer func() {
		if retErr != nil {
			_ = b.teardown()
		}
	}()
	b.logDir = tmp
	if dir, err := os.MkdirTemp("/dev/shm", "lsb"); err == nil {
		b.logDir = dir
	}
	bin := filepath.Join(tmp, "bin")
	lean := filepath.Join(bin, "containerd-shim-lean-v2")
	if err := b.installShim(ctx, repo, lean); err != nil {
		return nil, err
	}
	path := bin + string(os.PathListSeparator)
	if tools.dir != "" {
		path += tools.dir + string(os.PathListSeparator)
	}
	path += os.Getenv("PATH")
	runcShim, err := lookPathIn("containerd-shim-runc-v2", path)
	if err != nil {
		return nil, err
	}
	b.shims = [2]shim{
		{key: "lean", label: "leanshim", runtime: "io.containerd.lean.v2", binary: lean},
		{key: "runc", label: "runc-v2", runtime: "io.containerd.runc.v2", binary: runcShim},
	}
	if err := buildRootfs(b.rootfs); err != nil {
		return nil, fmt.Errorf("busybox rootfs: %w", err)
	}
	b.res = newResults(cfg, machineInfo(repo, tools, b.shims))
	b.logf("containerd %s, leanshim %s, runc-v2 %s", tools.containerd, lean, runcShim)
	if b.d, err = startDaemon(ctx, filepath.Join(tmp, "d"), tools, path); err != nil {
		return nil, err
	}
	return b, nil
}

// tools are the external binaries the bench drives.
type tools struct {
	dir        string // containerd 2.4's bin dir, put first on the daemon's PATH; "" for 1.6
	containerd string
	ctr        string
	runc       string
}

func findTools(repo, version string) (tools, error) {
	var t tools
	var err error
	if version == "2.4" {
		t.dir = envOr("LEANSHIM_CONTAINERD24", filepath.Join(repo, ".cache", "containerd-2.4.2", "bin"))
		for _, name := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
			if !isExecutable(filepath.Join(t.dir, name)) {
				return t, fmt.Errorf("containerd 2.4.2: %s not found in %s: run `make containerd24` first", name, t.dir)
			}
		}
		t.containerd, t.ctr = filepath.Join(t.dir, "containerd"), filepath.Join(t.dir, "ctr")
	} else {
		if t.containerd, err = exec.LookPath("containerd"); err != nil {
			return t, fmt.Errorf("containerd not found (apt-get install containerd, or scripts/deps.sh): %w", err)
		}
		if t.ctr, err = exec.LookPath("ctr"); err != nil {
			return t, fmt.Errorf("ctr not found (scripts/deps.sh): %w", err)
		}
	}
	if t.runc, err = exec.LookPath("runc"); err != nil {
		return t, fmt.Errorf("runc not found (scripts/deps.sh): %w", err)
	}
	return t, checkStatic(busyboxPath)
}

// installShim builds cmd/shim as `make build` does, or copies -shim, into dst.
func (b *bench) installShim(ctx context.Context, repo, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if b.cfg.shimBin != "" {
		return copyFile(b.cfg.shimBin, dst, 0o755)
	}
	version := "bench"
	if out, err := exec.Command("git", "-C", repo, "describe", "--always", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go not found on PATH, needed to build cmd/shim (or pass -shim): %w", err)
	}
	b.logf("building %s from %s (%s)", dst, repo, version)
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version,
		"-o", dst, "./cmd/shim")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOEXPERIMENT="+shimGoExperiment(goBin))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/shim: %w\n%s", err, out)
	}
	return nil
}

// teardown stops everything setup and the phases started and removes the
// private dirs. It is safe on a partly set-up bench.
func (b *bench) teardown() error {
	var errs []error
	if b.d != nil {
		errs = append(errs, b.d.stop(b.allShimNames()))
	}
	reapShims()
	if b.logDir != "" && b.logDir != b.tmp {
		errs = append(errs, os.RemoveAll(b.logDir))
	}
	if b.tmp != "" {
		if m := mountsUnder(b.tmp); len(m) > 0 {
			// Never RemoveAll across a mount: it would empty the mounted tree.
			errs = append(errs, fmt.Errorf("mounts left under %s, not removed: %s", b.tmp, strings.Join(m, " ")))
		} else {
			errs = append(errs, os.RemoveAll(b.tmp))
		}
	}
	return errors.Join(errs...)
}

func (b *bench) allShimNames() []string {
	var names []string
	for _, s := range b.shims {
		if s.binary != "" {
			names = append(names, s.name())
		}
	}
	return names
}

// clearNamespace removes whatever a phase left in the namespace and reaps
// the shims that exited meanwhile.
func (b *bench) clearNamespace() error {
	left := b.d.purge()
	reapShims()
	if len(left) > 0 {
		return fmt.Errorf("had to remove %s", strings.Join(left, ", "))
	}
	return nil
}

// newID returns a container id unique in this run, e.g. "idle-lean-3".
func (b *bench) newID(prefix string, s shim) string {
	return prefix + "-" + s.key + "-" + strconv.FormatInt(b.ids.Add(1), 10)
}

// order returns the shims in the order round r runs them: lean first on
// even rounds, runc-v2 first on odd ones, so drift during a run (page
// cache, other load) falls on both alike.
func (b *bench) order(r int) []shim {
	if r%2 == 0 {
		return []shim{b.shims[0], b.shims[1]}
	}
	return []shim{b.shims[1], b.shims[0]}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// lookPathIn is exec.LookPath over the given PATH: the binary containerd,
// started with that PATH, will run for name.
func lookPathIn(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if p := filepath.Join(dir, name); dir != "" && isExecutable(p) {
			return filepath.Abs(p)
		}
	}
	return "", fmt.Errorf("%s not found on containerd's PATH %s (scripts/deps.sh installs it)", name, path)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// checkStatic fails unless path is a static binary: the rootfs has no libc.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("busybox (install busybox-static): %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked: install busybox-static", path)
		}
	}
	return nil
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
	if err := os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "etc", "group"), []byte("root:x:0:\n"), 0o644)
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

// mountsUnder lists the mount points at or below dir, from /proc/self/mountinfo.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var mounts []string
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	return mounts
}

// shimGoExperiment is the GOEXPERIMENT the Makefile builds the shim with
// (SHIM_GOEXPERIMENT): the previous collector, or "" once the Go release no
// longer knows it.
func shimGoExperiment(goBin string) string {
	cmd := exec.Command(goBin, "env", "GOEXPERIMENT")
	cmd.Env = append(os.Environ(), "GOEXPERIMENT=nogreenteagc")
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
