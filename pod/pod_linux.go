package pod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/cgroup"
	"github.com/leanshim/leanshim/reaper"
)

// Errors of this package, for the task layer to map to containerd's classes.
var (
	ErrState   = errors.New("not in the right state")
	ErrInvalid = errors.New("invalid argument")
)

// Config is one pod, from the sandbox API's CreateSandbox.
type Config struct {
	ID     string
	Bundle string // the sandbox's bundle: the pod's files go here
	NetNS  string // the network namespace the CRI plugin made; "" for host network
	// Hostname names the pod's UTS namespace and goes in its hostname file
	// (the node's name when empty).
	Hostname     string
	DNS          *DNS   // nil: the node's resolv.conf
	CgroupParent string // the pod's cgroup; the holder gets a leaf in it
	HostNetwork  bool   // network (and with it UTS) is the node's
	HostIPC      bool
	SharePID     bool // one PID namespace for the pod, with the holder as PID 1
}

// Factory makes pods for one shim.
type Factory struct {
	r    *reaper.Reaper
	hier *cgroup.Hierarchy // nil: no cgroups on the machine
	log  *slog.Logger
}

// NewFactory returns a Factory whose holders are reaped by r and put in
// cgroups of hier (nil: none).
func NewFactory(r *reaper.Reaper, hier *cgroup.Hierarchy, log *slog.Logger) *Factory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Factory{r: r, hier: hier, log: log}
}

// State is a pod's state.
type State int

const (
	Created State = iota // files written, no holder yet
	Ready                // the holder runs
	Stopped              // the holder has exited (or the pod never started)
)

// Pod is one sandbox: its files, then its holder. Safe for concurrent use.
type Pod struct {
	f       *Factory
	cfg     Config
	created time.Time

	mu     sync.Mutex
	state  State
	pid    int
	cmd    *exec.Cmd      // the holder's, for a pidfd kill
	cgroup string         // the holder's leaf cgroup, "" if none
	parent *cgroup.Cgroup // the cgroup parent, once Cgroup has resolved it
	exit   reaper.Exit    // valid once done is closed
	done   chan struct{}  // closed on entering Stopped (stopLocked)
	watch  sync.WaitGroup
}

// Create writes the pod's files into its bundle. The holder starts with
// Start.
func (f *Factory) Create(cfg Config) (*Pod, error) {
	if cfg.ID == "" || cfg.Bundle == "" {
		return nil, fmt.Errorf("pod needs an id and a bundle: %w", ErrInvalid)
	}
	if cfg.NetNS != "" && cfg.HostNetwork {
		return nil, fmt.Errorf("pod %s: a network namespace path for a host-network pod: %w", cfg.ID, ErrInvalid)
	}
	if err := writeFiles(cfg.Bundle, cfg); err != nil {
		return nil, fmt.Errorf("pod %s files: %w", cfg.ID, err)
	}
	return &Pod{f: f, cfg: cfg, created: time.Now(), done: make(chan struct{})}, nil
}

// ID returns the pod's sandbox id.
func (p *Pod) ID() string { return p.cfg.ID }

// Cgroup returns the pod's cgroup parent, which holds its containers and
// its holder. It is resolved once and kept: containerd 2.4's CRI reads a
// pod's metrics every second.
func (p *Pod) Cgroup() (*cgroup.Cgroup, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parent != nil {
		return p.parent, nil
	}
	if p.f.hier == nil {
		return nil, fmt.Errorf("pod %s: no cgroups on this machine: %w", p.cfg.ID, cgroup.ErrNotFound)
	}
	cg, err := p.f.hier.ForPodParent(p.cfg.CgroupParent)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", p.cfg.ID, err)
	}
	p.parent = cg
	return cg, nil
}

// Start starts the holder and returns its pid.
func (p *Pod) Start() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock() // no wait below: the holder is started, not waited for
	if p.state != Created {
		return 0, fmt.Errorf("start pod %s: %w", p.cfg.ID, ErrState)
	}
	cmd, exits, err := startHolder(p.f.r, holderSpec{
		id: p.cfg.ID, netns: p.cfg.NetNS, newNet: !p.cfg.HostNetwork,
		newUTS: !p.cfg.HostNetwork, hostname: p.cfg.Hostname,
		newIPC: !p.cfg.HostIPC, newPID: p.cfg.SharePID,
	})
	if err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	p.pid, p.cmd, p.state = pid, cmd, Ready
	p.watch.Go(func() { // owned by p: ends with the holder; Shutdown joins it
		e := <-exits
		reaper.Release(cmd)
		p.exited(e)
	})
	if err := os.WriteFile(filepath.Join(p.cfg.Bundle, pidFile), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		p.f.log.Warn("pod: write holder pid", "error", err)
	}
	p.joinCgroup(pid)
	return pid, nil
}

