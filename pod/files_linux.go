package pod

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The pod's files, in its bundle, named as the CRI plugin names them in a
// pause-container pod's sandbox directory.
const (
	hostnameFile = "hostname"
	hostsFile    = "hosts"
	resolvFile   = "resolv.conf"
	shmDir       = "shm"
	pidFile      = "pod.pid" // the holder's pid, for Cleanup; marks a pod's bundle
)

// shmSize is the size of the pod's /dev/shm tmpfs, the CRI plugin's.
const shmSize = 64 << 20

// DNS is the pod's resolver configuration (CRI DNSConfig).
type DNS struct {
	Servers, Searches, Options []string
}

// writeFiles writes the pod's hostname, hosts and resolv.conf into dir and
// mounts its /dev/shm tmpfs there, as the CRI plugin's podsandbox
// controller does for a pause-container pod (setupSandboxFiles): the
// hostname is the pod's, or the node's when it has none; hosts is the
// node's; resolv.conf is made from dns, or is the node's when dns is nil. A
// host-IPC pod has no /dev/shm of its own.
func writeFiles(dir string, cfg Config) (retErr error) {
	defer func() {
		if retErr != nil {
			_ = removeFiles(dir)
		}
	}()
	hostname := cfg.Hostname
	if hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		hostname = h
	}
	// The pid file first, empty until Start: it marks the bundle as a
	// pod's for Cleanup.
	if err := os.WriteFile(filepath.Join(dir, pidFile), nil, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, hostnameFile), []byte(hostname+"\n"), 0o644); err != nil {
		return err
	}
	if err := copyFile("/etc/hosts", filepath.Join(dir, hostsFile)); err != nil {
		return err
	}
	if cfg.DNS == nil {
		if err := copyFile("/etc/resolv.conf", filepath.Join(dir, resolvFile)); err != nil {
			return err
		}
	} else if err := os.WriteFile(filepath.Join(dir, resolvFile), []byte(resolvConf(*cfg.DNS)), 0o644); err != nil {
		return err
	}
	if cfg.HostIPC {
		return nil
	}
	shm := filepath.Join(dir, shmDir)
	if err := os.Mkdir(shm, 0o700); err != nil {
		return err
	}
	opts := fmt.Sprintf("mode=1777,size=%d", shmSize)
	if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOEXEC|unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount the pod's /dev/shm: %w", &os.PathError{Op: "mount", Path: shm, Err: err})
	}
	return nil
}

// resolvConf is the CRI plugin's resolv.conf of a DNSConfig.
func resolvConf(d DNS) string {
	var b strings.Builder
	if len(d.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(d.Searches, " "))
	}
	for _, s := range d.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(d.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(d.Options, " "))
	}
	return b.String()
}

// removeFiles unmounts the pod's /dev/shm and removes its files from dir.
// What is already gone is not an error.
func removeFiles(dir string) error {
	var errs []error
	shm := filepath.Join(dir, shmDir)
	if err := unix.Unmount(shm, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		errs = append(errs, &os.PathError{Op: "unmount", Path: shm, Err: err})
	}
	// The pid file last: while it is there, Cleanup will come back.
	for _, name := range []string{shmDir, hostnameFile, hostsFile, resolvFile, pidFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
