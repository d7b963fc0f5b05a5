package pod

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/reaper"
)

// holderSpec is the namespaces a holder is made in.
type holderSpec struct {
	id       string // the sandbox id, the holder's argv[1] (for ps and Cleanup)
	netns    string // network namespace to join
	newNet   bool   // without netns: a network namespace of its own (else the shim's)
	newUTS   bool   // a UTS namespace of its own, named hostname
	hostname string
	newIPC   bool // an IPC namespace of its own
	newPID   bool // PID 1 of a new PID namespace
}

// startHolder starts the pod's holder as the shim's child and returns its
// exit channel (reaper.Start). IPC, UTS and network namespaces cannot be
// asked of os/exec, so they are entered by a thread that then forks the
// holder and ends (reaper.OnDisposableThread): the holder inherits the
// thread's namespaces, the shim's other threads never see them. A new PID
// namespace is a clone flag of the fork itself. The holder has no
// Pdeathsig: the thread that forks it ends at once, and a pod outlives a
// shim that dies, as a pause container does (the delete action ends it).
func startHolder(r *reaper.Reaper, s holderSpec) (*exec.Cmd, <-chan reaper.Exit, error) {
	prog, err := holderProgram()
	if err != nil {
		return nil, nil, err
	}
	defer prog.Close() // the holder keeps what it maps
	cmd := &exec.Cmd{
		Path: prog.path, Args: []string{HolderArg0, s.id}, Dir: "/",
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if s.newPID {
		cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWPID
	}
	var exits <-chan reaper.Exit
	r.OnDisposableThread(func() {
		if err = enterNamespaces(s); err != nil {
			return
		}
		exits, err = r.Start(cmd)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("start pod holder: %w", err)
	}
	return cmd, exits, nil
}

// enterNamespaces moves the calling thread, which must be disposable, into
// the pod's IPC, UTS and network namespaces.
func enterNamespaces(s holderSpec) error {
	flags := 0
	if s.newUTS {
		flags |= unix.CLONE_NEWUTS
	}
	if s.newIPC {
		flags |= unix.CLONE_NEWIPC
	}
	if s.newNet && s.netns == "" {
		flags |= unix.CLONE_NEWNET
	}
	if flags != 0 {
		if err := unix.Unshare(flags); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
	}
	if s.newUTS && s.hostname != "" {
		if err := unix.Sethostname([]byte(s.hostname)); err != nil {
			return fmt.Errorf("sethostname %q: %w", s.hostname, err)
		}
	}
	if s.netns != "" {
		fd, err := unix.Open(s.netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open network namespace: %w", &os.PathError{Op: "open", Path: s.netns, Err: err})
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("join network namespace %s: %w", s.netns, err)
		}
	}
	return nil
}

// program is an executable the holder is started from.
type program struct {
	path string
	f    *os.File // the memfd behind path, or nil
}

func (p program) Close() {
	if p.f != nil {
		_ = p.f.Close()
	}
}

// holderProgram returns holderCode as an executable memfd, or this binary
// where there is no holderCode. A memfd, not a file: the state directory
// (/run) is often mounted noexec. The child resolves /proc/self/fd/N to its
// inherited copy of the fd before exec closes it (close-on-exec).
func holderProgram() (program, error) {
	if holderCode == nil {
		return program{path: "/proc/self/exe"}, nil
	}
	// MFD_EXEC: kernels ≥ 6.3 with vm.memfd_noexec=1 default to noexec
	// memfds; older kernels refuse the flag.
	fd, err := unix.MemfdCreate(HolderArg0, unix.MFD_CLOEXEC|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(HolderArg0, unix.MFD_CLOEXEC)
	}
	if err != nil {
		return program{}, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), HolderArg0)
	if _, err := f.Write(holderELF(holderMachine, holderCode)); err != nil {
		_ = f.Close()
		return program{}, fmt.Errorf("write holder program: %w", err)
	}
	return program{path: fmt.Sprintf("/proc/self/fd/%d", fd), f: f}, nil
}