// joinCgroup puts the holder in a leaf of the pod's cgroup parent, named
// like the pause container's cgroup would be (the sandbox id).
func (p *Pod) joinCgroup(pid int) {
	if p.f.hier == nil || p.cfg.CgroupParent == "" {
		return
	}
	leaf, err := cgroup.LeafPath(p.cfg.CgroupParent, p.cfg.ID)
	if err != nil {
		p.f.log.Warn("pod: holder stays in the shim's cgroup", "parent", p.cfg.CgroupParent, "error", err)
		return
	}
	p.cgroup = leaf // removed at Shutdown, even if the join failed half-way
	if err := p.f.hier.MakeJoin(pid, leaf); err != nil {
		p.f.log.Warn("pod: holder stays in the shim's cgroup", "parent", p.cfg.CgroupParent, "error", err)
	}
}

// exited records the holder's exit.
func (p *Pod) exited(e reaper.Exit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked(e)
}

// stopLocked is the one way into Stopped, from Created or Ready: it records
// how the pod ended and releases Wait.
func (p *Pod) stopLocked(e reaper.Exit) {
	if p.state == Stopped {
		return
	}
	p.exit, p.state = e, Stopped
	close(p.done)
}

// Status reports the pod's state, its holder's pid and, once Stopped, how it
// ended.
func (p *Pod) Status() (State, int, time.Time, reaper.Exit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state, p.pid, p.created, p.exit
}

// Wait returns the holder's exit once it has exited (or the pod was stopped
// before it started).
func (p *Pod) Wait(ctx context.Context) (reaper.Exit, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.exit, nil
	case <-ctx.Done():
		return reaper.Exit{}, ctx.Err()
	}
}

// Stop ends the holder (SIGKILL: it holds nothing to save) and waits for
// its exit; a pod never started is stopped as it is. The pod's PID
// namespace, if it has one, dies with its PID 1.
func (p *Pod) Stop(ctx context.Context) error {
	p.mu.Lock()
	switch p.state {
	case Created:
		p.stopLocked(reaper.Exit{At: time.Now()})
	case Ready:
		_ = p.cmd.Process.Signal(unix.SIGKILL) // through its pidfd: never a reused pid
	}
	p.mu.Unlock()
	_, err := p.Wait(ctx)
	return err
}

// Shutdown stops the pod and removes what it made: its files, its /dev/shm
// mount and the holder's cgroup.
func (p *Pod) Shutdown(ctx context.Context) error {
	if err := p.Stop(ctx); err != nil {
		return err
	}
	p.watch.Wait()
	p.mu.Lock()
	leaf := p.cgroup
	p.mu.Unlock()
	errs := []error{removeFiles(p.cfg.Bundle)}
	if leaf != "" && p.f.hier != nil {
		errs = append(errs, p.f.hier.RemoveLeaf(leaf))
	}
	return errors.Join(errs...)
}

// PatchSpec adds the pod's files to the spec in bundle when it is one of
// this pod's containers (CRI's sandbox-id annotation) and lacks them: the
// CRI plugin mounts them only for pause-container pods. The holder must be
// running: the spec's namespaces name its pid.
func (p *Pod) PatchSpec(bundle string) error {
	path := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var s podSpec
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if s.Annotations[sandboxIDAnnotation] != p.cfg.ID {
		return nil
	}
	p.mu.Lock()
	pid := p.pid
	p.mu.Unlock()
	mounts, changed := patchMounts(s, p.cfg.Bundle, pid, p.cfg.HostIPC)
	if !changed {
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return rewriteMounts(path, raw, mounts)
}

// Cleanup ends the holder of the pod whose bundle this is and removes the
// pod's files, for the shim's delete action: the shim that ran the pod is
// gone. The pid file is trusted only if that process is still a holder of
// this sandbox (its name and argv), so a reused pid is never killed.
// A bundle without the pid file is not a pod's (or is clean): Cleanup does
// nothing there.
func Cleanup(bundle, id string) error {
	b, err := os.ReadFile(filepath.Join(bundle, pidFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if pid, err := strconv.Atoi(string(b)); err == nil && isHolder(pid, id) {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	return removeFiles(bundle)
}

// isHolder tells whether pid is a pod holder of sandbox id.
func isHolder(pid int, id string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return string(b) == HolderArg0+"\x00"+id+"\x00"
}
