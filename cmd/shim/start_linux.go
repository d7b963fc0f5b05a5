package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/cgroup"
	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/bootstrap"
	"github.com/leanshim/leanshim/task"
)

// maxStdin caps what start reads from containerd (options are small).
const maxStdin = 10 << 20

// startParams is what start learns from its stdin.
type startParams struct {
	bootstrap bool           // containerd ≥ 2.3: answer with a BootstrapResult
	options   *gogotypes.Any // runtime options, if any
	socketDir string
}

// readStartParams tells containerd 2.3+'s BootstrapParams from 1.6's bare
// options Any (PROTOCOL.md §1.5): an Any also decodes as BootstrapParams, so
// bootstrap mode needs instance_id and namespace to match the flags.
func readStartParams(cfg config, stdin io.Reader) (startParams, error) {
	p := startParams{socketDir: defaultSocketDir}
	b, err := io.ReadAll(io.LimitReader(stdin, maxStdin))
	if err != nil {
		return p, fmt.Errorf("read stdin: %w", err)
	}
	if len(b) == 0 {
		return p, nil
	}
	var bp bootstrap.BootstrapParams
	if proto.Unmarshal(b, &bp) == nil && bp.InstanceId == cfg.id && bp.Namespace == cfg.namespace {
		p.bootstrap = true
		if dir := bp.GetSocketDir(); dir != "" {
			p.socketDir = dir
		}
		for _, ext := range bp.Extensions {
			if ext.Value != nil {
				p.options = ext.Value
				break
			}
		}
		return p, nil
	}
	var a gogotypes.Any
	if err := proto.Unmarshal(b, &a); err != nil {
		return p, fmt.Errorf("stdin is neither bootstrap params nor an options Any: %w", err)
	}
	p.options = &a
	return p, nil
}

// start is the "start" action: make the socket, spawn the serving daemon on
// it, and print its address. containerd reads stdout and stderr together
// (CombinedOutput) and waits until both close, so nothing else may be
// written there and the daemon must not inherit them.
func start(cfg config, stdin io.Reader, stdout io.Writer) error {
	if cfg.id == "" || cfg.namespace == "" || cfg.address == "" {
		return errors.New("start needs -id, -namespace and -address")
	}
	params, err := readStartParams(cfg, stdin)
	if err != nil {
		return err
	}
	bundle, err := os.Getwd() // containerd runs start in the bundle
	if err != nil {
		return err
	}
	address := socketAddress(params.socketDir, cfg.address, cfg.namespace, groupID(bundle, cfg.id))
	l, err := listen(address)
	if errors.Is(err, errShimRunning) {
		// Another container of the same group: its shim serves this one.
		if err := process.WriteAddress(bundle, address); err != nil {
			return err
		}
		return printAddress(stdout, params, address)
	}
	if err != nil {
		return err
	}
	defer l.Close()
	if err := process.WriteAddress(bundle, address); err != nil {
		_ = os.Remove(socketPath(address))
		return err
	}
	if err := spawnDaemon(cfg, bundle, l, params); err != nil {
		_ = os.Remove(socketPath(address))
		return err
	}
	return printAddress(stdout, params, address)
}

// taskAPIVersion is the task API version start advertises in bootstrap mode.
// 3 means containerd.task.v3.Task (served next to v2), and tells containerd
// 2.x that this shim serves several containers: it then sends the containers
// of a CRI pod straight to the pod's shim without running start (PROTOCOL.md
// §1.6), which one leanshim process handles like any grouped container.
const taskAPIVersion = 3

// printAddress answers start: a protobuf BootstrapResult to containerd 2.3+
// (bootstrap mode), the plain address to the older ones, which cannot parse
// anything else (PROTOCOL.md §1.6).
func printAddress(stdout io.Writer, params startParams, address string) error {
	if !params.bootstrap {
		_, err := io.WriteString(stdout, address) // containerd 1.6 takes the plain address only
		return err
	}
	b, err := proto.Marshal(&bootstrap.BootstrapResult{Version: taskAPIVersion, Address: address, Protocol: "ttrpc"})
	if err != nil {
		return err
	}
	_, err = stdout.Write(b)
	return err
}

// spawnDaemon starts this binary with no action: the serving daemon. A
// duplicate of the listening socket l is its fd 3 (start's own copy is
// closed on return); its stdio is /dev/null; it gets its own process group
// so containerd's signals to start's group do not reach it.
func spawnDaemon(cfg config, bundle string, l *net.UnixListener, params startParams) error {
	lf, err := l.File() // a dup(2): the daemon makes its own listener of it
	if err != nil {
		return err
	}
	defer lf.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"-namespace", cfg.namespace, "-id", cfg.id, "-address", cfg.address}
	if cfg.publishBinary != "" {
		args = append(args, "-publish-binary", cfg.publishBinary)
	}
	if cfg.debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = bundle
	// One P from the first instruction: containerd passes GOMAXPROCS=2, and
	// every P the runtime starts with can leave an OS thread behind. The
	// last value of a key wins in os/exec.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.ExtraFiles = []*os.File{lf} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start shim daemon: %w", err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release() // the daemon outlives us; containerd talks to it over the socket
	opts, err := task.DecodeOptions(params.options)
	if err == nil && opts.ShimCgroup != "" {
		if err := joinCgroup(pid, opts.ShimCgroup); err != nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return err
		}
	}
	adjustOOMScore(pid)
	return nil
}

// adjustOOMScore gives the daemon containerd's oom_score_adj plus one, so the
// kernel picks a shim before its containerd. Best effort: some sandboxes
// refuse the write (ENVIRONMENT.md), and a shim must start there anyway.
func adjustOOMScore(pid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", os.Getppid()))
	if err != nil {
		return
	}
	score, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return
	}
	score = min(score+1, 1000)
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(strconv.Itoa(score)), 0)
}

// joinCgroup moves pid into the cgroup path (containerd's shim_cgroup) in
// every hierarchy that has it, as the cgroup package finds the hierarchies.
func joinCgroup(pid int, path string) error {
	h, err := cgroup.Detect()
	if err != nil {
		return fmt.Errorf("shim cgroup %q: %w", path, err)
	}
	return h.Join(pid, path)
}

// groupID picks the socket's group: containers annotated with the same group
// (io.containerd.runc.v2.group, or a CRI sandbox id) share one shim.
func groupID(bundle, id string) string {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return id
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(b, &spec) != nil {
		return id
	}
	for _, k := range []string{"io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"} {
		if g := spec.Annotations[k]; g != "" {
			return g
		}
	}
	return id
}
